"""Which of several demo generators is worth a bundle rebuild? Cheap figures that need no encoder, on CPU or GPU.

A rebuild (encoder, annotations, segmentation branch, vectors, evaluation) costs about 12 minutes of device time,
and the held-out mIoU it ends in is bounded by how exactly the generator reproduces renders (docs/demo-model.md,
*What bounds the mIoU*). So compare candidates first, each the same way:

* **inversion without an encoder**: ``embed_image`` from ``w_avg`` on the same held-out renders (the ``evaluate``
  stage's seed), the same steps and loss; PSNR and LPIPS of the best step, mean ± std. An encoder would start every
  generator closer, but it has to be trained per generator; from ``w_avg`` the comparison is fair and free.
* **Fréchet distance** of ψ = 1 samples to renders in the features of one render-parameter regressor (the shipped
  one by default, so figures are comparable across generators), with the render-vs-render floor; latents and
  renders are drawn as the ``evaluate`` stage draws them, so at its ``--fd-samples`` the figures are its own.

Prints one JSON object and writes it to ``--json``:

    .venv/bin/python bench/generator_compare.py demo/generator.safetensors new.safetensors --json scratch/cmp.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import emit_report  # noqa: E402 (needs the path above when run as a script)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("generators", nargs="+", type=Path, help="generator files (project format) to compare")
    parser.add_argument("--renders", type=int, default=8, help="held-out renders to invert (default 8)")
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps per inversion (default 300)")
    parser.add_argument("--lpips-resolution", type=int, default=128,
                        help="LPIPS input size during the inversion (default 128: 4x cheaper than the tool's 256)")
    parser.add_argument("--fd-samples", type=int, default=1000, help="images a side for the Fréchet distance")
    parser.add_argument("--regressor", type=Path, default=Path("demo/param_regressor.safetensors"),
                        help="render-parameter regressor whose features the Fréchet distance uses")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    for name in ("renders", "steps", "lpips_resolution"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.fd_samples < 2:
        parser.error("--fd-samples must be at least 2 (a covariance needs two)")
    for path in [*args.generators, args.regressor]:
        if not path.is_file():
            parser.error(f"{path} is not a file")
    return args


def compare(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from editor_core.checkpoints import load_generator
    from editor_core.inversion import EmbedConfig, embed_image
    from editor_core.metrics import mean_and_std
    from editor_core.training.demo_bundle.renders import (RENDER_SEEDS, SAMPLE_SEEDS, render_faces, render_features,
                                                          sample_features)
    from editor_core.training.param_regressor import frechet_distance, load_param_regressor

    device = torch.device(args.device)
    regressor = load_param_regressor(args.regressor, device)
    config = EmbedConfig(steps=args.steps, lpips_resolution=args.lpips_resolution)
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "renders": args.renders, "steps": args.steps,
                              "lpips_resolution": args.lpips_resolution, "fd_samples": args.fd_samples,
                              "regressor": str(args.regressor), "generators": {}, "renders_vs_renders": {}}
    render_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def renders_at(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(held-out renders to invert, render features for the Fréchet distance) at ``size``, as ``evaluate``
        draws them."""
        if size not in render_cache:
            features = render_features(regressor, args.fd_samples, RENDER_SEEDS["fd_renders"], size, device)
            floor = render_features(regressor, args.fd_samples, RENDER_SEEDS["fd_renders_floor"], size, device)
            report["renders_vs_renders"][size] = frechet_distance(floor, features)
            render_cache[size] = render_faces(args.renders, RENDER_SEEDS["evaluate"], size, device)[1], features
        return render_cache[size]

    for path in args.generators:
        clock = time.monotonic()
        generator = load_generator(path, device).eval().requires_grad_(False)
        targets, renders = renders_at(generator.config.resolution)
        result = embed_image(generator, None, targets, config)
        samples = sample_features(generator, regressor, args.fd_samples, SAMPLE_SEEDS["fd_samples"], 1.0)
        report["generators"][str(path)] = {
            "inversion_psnr": mean_and_std(result.psnr), "inversion_lpips": mean_and_std(result.lpips),
            "fd_samples_vs_renders": frechet_distance(samples, renders),
            "seconds": round(time.monotonic() - clock, 1)}
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = compare(args)
    emit_report(report, args.json)


if __name__ == "__main__":
    main()
