"""Peak memory of segmentation-branch training (issue 3: < 1 GB at 128², < 4 GB at 512² config-f).

Each configuration runs in a fresh process so its peak resident set is its own; the process trains a 10-member
ensemble (256→128→32) on 16 annotated samples of a random-weight generator for ``--steps`` steps (memory does not
grow with steps: features are cached or recomputed per step, pixels are subsampled). On CUDA it also reports
``torch.cuda.max_memory_allocated``.

    .venv/bin/python bench/segmentation_memory.py --steps 20
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = {
    "128² demo-sized G (channel_base 8192, max 256), 18 classes": dict(resolution=128, channel_base=8192,
                                                                        channel_max=256, w_dim=256, classes=18),
    "512² config-f G, 34 classes": dict(resolution=512, channel_base=32768, channel_max=512, w_dim=512, classes=34),
}


def measure(resolution: int, channel_base: int, channel_max: int, w_dim: int, classes: int, steps: int,
            device: str) -> dict:
    import torch

    from editor_core.networks import Generator, GeneratorConfig
    from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, SegTrainConfig, train_segmentation

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=resolution, z_dim=w_dim, w_dim=w_dim, channel_base=channel_base,
                                  channel_max=channel_max)).to(device).eval().requires_grad_(False)
    with torch.no_grad():
        ws = G.mapping(torch.randn(16, w_dim, device=device), truncation_psi=0.7)
    masks = torch.randint(0, classes, (16, resolution, resolution), device=device)
    ensemble = SegmentationEnsemble(SegmentationConfig.from_generator(G, classes, resolution))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    start = time.perf_counter()
    result = train_segmentation(G, ensemble, ws, masks, SegTrainConfig(max_steps=steps, patience=None, seed=0,
                                                                      device=device))
    report = {"steps": result.steps, "seconds": round(time.perf_counter() - start, 1),
              "cached_features": result.cached_features,
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10),
              "rss_before_training_mib": round(baseline)}
    if device.startswith("cuda"):
        report["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", help="run one configuration (by its name) in this process")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(**CONFIGS[args.only], steps=args.steps, device=args.device)))
        return
    for name in CONFIGS:
        output = subprocess.run([sys.executable, __file__, "--only", name, "--steps", str(args.steps),
                                 "--device", args.device], capture_output=True, text=True, check=True)
        print(f"{name}: {output.stdout.strip()}")


if __name__ == "__main__":
    main()
