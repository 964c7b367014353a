"""CPU smoke tests of the StyleGAN2 trainer on a tiny 32² config (a few iterations each)."""
from __future__ import annotations

import csv
import dataclasses
import lzma
import math
import os
import re
import subprocess
import shutil
import sys
from pathlib import Path

import pytest
import torch

from editor_core.checkpoints import load_generator
from editor_core.networks import (DiscriminatorConfig, GeneratorConfig, fir_filter, make_resample_filter,
                                  separable_fir_filter)
from editor_core.training.gan import GanTrainer, TrainConfig, ema_beta, export_generator, main
from tests.engine.conftest import run_device_script

BATCH = 4


def tiny_config(**overrides) -> TrainConfig:
    config = TrainConfig(
        generator=GeneratorConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512,
                                  channel_max=32),
        discriminator=DiscriminatorConfig(resolution=32, channel_base=512, channel_max=32),
        batch_size=BATCH, r1_interval=2, log_every=1, snapshot_kimg=1000.0, grid_columns=4, grid_rows=2)
    return dataclasses.replace(config, **overrides)


def kimg(steps: int) -> float:
    return steps * BATCH / 1000


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    """Equal rows; NaN (no regulariser in that window) equals NaN."""
    assert len(a) == len(b)
    for row_a, row_b in zip(without_timing(a), without_timing(b)):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            assert row_a[key] == row_b[key] or (math.isnan(row_a[key]) and math.isnan(row_b[key])), (key, row_a, row_b)


def test_resume_continues_bit_for_bit(tmp_path):
    straight = GanTrainer(tiny_config())
    straight.train(tmp_path / "straight", total_kimg=kimg(4))

    first = GanTrainer(tiny_config())
    first.train(tmp_path / "split", total_kimg=kimg(2))
    assert first.step == 2
    resumed = GanTrainer.load(tmp_path / "split" / "latest.pt")
    assert (resumed.step, resumed.images_shown) == (2, 2 * BATCH)
    resumed.train(tmp_path / "split", total_kimg=kimg(4))

    assert resumed.step == straight.step == 4
    assert [row["step"] for row in resumed.log] == [1, 2, 3, 4]
    assert_same_rows(resumed.log, straight.log)
    for name, tensor in straight.G_ema.state_dict().items():
        assert torch.equal(tensor, resumed.G_ema.state_dict()[name]), name
    with open(tmp_path / "split" / "log.csv") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [1, 2, 3, 4]
    assert (tmp_path / "split" / "reals.png").exists()
    assert (tmp_path / "split" / "grid_000000kimg.png").exists()


def test_r1_and_path_length_run_on_their_intervals_and_ema_trails_g(tmp_path):
    trainer = GanTrainer(tiny_config(r1_interval=2, pl_weight=2.0, pl_interval=3))
    trainer.train(tmp_path, total_kimg=kimg(6))
    # Row k closes iteration k - 1 (0-based); a regulariser runs on iterations that are multiples of its interval.
    r1_rows = [row["step"] for row in trainer.log if not math.isnan(row["r1_penalty"])]
    pl_rows = [row["step"] for row in trainer.log if not math.isnan(row["pl_penalty"])]
    assert r1_rows == [1, 3, 5]
    assert pl_rows == [1, 4]
    assert all(row["r1_penalty"] >= 0 and row["pl_penalty"] != 0 for row in trainer.log if row["step"] == 1)
    assert trainer.pl_mean.item() > 0
    assert all(math.isfinite(row["loss_G"]) and math.isfinite(row["loss_D"]) for row in trainer.log)

    g_params = dict(trainer.G.named_parameters())
    differing = [name for name, p in trainer.G_ema.named_parameters() if not torch.equal(p, g_params[name])]
    assert len(differing) > len(g_params) // 2
    assert torch.equal(trainer.G_ema.mapping.w_avg, trainer.G.mapping.w_avg)
    assert trainer.G.mapping.w_avg.abs().sum() > 0  # tracked from the D step's draws


def test_without_r1_no_penalty_is_logged(tmp_path):
    trainer = GanTrainer(tiny_config(r1_gamma=0.0))
    trainer.train(tmp_path, total_kimg=kimg(2))
    assert all(math.isnan(row["r1_penalty"]) for row in trainer.log)


def test_compact_checkpoint_is_smaller_and_resumes(tmp_path):
    exact = GanTrainer(tiny_config())
    exact.train(tmp_path / "exact", total_kimg=kimg(2))
    compact = GanTrainer(tiny_config(), compact_checkpoints=True)
    compact.train(tmp_path / "compact", total_kimg=kimg(2))
    exact_bytes = (tmp_path / "exact" / "latest.pt").stat().st_size
    compact_bytes = (tmp_path / "compact" / "latest.pt").stat().st_size
    assert compact_bytes < 0.6 * exact_bytes

    resumed = GanTrainer.load(tmp_path / "compact" / "latest.pt")
    for name, p in compact.G.named_parameters():
        torch.testing.assert_close(dict(resumed.G.named_parameters())[name], p, rtol=1e-3, atol=1e-3)
    resumed.train(tmp_path / "compact", total_kimg=kimg(3))
    assert [row["step"] for row in resumed.log] == [1, 2, 3]


