"""GPU benchmark of the engine: config-f networks with random weights, batch 1, 34 classes, 10-member ensemble.

    python bench/gpu.py --resolutions 256 512 1024 --json $OUT/gpu.json
    python bench/gpu.py --resolutions 512 --compile none default reduce-overhead --items "mode"

Segmentation runs at min(resolution, 512)² as in the paper's face model. Each item is timed with CUDA events after
warm-up; ``[naive]`` rows are the DatasetGAN/EditGAN-release computation of the same thing, timed in the same run.
``--compile`` times the editing items once per ``EditingModels.compile_mode`` (``none``: eager), each beside the
others in the same run; the "first ms" column is the first call, where compilation and CUDA-graph recording happen.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.suite import Suite, SuiteConfig, environment, header, write_json  # noqa: E402
from editor_core.compiled import COMPILE_MODES  # noqa: E402


# The encoder size the embedding module recommends for 512²/1024² generators (pSp-like, 81 M parameters).
PSP_SIZED_ENCODER = dict(channel_base=16384, channel_max=512, pyramid_channels=256, head_channels=256,
                         blocks_per_stage=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--items", nargs="*", default=[], help="only items whose name starts with one of these")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="EditingModels.precision of the editing items (autocast)")
    parser.add_argument("--compile", nargs="+", default=["none"], choices=("none",) + COMPILE_MODES,
                        help="EditingModels.compile_mode of the editing items; several: each in turn (default: none)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN time its convolution algorithms per shape (torch.backends.cudnn.benchmark)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("no CUDA device: bench/gpu.py measures the GPU path (use bench/cpu.py on a CPU)")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    sections = []
    print(environment(device))
    for resolution in args.resolutions:
        for compile_mode in args.compile:
            config = SuiteConfig(resolution=resolution, seg_resolution=min(resolution, 512), repeats=args.repeats,
                                 items=tuple(args.items), precision=args.precision,
                                 compile_mode=None if compile_mode == "none" else compile_mode,
                                 extra={"encoder": PSP_SIZED_ENCODER})
            print(f"\n== {resolution}² generator, segmentation at {config.seg_resolution}², {args.precision}, "
                  f"compile: {compile_mode}, cudnn.benchmark: {args.cudnn_benchmark} ==")
            print(header())
            results = Suite(config, device).run()
            sections.append({"environment": environment(device), "config": config, "results": results,
                             "cudnn_benchmark": args.cudnn_benchmark})
            torch.cuda.empty_cache()
    if args.json:
        write_json(args.json, sections)


if __name__ == "__main__":
    main()
