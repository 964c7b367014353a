"""How long a live-apply pass spends turning its images into JPEG bytes, and what encoding on the GPU would change.

A pass of several users' slider positions encodes each 1024² result in turn with Pillow (``images.image_jpeg``);
on the studio's H100 run a pass of four or five positions took 61 ms compiled, about 7.5 ms of it per JPEG. This
times, for ``--batch`` images on ``--device``: Pillow one after another (today's path, 8-bit conversion on the
image's device included), Pillow in threads, and ``torchvision.io.encode_jpeg`` on the image's device (nvJPEG on a
GPU, libjpeg on a CPU) for the whole batch at once. Median of ``--repeats`` after one warm-up, in ms.
(torchvision 0.29 deprecates its image encoders in favour of TorchCodec's: a product path would go there.)

    python3 bench/jpeg_encode.py --device cuda --resolution 1024 --batch 8
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from editor_core.images import image_jpeg  # noqa: E402

QUALITY = 92  # image_jpeg's default, what the sliders send


def render_like(batch: int, resolution: int, device: torch.device) -> torch.Tensor:
    """``[batch, 3, R, R]`` in ``[-1, 1]``: smooth colour fields with fine grain, about as hard to compress as a GAN
    render (a flat image would flatter every encoder)."""
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.randn(batch, 3, 12, 12, generator=g), size=resolution, mode="bicubic",
                           align_corners=False)
    grain = 0.08 * torch.randn(batch, 3, resolution, resolution, generator=g)
    return (0.6 * smooth + grain).clamp(-1, 1).to(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.resolution < 8 or args.batch < 1 or args.repeats < 1:
        parser.error("--resolution must be ≥ 8, --batch and --repeats ≥ 1")
    device = torch.device(args.device)
    from torchvision.io import encode_jpeg

    images = render_like(args.batch, args.resolution, device)
    pool = ThreadPoolExecutor(max_workers=args.batch)

    def pillow_in_turn():
        return [image_jpeg(image) for image in images]

    def pillow_threads():
        return list(pool.map(image_jpeg, images))

    def torchvision_batch():
        pixels = images.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
        return [encoded.cpu().numpy().tobytes() for encoded in encode_jpeg(list(pixels), quality=QUALITY)]

    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "resolution": args.resolution, "batch": args.batch,
              "bytes_per_image": {"pillow": len(pillow_in_turn()[0]), "torchvision": len(torchvision_batch()[0])},
              "ms": {name: timed(fn, device, args.repeats) for name, fn in
                     (("pillow, one after another", pillow_in_turn), ("pillow, threads", pillow_threads),
                      ("torchvision.io.encode_jpeg, batch", torchvision_batch))}}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