def test_ema_beta_ramps_up_and_has_the_configured_half_life():
    assert ema_beta(64, images_shown=0, ema_kimg=10, ema_rampup=0.05) == 0.0  # G_ema starts as a copy of G
    beta = ema_beta(64, images_shown=10_000_000, ema_kimg=10, ema_rampup=0.05)
    assert beta ** (10_000 / 64) == pytest.approx(0.5)
    ramped = ema_beta(64, images_shown=20_000, ema_kimg=10, ema_rampup=0.05)
    assert ramped ** (1_000 / 64) == pytest.approx(0.5)  # half-life capped at 5 % of the 20 k images shown


def test_export_writes_the_ema_generator_in_fp16(tmp_path):
    trainer = GanTrainer(tiny_config())
    trainer.train(tmp_path, total_kimg=kimg(1))
    export_generator(tmp_path / "latest.pt", tmp_path / "generator.safetensors")
    G = load_generator(tmp_path / "generator.safetensors")
    z = torch.randn(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(G(z, noise_mode="const"), trainer.G_ema(z, noise_mode="const"),
                                   rtol=0, atol=2e-2)


def test_config_errors_are_explicit():
    with pytest.raises(ValueError, match="resolutions differ"):
        tiny_config(discriminator=DiscriminatorConfig(resolution=64, channel_base=512, channel_max=32))
    with pytest.raises(ValueError, match="r1_interval"):
        tiny_config(r1_interval=0)
    with pytest.raises(ValueError, match="style_mixing_prob"):
        tiny_config(style_mixing_prob=1.5)


def test_load_rejects_other_files(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a GAN training checkpoint"):
        GanTrainer.load(tmp_path / "other.pt")


def test_cli_refuses_new_hyper_parameters_on_resume(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path), "--kimg", "1", "--resume", str(tmp_path / "latest.pt"),
              "--batch", "32"])
    assert "--resume continues the checkpoint's own training config" in capsys.readouterr().err


@pytest.mark.parametrize("size, padding, stride, gain", [(17, 1, 1, 4.0), (16, 2, 1, 1.0), (16, 1, 2, 1.0)])
def test_separable_fir_of_the_cuda_training_path_equals_the_grouped_convolution(size, padding, stride, gain):
    # The three uses: the up-sampling modconv's filter, the down-sampling conv's low-pass, 2x decimation.
    f = make_resample_filter().double()
    x = torch.randn(2, 5, size, size, dtype=torch.float64)
    expected = fir_filter(x, f, padding, stride, gain)  # the CPU path: grouped convolution
    torch.testing.assert_close(separable_fir_filter(x, f, padding, stride, gain), expected, rtol=0, atol=1e-12)


def test_training_continues_from_an_exported_generator_with_d_warmup(tmp_path):
    first = GanTrainer(tiny_config())
    first.train(tmp_path / "first", total_kimg=kimg(3))
    export_generator(tmp_path / "first" / "latest.pt", tmp_path / "G.safetensors")
    exported = load_generator(tmp_path / "G.safetensors")

    warmup_steps = 2
    trainer = GanTrainer.from_generator(tmp_path / "G.safetensors", tiny_config(), d_warmup_kimg=kimg(warmup_steps))
    assert (trainer.images_shown, trainer.step) == (3 * BATCH, 3)
    for name, tensor in exported.state_dict().items():
        assert torch.equal(trainer.G.state_dict()[name], tensor), name
    trainer.train(tmp_path / "second", total_kimg=kimg(3 + warmup_steps))
    for name, tensor in exported.named_parameters():  # D warm-up: G's weights have not moved (w_avg is tracked)
        assert torch.equal(dict(trainer.G.named_parameters())[name], tensor), name
    assert all(math.isnan(row["loss_G"]) and not math.isnan(row["loss_D"]) for row in trainer.log)

    trainer.train(tmp_path / "second", total_kimg=kimg(3 + warmup_steps + 1))
    assert not math.isnan(trainer.log[-1]["loss_G"])
    assert any(not torch.equal(tensor, dict(exported.named_parameters())[name])
               for name, tensor in trainer.G.named_parameters())
    resumed = GanTrainer.load(tmp_path / "second" / "latest.pt")
    assert resumed.config.g_frozen_until_kimg == pytest.approx(kimg(3 + warmup_steps))


