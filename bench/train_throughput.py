"""Training throughput of the StyleGAN2 trainer (images shown per second), one row per variant.

    python bench/train_throughput.py --seconds 15 --json $OUT/train_throughput.json
    python bench/train_throughput.py --variants fir render      # the resampling filter and the data alone
    python bench/train_throughput.py --profile demo-eager       # top CUDA kernels of a few iterations

Each variant runs in its own process (fresh compile caches and CUDA memory statistics): warm-up iterations (compile
time is reported separately), then whole R1 intervals for at least ``--seconds``, timed between two device
synchronisations. One iteration = one G step + one D step on ``batch`` images, with the lazy regularisers the config
enables. The ``render`` row times the real data alone. The ``fir`` rows time the FIR resampling filter of every
training shape (forward + input gradient, bf16, channels-last) as the networks run it on CUDA (separable, eager and
compiled) against the grouped convolution the CPU path uses ``[grouped]``. Checkpoint sizes are measured for the
``demo`` variant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from editor_core.networks import (DiscriminatorConfig, GeneratorConfig, make_resample_filter,  # noqa: E402
                                  separable_fir_filter)
from editor_core.training.gan import GanTrainer, TrainConfig, enable_cuda_fast_math  # noqa: E402


def _networks(channel_base: int, channel_max: int, w_dim: int, mapping_layers: int) -> dict:
    return {"generator": GeneratorConfig(resolution=128, z_dim=w_dim, w_dim=w_dim, mapping_layers=mapping_layers,
                                         channel_base=channel_base, channel_max=channel_max),
            "discriminator": DiscriminatorConfig(resolution=128, channel_base=channel_base, channel_max=channel_max)}


# name -> (TrainConfig overrides, compile)
VARIANTS = {
    "demo": ({}, True),
    "demo-eager": ({}, False),
    "demo-b32": ({"batch_size": 32}, True),
    # Larger batches: at 128² a batch of 64 leaves the GPU launch-bound (docs/demo-model.md, Throughput).
    "demo-b128": ({"batch_size": 128}, True),
    "demo-b256": ({"batch_size": 256}, True),
    "cb8192": (_networks(8192, 256, 256, 4), True),  # the first (interim) demo run's networks
    # The reference point: NVlabs networks at 128², channel_max 256 (G 10 M, D 7 M), no regularisers.
    "nvlabs-size-noreg": ({**_networks(16384, 256, 512, 8), "r1_gamma": 0.0, "style_mixing_prob": 0.0}, True),
}
SPECIAL = ("render", "fir")


def run_variant(name: str, seconds: float, warmup: int, measure_checkpoint: bool) -> dict:
    overrides, compile = VARIANTS[name]
    config = dataclasses.replace(TrainConfig(), **overrides)
    trainer = GanTrainer(config, device="cuda", compile=compile)
    start = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    torch.cuda.reset_peak_memory_stats()
    steps = 0
    start = time.perf_counter()
    while True:
        for _ in range(config.r1_interval):
            trainer.train_step()
        steps += config.r1_interval
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    losses = trainer.flush_log_row()
    row = {"variant": name, "compile": compile, "batch": config.batch_size,
           "G_params_M": sum(p.numel() for p in trainer.G.parameters()) / 1e6,
           "D_params_M": sum(p.numel() for p in trainer.D.parameters()) / 1e6,
           "images_per_s": steps * config.batch_size / elapsed, "steps": steps, "seconds": elapsed,
           "warmup_s": warmup_s, "peak_mem_GiB": torch.cuda.max_memory_allocated() / 2 ** 30,
           "last_losses": {k: losses[k] for k in ("loss_G", "loss_D", "r1_penalty")}}
    if measure_checkpoint:
        with tempfile.TemporaryDirectory() as tmp:
            for compact in (False, True):
                trainer.compact_checkpoints = compact
                path = Path(tmp) / f"ckpt_{compact}.pt"
                trainer.save(path)
                row[f"checkpoint_{'compact' if compact else 'exact'}_MiB"] = path.stat().st_size / 2 ** 20
    return row


def profile_variant(name: str, warmup: int, iterations: int = 8) -> None:
    """Print the CUDA kernels that take the most time over ``iterations`` training iterations."""
    overrides, compile = VARIANTS[name]
    trainer = GanTrainer(dataclasses.replace(TrainConfig(), **overrides), device="cuda", compile=compile)
    for _ in range(warmup):
        trainer.train_step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iterations):
            trainer.train_step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=90))


def run_render(seconds: float) -> list[dict]:
    """Real batches alone (``reals_for_step``: chunked rendering on the GPU): the data side of the loop."""
    trainer = GanTrainer(TrainConfig(), device="cuda", compile=False)
    batch, chunk = trainer.config.batch_size, trainer.config.render_batches
    start = time.perf_counter()
    trainer.reals_for_step(0)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    step = chunk
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(chunk):
            trainer.reals_for_step(step)
            step += 1
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return [{"variant": "render", "compile": False, "batch": batch, "images_per_s": (step - chunk) * batch / elapsed,
             "warmup_s": warmup_s, "peak_mem_GiB": torch.cuda.max_memory_allocated() / 2 ** 30}]


def grouped_fir_filter(x: torch.Tensor, f: torch.Tensor, padding: int, stride: int, gain: float) -> torch.Tensor:
    """The grouped-convolution FIR (the networks' CPU path, NVlabs' plain-torch path), for comparison."""
    weight = (f * gain).to(x.dtype)[None, None].expand(x.shape[1], 1, -1, -1)
    return F.conv2d(x, weight, padding=padding, stride=stride, groups=x.shape[1])


def fir_training_shapes(config: TrainConfig) -> list[tuple[tuple[int, ...], int, int, float]]:
    """``(x shape, padding, stride, gain)`` of every FIR call of one G and one D forward pass."""
    G, D, batch = config.generator, config.discriminator, config.batch_size
    shapes = []
    for res in G.block_resolutions[1:]:  # up-sampling modconv: stride-2 transposed conv output, then the filter
        shapes.append(((batch, G.channels_at(res), res + 1, res + 1), 1, 1, 4.0))
    for res in range(D.resolution.bit_length() - 1, 2, -1):  # D blocks 128 … 8: conv1 low-pass, skip decimation
        r = 2 ** res
        shapes.append(((batch, D.channels_at(r), r, r), 2, 1, 1.0))
        shapes.append(((batch, D.channels_at(r), r, r), 1, 2, 1.0))
    return shapes


def run_fir(seconds: float) -> list[dict]:
    """Forward + input gradient of every training-shape FIR call, per implementation, in ms per pass set."""
    f = make_resample_filter().cuda()
    shapes = fir_training_shapes(TrainConfig())
    inputs = [(torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
               .requires_grad_(True), p, s, g) for shape, p, s, g in shapes]
    implementations = {"fir [grouped]": grouped_fir_filter, "fir separable (eager)": separable_fir_filter,
                       "fir separable (compiled)": torch.compile(separable_fir_filter)}
    rows = []
    for name, fir in implementations.items():
        def one_pass() -> None:
            for x, p, s, g in inputs:
                fir(x, f, p, s, g).float().square().sum().backward()
        start = time.perf_counter()
        one_pass()
        torch.cuda.synchronize()
        warmup_s = time.perf_counter() - start
        times = []
        begin = time.perf_counter()
        while time.perf_counter() - begin < seconds / len(implementations) or len(times) < 5:
            start_event, end_event = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start_event.record()
            one_pass()
            end_event.record()
            torch.cuda.synchronize()
            times.append(start_event.elapsed_time(end_event))
        times.sort()
        rows.append({"variant": name, "compile": "compiled" in name, "batch": TrainConfig().batch_size,
                     "ms_per_pass_set": times[len(times) // 2], "calls": len(inputs), "warmup_s": warmup_s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS) + list(SPECIAL),
                        choices=list(VARIANTS) + list(SPECIAL))
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per variant (after warm-up)")
    parser.add_argument("--warmup", type=int, default=40, help="warm-up iterations (compilation happens here)")
    parser.add_argument("--variant-timeout", type=float, default=300.0, help="seconds before a variant is skipped")
    parser.add_argument("--profile", choices=list(VARIANTS), help="profile this variant instead of timing")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one variant and print its rows as JSON
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark measures GPU training throughput")
    enable_cuda_fast_math()
    if args.profile:
        profile_variant(args.profile, args.warmup)
        return
    if args.worker:
        if args.worker == "render":
            rows = run_render(args.seconds)
        elif args.worker == "fir":
            rows = run_fir(args.seconds)
        else:
            rows = [run_variant(args.worker, args.seconds, args.warmup, measure_checkpoint=args.worker == "demo")]
        print("ROW " + json.dumps(rows))
        return

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}", flush=True)
    rows = []
    for name in args.variants:
        command = [sys.executable, __file__, "--worker", name, "--seconds", str(args.seconds),
                   "--warmup", str(args.warmup)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=args.variant_timeout)
        except subprocess.TimeoutExpired:
            print(f"{name}: did not finish within {args.variant_timeout} s", flush=True)
            continue
        found = [line[4:] for line in result.stdout.splitlines() if line.startswith("ROW ")]
        if result.returncode != 0 or not found:
            print(f"{name}: FAILED (exit {result.returncode})\n{result.stderr[-3000:]}", flush=True)
            continue
        for row in json.loads(found[-1]):
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'variant':<26} {'compile':>7} {'batch':>5} {'img/s':>8} {'ms':>8} {'warm-up s':>9}")
    for row in rows:
        print(f"{row['variant']:<26} {str(row['compile']):>7} {row['batch']:>5} "
              f"{row.get('images_per_s', float('nan')):>8.0f} {row.get('ms_per_pass_set', float('nan')):>8.2f} "
              f"{row['warmup_s']:>9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
