"""CPU benchmark of the engine at 128² (the demo generator's size), as a 2-core laptop or CI machine runs it.

    .venv/bin/python bench/cpu.py [--json bench/results/cpu.json] [--items "G forward" ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.suite import Suite, SuiteConfig, environment, header, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--items", nargs="*", default=[], help="only items whose name starts with one of these")
    parser.add_argument("--classes", type=int, default=18, help="segmentation classes (the demo domain has 18)")
    args = parser.parse_args()
    device = torch.device("cpu")
    config = SuiteConfig(resolution=128, seg_resolution=128, num_classes=args.classes, channel_base=4096,
                         channel_max=256, w_dim=256, mapping_layers=4, warmup=1, repeats=5, long_repeats=1,
                         items=tuple(args.items))
    print(environment(device))
    print(header())
    results = Suite(config, device).run()
    if args.json:
        write_json(args.json, [{"environment": environment(device), "config": config, "results": results}])


if __name__ == "__main__":
    main()