COMPILE_ONCE = """
import sys, torch
from torch._dynamo.utils import counters
from editor_core.training.gan import load_compile_cache, save_compile_cache
mode, path = sys.argv[1:]
if mode == "load":
    print("loaded", load_compile_cache(path))
layer = torch.compile(torch.nn.Linear(8, 4))
layer(torch.randn(2, 8)).sum().backward()
print("hits", counters["inductor"]["fxgraph_cache_hit"], "misses", counters["inductor"]["fxgraph_cache_miss"])
if mode == "save":
    print("bytes", save_compile_cache(path))
"""


def compile_in_fresh_process(mode: str, cache: Path, inductor_dir: Path) -> str:
    """COMPILE_ONCE in a process with its own inductor cache folder: a fresh device machine."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(inductor_dir)}
    done = subprocess.run([sys.executable, "-c", COMPILE_ONCE, mode, str(cache)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def saved_compile_cache(tmp_path_factory) -> tuple[Path, int]:
    """A compile cache file and the number of graphs compiled into it."""
    folder = tmp_path_factory.mktemp("compile-cache")
    out = compile_in_fresh_process("save", folder / "compile.cache", folder / "inductor")
    return folder / "compile.cache", int(re.search(r"hits 0 misses (\d+)", out).group(1))


def test_compile_cache_turns_a_fresh_machines_compilation_into_cache_hits(saved_compile_cache, tmp_path):
    cache, graphs = saved_compile_cache
    assert graphs >= 2 and cache.stat().st_size > 0  # forward and backward
    second = compile_in_fresh_process("load", cache, tmp_path / "inductor")
    assert int(re.search(r"loaded (\d+)", second).group(1)) >= graphs
    assert f"hits {graphs} misses 0" in second, second


@pytest.mark.parametrize("arguments, message", [
    (["--init-generator", "junk"], "--init-generator junk"),
    (["--init-generator", "junk", "--d-warmup-kimg", "-1"], "--d-warmup-kimg must be ≥ 0"),
    (["--compile-cache", "junk"], "--compile-cache: junk is not a torch.compile cache"),
    (["--compile-cache", "missing/compile.cache"], "--compile-cache: folder missing does not exist"),
])
def test_cli_refuses_bad_files_and_values_before_training(tmp_path, monkeypatch, capsys, arguments, message):
    # Refused before anything trains (a missing cache folder would otherwise fail only after the run).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk").write_bytes(b"neither a checkpoint nor a cache")
    with pytest.raises(SystemExit):
        main(["train", "--out", "o", "--kimg", "1", "--device", "cpu", *arguments])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_device_script_resumes_from_the_parts_the_previous_call_sent_back(saved_compile_cache, tmp_path):
    # bin/device-train-gan on CPU with the demo networks at batch 2: a new run, then a resumed one on a "fresh
    # machine" that only has what the first call sent back, and a compile cache (which the CPU path only loads:
    # it compiles nothing, so none comes back).
    carry, first_out, second_out = tmp_path / "carry", tmp_path / "out1", tmp_path / "out2"
    for folder in (carry, first_out, second_out):
        folder.mkdir()

    def call(out: Path, *args: str, kimg: str = "0.002") -> subprocess.CompletedProcess:  # one step a call
        return run_device_script("device-train-gan", str(carry), *args, out=out, cwd=tmp_path, KIMG=kimg)

    first = call(first_out, "5", "--batch", "2", "--device", "cpu")
    assert first.returncode == 0, first.stderr
    parts = sorted(first_out.glob("latest.pt.part-*"))
    assert len(parts) > 1 and all(part.stat().st_size <= 15 * 2 ** 20 for part in parts)
    assert (first_out / "log.csv").exists() and list(first_out.glob("grid_*kimg.png"))
    assert not (first_out / "compile.cache.xz").exists()
    for path in first_out.iterdir():
        shutil.copy(path, carry)
    (carry / "compile.cache.xz").write_bytes(lzma.compress(saved_compile_cache[0].read_bytes()))

    refused = call(second_out, "5", "--batch", "4")
    assert refused.returncode == 2 and "drop --batch 4" in refused.stderr and not list(second_out.iterdir())
    second = call(second_out, "5", kimg="0.004")
    assert second.returncode == 0, second.stderr
    assert re.search(r"compile cache: \d+ artifacts from", second.stdout), second.stdout
    assert not (second_out / "compile.cache.xz").exists()
    joined = tmp_path / "joined.pt"
    joined.write_bytes(b"".join(p.read_bytes() for p in sorted(second_out.glob("latest.pt.part-*"))))
    resumed = GanTrainer.load(joined)
    assert resumed.config.batch_size == 2 and resumed.step == 2
    assert [row["step"] for row in resumed.log] == [1, 2]


def test_device_script_explains_its_arguments(tmp_path):
    for args, out, message in (([], tmp_path, "usage:"),
                               ([str(tmp_path / "none"), "1"], tmp_path, "is not a folder"),
                               ([str(tmp_path), "1"], "", "$OUT must name")):
        done = run_device_script("device-train-gan", *args, out=out, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr, done.stderr
