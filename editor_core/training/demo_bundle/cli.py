"""The demo pipeline's command line: ``python -m editor_core.training.demo_bundle STAGE|all [options]``."""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from editor_core.bundle import BundleLayout
from editor_core.checkpoints import generator_fingerprint, load_generator
from editor_core.training import demo_bundle
from editor_core.training.demo_bundle.stages import STAGES, DemoPipeline, PipelineConfig


def _install_generator(generator: Path, out: Path) -> None:
    """Make ``out/generator.safetensors`` the given generator (a bundle folder holds its generator)."""
    target = BundleLayout(out).generator
    if generator.resolve() == target.resolve():
        return
    if target.exists():
        ours, theirs = (generator_fingerprint(load_generator(p)) for p in (generator, target))
        if ours != theirs:
            raise ValueError(f"{out} already holds another generator ({theirs}, not {ours}); use a new --out folder")
        return
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(generator, target)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m editor_core.training.demo_bundle",
                                     description=demo_bundle.__doc__.splitlines()[0])
    parser.add_argument("stage", choices=(*STAGES, "all"))
    parser.add_argument("--out", type=Path, default=Path("demo"), help="bundle folder (default: demo)")
    parser.add_argument("--generator", type=Path, default=None,
                        help="generator to build on (default: <out>/generator.safetensors; copied there if absent)")
    parser.add_argument("--work", type=Path, default=Path("scratch/demo-work"),
                        help="scratch folder for training state and the markdown report")
    parser.add_argument("--figures", type=Path, default=None,
                        help="folder for the PNG figures (default: <work>/figures)")
    parser.add_argument("--encoder-init", type=Path, default=None,
                        help="start the encoder stage from this encoder (e.g. one trained for an earlier generator)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--force", action="store_true", help="rebuild outputs that exist")
    options = {"encoder_minutes": float, "encoder_steps": int, "encoder_batch": int, "regressor_minutes": float,
               "regressor_steps": int, "annotate_steps": int, "seg_steps": int, "seg_ensemble": int,
               "vector_sources": int, "vector_steps": int, "eval_renders": int, "transfer_renders": int,
               "eval_embed_steps": int, "refine_steps": int, "fd_samples": int, "embed_batch": int,
               "forward_batch": int, "lpips_net": str, "vector_roi": str, "calibration_faces": int,
               "calibration_embed_steps": int}
    for name, kind in options.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                            help=f"(default {getattr(PipelineConfig, name)})")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {name: value for name, value in vars(args).items()
                 if name in {f.name for f in dataclasses.fields(PipelineConfig)} and value is not None}
    try:
        config = PipelineConfig(**overrides)
    except ValueError as bad:
        parser.error(str(bad))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    _install_generator(args.generator or BundleLayout(args.out).generator, args.out)
    pipeline = DemoPipeline(args.out, args.work, config, device, args.figures,
                            log=lambda line: print(line, flush=True), encoder_init=args.encoder_init)
    for stage in (STAGES if args.stage == "all" else (args.stage,)):
        began = time.monotonic()
        getattr(pipeline, f"{stage}_stage")(force=args.force)
        print(f"== {stage} done in {time.monotonic() - began:.0f} s", flush=True)
