"""How exactly must an inversion place each part for the demo's held-out mIoU to reach a given level?

The ``evaluate`` stage compares the segmentation of an inverted render with the render's true mask. Even a perfect
segmenter of the inverted image scores below 1 when the inversion draws a part slightly off. This study takes the
renderer's own masks of ``evaluate``'s held-out faces and shifts each by a fixed sub-pixel distance in a random
axis direction (rendered ``--supersample`` times larger, shifted by whole pixels there, sampled back at the
evaluation resolution), then scores the shifted masks against the unshifted ones exactly like ``evaluate`` (per-class
IoU pooled over the faces, mean over classes). A uniform shift is a simple model of inversion error, not a measure
of it; it shows how fine the tolerance of the metric is at this resolution. Renderer only, no networks; CPU.

    .venv/bin/python bench/miou_shift_ceiling.py --json scratch/miou_shift_ceiling.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import emit_report  # noqa: E402 (needs the path above when run as a script)

AXIS_DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=200, help="held-out faces (evaluate's seed; default 200)")
    parser.add_argument("--size", type=int, default=128, help="evaluation resolution (default 128, the demo's)")
    parser.add_argument("--supersample", type=int, default=4,
                        help="render this many times larger; shifts are whole pixels there (default 4: 0.25 px steps)")
    parser.add_argument("--shifts", type=int, nargs="+", default=[0, 1, 2, 4, 8],
                        help="shift distances in supersampled pixels (default 0 1 2 4 8)")
    parser.add_argument("--chunk", type=int, default=25, help="faces rendered at a time (memory)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    for name in ("renders", "size", "supersample", "chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if any(shift < 0 for shift in args.shifts):
        parser.error("--shifts must be >= 0")
    return args


def shift_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from editor_core.domains import toonface
    from editor_core.metrics import class_iou
    from editor_core.training.demo_bundle.renders import RENDER_SEEDS

    params = toonface.sample_params(args.renders, RENDER_SEEDS["evaluate"])
    large = torch.cat([toonface.render({name: value[start:start + args.chunk] for name, value in params.items()},
                                       args.size * args.supersample)[1]
                       for start in range(0, args.renders, args.chunk)])
    centre = args.supersample // 2  # sample each low-resolution pixel at its centre

    def sampled(masks: torch.Tensor) -> torch.Tensor:
        return masks[:, centre::args.supersample, centre::args.supersample]

    truth = sampled(large)
    schema = toonface.toonface_schema()
    directions = torch.randint(len(AXIS_DIRECTIONS), (args.renders,), generator=torch.Generator().manual_seed(0))
    report: dict[str, Any] = {"renders": args.renders, "size": args.size, "supersample": args.supersample,
                              "render_seed": RENDER_SEEDS["evaluate"], "shifts": []}
    for shift in args.shifts:
        shifted = torch.stack([_shifted(mask, AXIS_DIRECTIONS[d], shift)
                               for mask, d in zip(large, directions.tolist())])
        iou = class_iou(sampled(shifted), truth, schema.num_classes)
        report["shifts"].append({
            "pixels": shift / args.supersample, "miou": round(float(iou.nanmean()), 4),
            "per_class": {name: round(value, 4) for name, value in zip(schema.class_names, iou.tolist())}})
    return report


def _shifted(mask: Any, direction: tuple[int, int], distance: int) -> Any:
    """``mask [H, W]`` moved ``distance`` pixels along ``direction`` (rows, columns); the edge rows or columns
    repeat into the space it leaves (no wrap-around: clothing must not reappear above the head)."""
    import torch

    rows = (torch.arange(mask.shape[0]) - direction[0] * distance).clamp(0, mask.shape[0] - 1)
    cols = (torch.arange(mask.shape[1]) - direction[1] * distance).clamp(0, mask.shape[1] - 1)
    return mask[rows][:, cols]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = shift_ceiling(args)
    emit_report(report, args.json)


if __name__ == "__main__":
    main()
