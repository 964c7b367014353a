"""StyleGAN2 trainer for the studio's demo generator.

The loop follows NVlabs' StyleGAN2-ADA (``training/loss.py: StyleGAN2Loss``, ``training/training_loop.py``):

- non-saturating logistic loss for G, logistic loss for D;
- lazy R1 on reals every ``r1_interval`` iterations, with Adam's learning rate and betas corrected for the interval
  (``c = interval / (interval + 1)``), as in the StyleGAN2 paper (appendix B);
- optional path-length regulariser (off by default, see ``TrainConfig.pl_weight``);
- style mixing, an EMA generator with a half-life in images and a ramp-up, ``mapping.w_avg`` tracking.

Training data are toon faces rendered on the fly on the training device (``editor_core.domains.toonface``): the data
set is infinite, so D cannot memorise it and no augmentation is needed.

Speed (CUDA): bf16 autocast, channels-last tensors, ``torch.compile`` of the main G and D passes (forward and
backward), fused Adam. The regulariser passes run eagerly because compiled graphs cannot be differentiated twice.

Command line (see docs/demo-model.md)::

    python -m editor_core.training.gan train --out DIR --kimg 3000 --minutes 9 [--resume DIR/latest.pt]
        [--compile-cache FILE]
    python -m editor_core.training.gan export --checkpoint DIR/latest.pt --out demo/generator.safetensors
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import datetime as _dt
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from editor_core.checkpoints import GENERATOR_KIND, CheckpointError, load_generator, read_checkpoint, save_generator
from editor_core.domains import toonface
from editor_core.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from editor_core.progress import ProgressCallback, ProgressEvent, report

CHECKPOINT_FORMAT = "editgan-studio/gan-training-state"
CHECKPOINT_VERSION = 1
LOG_FIELDS = ("step", "kimg", "seconds", "images_per_s", "loss_G", "loss_D", "logits_real", "logits_fake",
              "r1_penalty", "pl_penalty")


def demo_generator_config() -> GeneratorConfig:
    """The demo generator: 128², channels 256 (4²–16²), 128, 64, 32 (128²); 1.9 GFLOP per image, sized for the
    studio's 2-core CPU budget of 60 ms per forward pass at batch 1 (channel_base 8192 takes 2.6x the CPU time;
    measurements in docs/demo-model.md)."""
    return GeneratorConfig(resolution=128, z_dim=256, w_dim=256, mapping_layers=4, channel_base=4096,
                           channel_max=256)


def demo_discriminator_config() -> DiscriminatorConfig:
    return DiscriminatorConfig(resolution=128, channel_base=4096, channel_max=256)


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint, fixed for the run's lifetime.

    The networks use no fp16 layers (``num_fp16_res=0``): mixed precision comes from bf16 autocast on CUDA, which
    needs neither loss scaling nor the fp16 activation clamps.
    """

    generator: GeneratorConfig = field(default_factory=demo_generator_config)
    discriminator: DiscriminatorConfig = field(default_factory=demo_discriminator_config)
    batch_size: int = 64
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 0.2  # NVlabs' heuristic 0.0002·res²/batch would give 0.05 at 128², batch 64; D leads early
    r1_interval: int = 16
    # Path-length regularisation smooths W but costs a double backward through the synthesis network every
    # ``pl_interval`` steps in eager mode (compiled graphs cannot be differentiated twice); the demo edits optimise
    # in W+, where its benefit is small, so it is off by default.
    pl_weight: float = 0.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing_prob: float = 0.9
    render_batches: int = 16  # iterations' worth of reals rendered per renderer call
    ema_kimg: float = 10.0  # half-life of the EMA generator, in thousands of images
    ema_rampup: float = 0.05  # early on the half-life is at most this fraction of the images shown
    # A run started from an already trained generator (``GanTrainer.from_generator``) gets a fresh D; until this many
    # thousand images have been shown only D trains, so that G is not pushed around by a D that knows nothing yet.
    g_frozen_until_kimg: float = 0.0
    seed: int = 0
    log_every: int = 100  # iterations per loss-log row
    snapshot_kimg: float = 100.0  # checkpoint + sample grid interval
    grid_columns: int = 8
    grid_rows: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.generator, dict):
            self.generator = GeneratorConfig.from_dict(self.generator)
        if isinstance(self.discriminator, dict):
            self.discriminator = DiscriminatorConfig.from_dict(self.discriminator)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.generator.resolution != self.discriminator.resolution:
            raise ValueError(f"generator ({self.generator.resolution}²) and discriminator "
                             f"({self.discriminator.resolution}²) resolutions differ")
        for name in ("batch_size", "r1_interval", "pl_interval", "pl_batch_shrink", "render_batches", "log_every",
                     "grid_columns", "grid_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("g_lr", "d_lr", "snapshot_kimg"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("r1_gamma", "pl_weight", "ema_kimg", "ema_rampup", "g_frozen_until_kimg"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0.0 <= self.style_mixing_prob <= 1.0:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if self.pl_weight > 0 and self.batch_size % self.pl_batch_shrink:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by pl_batch_shrink "
                             f"{self.pl_batch_shrink}")

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Losses, regularisers and the EMA
# ---------------------------------------------------------------------------------------------------------------

def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss, ``mean softplus(−D(G(z)))``; logits ``[B, 1]``."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic loss, ``mean softplus(D(fake)) + mean softplus(−D(real))``; logits ``[B, 1]``."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def r1_penalty(D: torch.nn.Module, reals: torch.Tensor) -> torch.Tensor:
    """Per-sample ``‖∇ₓ D(x)‖²`` on reals ``[B, 3, H, W]`` → ``[B]`` (differentiable w.r.t. D's parameters)."""
    reals = reals.detach().requires_grad_(True)
    logits = D(reals)
    (grad,) = torch.autograd.grad(logits.float().sum(), reals, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3))


def path_length(G: Generator, ws: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobian norm ``‖Jᵀ y‖`` of ``G.synthesis`` at ``ws [B, num_ws, w_dim]`` for a random image-space
    ``y`` scaled by 1/√(HW) (Karras et al. 2020, eq. 4) → ``[B]``, differentiable w.r.t. G's parameters."""
    ws = ws.detach().requires_grad_(True)
    images = G.synthesis(ws, noise_mode="random")
    y = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images.float() * y).sum(), ws, create_graph=True)
    return grad.float().square().sum(dim=2).mean(dim=1).sqrt()


def ema_beta(batch_size: int, images_shown: int, ema_kimg: float, ema_rampup: float) -> float:
    """Per-step EMA decay for a half-life of ``ema_kimg`` thousand images, ramped up as in NVlabs' loop."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup > 0:
        ema_nimg = min(ema_nimg, images_shown * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """``θ_ema ← β·θ_ema + (1−β)·θ`` for parameters; buffers (``mapping.w_avg``) are copied."""
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)
    for ema_buffer, buffer in zip(G_ema.buffers(), G.buffers()):
        ema_buffer.copy_(buffer)


def sample_mixing_cutoff(batch_size: int, num_ws: int, prob: float, device: torch.device) -> torch.Tensor:
    """Per-sample first W+ layer taken from the second latent ``[B]`` int64; ``num_ws`` means no mixing."""
    cutoff = torch.randint(1, num_ws, (batch_size,), device=device)
    no_mixing = torch.rand(batch_size, device=device) >= prob
    return cutoff.masked_fill(no_mixing, num_ws)


def mixed_ws(G: Generator, z: torch.Tensor, z_mix: torch.Tensor, cutoff: torch.Tensor,
             update_w_avg: bool = False) -> torch.Tensor:
    """Style mixing: W+ ``[B, num_ws, w_dim]`` from ``z`` for layers below ``cutoff [B]`` and ``z_mix`` from it on.

    A per-sample cutoff (NVlabs draws one per batch) keeps the graph free of data-dependent shapes, so it compiles.
    """
    # The mapping network stays in float32 under autocast: it is cheap, and w_avg is tracked in float32.
    with torch.autocast(z.device.type, enabled=False):
        ws, ws_mix = G.mapping(torch.cat([z, z_mix]), update_emas=update_w_avg).chunk(2)
    layer = torch.arange(ws.shape[1], device=ws.device)
    take_mix = (layer[None, :] >= cutoff[:, None])[:, :, None]
    return torch.where(take_mix, ws_mix, ws)


def generate_images(G: Generator, z: torch.Tensor, z_mix: torch.Tensor, cutoff: torch.Tensor,
                    update_w_avg: bool = False) -> torch.Tensor:
    """Training-time images ``[B, 3, H, W]``: style mixing, random noise."""
    return G.synthesis(mixed_ws(G, z, z_mix, cutoff, update_w_avg), noise_mode="random")


def save_image_grid(images: torch.Tensor, path: Path, columns: int) -> None:
    """Write ``images [N, 3, H, W]`` in [-1, 1] as one PNG, ``columns`` images per row."""
    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    canvas = torch.zeros(rows * columns, c, h, w, dtype=torch.uint8)
    canvas[:n] = pixels
    canvas = canvas.reshape(rows, columns, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, columns * w, c)
    Image.fromarray(canvas.numpy()).save(path)


# ---------------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------------

class GanTrainer:
    """G, D, G_ema, their optimisers and the loop state; ``train`` runs iterations, ``save``/``load`` resume.

    One iteration = G step (+ path length every ``pl_interval``), D step (+ R1 every ``r1_interval``), EMA update,
    each on ``batch_size`` images.
    """

    def __init__(self, config: TrainConfig, device: torch.device | str = "cpu", compile: bool = True,
                 compact_checkpoints: bool = False) -> None:
        self.config = config
        self.compact_checkpoints = compact_checkpoints
        self.device = torch.device(device)
        self.use_cuda_speedups = self.device.type == "cuda"
        torch.manual_seed(config.seed)  # network init and the z / noise / mixing draws of the loop
        memory_format = torch.channels_last if self.use_cuda_speedups else torch.contiguous_format
        self.G = Generator(config.generator).to(self.device, memory_format=memory_format).train()
        self.D = Discriminator(config.discriminator).to(self.device, memory_format=memory_format).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.memory_format = memory_format

        self.opt_G = self._adam(self.G, config.g_lr, reg_interval=config.pl_interval if config.pl_weight > 0 else None)
        self.opt_D = self._adam(self.D, config.d_lr, reg_interval=config.r1_interval if config.r1_gamma > 0 else None)
        self._real_chunk: Optional[tuple[int, torch.Tensor]] = None  # (chunk index, [render_batches·B, 3, H, W])
        self.pl_mean = torch.zeros([], device=self.device)

        self.step = 0
        self.images_shown = 0
        self.train_seconds = 0.0
        self.log: list[dict[str, float]] = []

        compile = compile and self.use_cuda_speedups
        self._generate = torch.compile(generate_images) if compile else generate_images
        self._discriminate = torch.compile(self.D) if compile else self.D
        self._pending: dict[str, list[torch.Tensor]] = {}
        self._window_start = (0, 0.0)

    def _adam(self, module: torch.nn.Module, lr: float, reg_interval: Optional[int]) -> torch.optim.Adam:
        """Adam; with a lazy regulariser every ``reg_interval`` steps, lr and betas are scaled by
        ``c = interval / (interval + 1)`` so that the extra steps do not change the effective rate."""
        c = 1.0 if reg_interval is None else reg_interval / (reg_interval + 1)
        betas = (self.config.betas[0] ** c, self.config.betas[1] ** c)
        return torch.optim.Adam(module.parameters(), lr=lr * c, betas=betas, eps=1e-8,
                                fused=self.use_cuda_speedups or None)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.use_cuda_speedups:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _latents(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_dim = self.config.generator.z_dim
        z = torch.randn(batch_size, z_dim, device=self.device)
        z_mix = torch.randn(batch_size, z_dim, device=self.device)
        cutoff = sample_mixing_cutoff(batch_size, self.G.num_ws, self.config.style_mixing_prob, self.device)
        return z, z_mix, cutoff

    def render_reals(self, batch_size: int, rng: torch.Generator) -> torch.Tensor:
        """A fresh batch of toon faces ``[B, 3, H, W]`` in [-1, 1], rendered on the training device."""
        params = toonface.sample_params(batch_size, rng, device=self.device)
        rgb, _ = toonface.render(params, self.config.resolution)
        return rgb.contiguous(memory_format=self.memory_format)

    def reals_for_step(self, step: int) -> torch.Tensor:
        """The real batch ``[B, 3, H, W]`` of iteration ``step``.

        Reals are rendered ``render_batches`` iterations at a time: the renderer's parameter check reads a device
        value back (a GPU sync), so one call per chunk keeps the queue full. Each chunk's faces depend only on the
        seed and the chunk index, so a resumed run sees the same data as an uninterrupted one.
        """
        cfg = self.config
        chunk, offset = divmod(step, cfg.render_batches)
        if self._real_chunk is None or self._real_chunk[0] != chunk:
            rng = torch.Generator(self.device).manual_seed((cfg.seed + 1) * 2 ** 32 + chunk)
            self._real_chunk = (chunk, self.render_reals(cfg.render_batches * cfg.batch_size, rng))
        return self._real_chunk[1][offset * cfg.batch_size:(offset + 1) * cfg.batch_size]

    def _record(self, name: str, value: torch.Tensor) -> None:
        # Kept on the device: reading a loss back every step would synchronise and stall the GPU queue.
        self._pending.setdefault(name, []).append(value.detach().float().reshape([]))

    # -- one iteration -------------------------------------------------------------------------------------------

    def train_step(self) -> None:
        cfg = self.config
        batch = cfg.batch_size
        reals = self.reals_for_step(self.step)
        if self.images_shown >= cfg.g_frozen_until_kimg * 1000:
            self._generator_step(batch)
        self._discriminator_step(batch, reals)
        self.images_shown += batch
        self.step += 1
        update_ema(self.G_ema, self.G, ema_beta(batch, self.images_shown, cfg.ema_kimg, cfg.ema_rampup))

    def _generator_step(self, batch: int) -> None:
        """Non-saturating loss (D frozen so that no D weight gradients are computed), path length on its interval."""
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        with self._autocast():
            fake_logits = self._discriminate(self._generate(self.G, *self._latents(batch)))
        loss_G = generator_loss(fake_logits)
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        self._record("loss_G", loss_G)
        if self.config.pl_weight > 0 and self.step % self.config.pl_interval == 0:
            self._path_length_step(batch // self.config.pl_batch_shrink)

    def _discriminator_step(self, batch: int, reals: torch.Tensor) -> None:
        """Logistic loss on fresh fakes (these draws also track ``mapping.w_avg``) and reals, R1 on its interval."""
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            fakes = self._generate(self.G, *self._latents(batch), update_w_avg=True)
        with self._autocast():
            fake_logits = self._discriminate(fakes)
            real_logits = self._discriminate(reals)
        loss_D = discriminator_loss(real_logits, fake_logits)
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()
        self._record("loss_D", loss_D)
        self._record("logits_real", real_logits.float().mean())
        self._record("logits_fake", fake_logits.float().mean())
        if self.config.r1_gamma > 0 and self.step % self.config.r1_interval == 0:
            self._r1_step(reals)

    def _r1_step(self, reals: torch.Tensor) -> None:
        with self._autocast():
            penalty = r1_penalty(self.D, reals)
        loss = penalty.mean() * (self.config.r1_gamma / 2) * self.config.r1_interval
        self.opt_D.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_D.step()
        self._record("r1_penalty", penalty.mean())

    def _path_length_step(self, batch: int) -> None:
        self.D.requires_grad_(False)
        z, z_mix, cutoff = self._latents(batch)
        with self._autocast():
            lengths = path_length(self.G, mixed_ws(self.G, z, z_mix, cutoff))
        self.pl_mean.lerp_(lengths.mean().detach(), self.config.pl_decay)
        penalty = (lengths - self.pl_mean).square()
        loss = penalty.mean() * self.config.pl_weight * self.config.pl_interval
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_G.step()
        self._record("pl_penalty", penalty.mean())

    # -- the loop ------------------------------------------------------------------------------------------------

    def train(self, out_dir: Path | str, total_kimg: float, minutes: Optional[float] = None,
              progress: Optional[ProgressCallback] = None) -> None:
        """Train until ``total_kimg`` thousand images have been shown (counting earlier sessions) or ``minutes`` of
        wall time have passed; writes ``latest.pt``, ``log.csv`` and sample grids to ``out_dir`` every
        ``snapshot_kimg`` and at the end."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = int(round(total_kimg * 1000))
        deadline = None if minutes is None else time.monotonic() + minutes * 60
        snapshot_every = int(self.config.snapshot_kimg * 1000)
        next_snapshot = (self.images_shown // snapshot_every + 1) * snapshot_every
        if not (out_dir / "reals.png").exists():
            self.save_reals_grid(out_dir / "reals.png")
        session_start = time.monotonic()
        seconds_before = self.train_seconds
        self._window_start = (self.step, self.train_seconds)
        while self.images_shown < target and (deadline is None or time.monotonic() < deadline):
            self.train_step()
            self.train_seconds = seconds_before + time.monotonic() - session_start
            if self.step % self.config.log_every == 0:
                report(progress, ProgressEvent(stage="train-gan", step=self.images_shown, total=target,
                                               losses=self.flush_log_row()))
            if self.images_shown >= next_snapshot:
                self.snapshot(out_dir)
                next_snapshot += snapshot_every
        if self._pending:
            self.flush_log_row()
        self.snapshot(out_dir)

    def flush_log_row(self) -> dict[str, float]:
        """Close the current loss-log window: append and return its row (losses averaged over the window)."""
        if self.use_cuda_speedups:
            torch.cuda.synchronize(self.device)
        step0, seconds0 = self._window_start
        seconds = self.train_seconds - seconds0
        row = {"step": self.step, "kimg": self.images_shown / 1000, "seconds": round(self.train_seconds, 3),
               "images_per_s": (self.step - step0) * self.config.batch_size / seconds if seconds > 0 else 0.0}
        for name in LOG_FIELDS[4:]:
            values = self._pending.get(name)
            row[name] = torch.stack(values).mean().item() if values else math.nan
        self._pending = {}
        self._window_start = (self.step, self.train_seconds)
        self.log.append(row)
        return row

    # -- outputs -------------------------------------------------------------------------------------------------

    def grid_latents(self) -> torch.Tensor:
        """The fixed latents of every sample grid ``[rows·columns, z_dim]`` (same across sessions)."""
        n = self.config.grid_columns * self.config.grid_rows
        rng = torch.Generator().manual_seed(self.config.seed + 2)
        return torch.randn(n, self.config.generator.z_dim, generator=rng).to(self.device)

    @torch.no_grad()
    def save_sample_grid(self, path: Path) -> None:
        """G_ema on the fixed grid latents (ψ = 1, constant noise)."""
        images = self.G_ema(self.grid_latents(), truncation_psi=1.0, noise_mode="const")
        save_image_grid(images, path, self.config.grid_columns)

    def save_reals_grid(self, path: Path) -> None:
        rng = torch.Generator(self.device).manual_seed(self.config.seed + 3)
        n = self.config.grid_columns * self.config.grid_rows
        save_image_grid(self.render_reals(n, rng), path, self.config.grid_columns)

    def snapshot(self, out_dir: Path) -> None:
        """``latest.pt`` (atomically replaced), ``log.csv`` and ``grid_<kimg>.png`` in ``out_dir``."""
        tmp = out_dir / "latest.pt.tmp"
        self.save(tmp)
        os.replace(tmp, out_dir / "latest.pt")
        write_log_csv(self.log, out_dir / "log.csv")
        self.save_sample_grid(out_dir / f"grid_{self.images_shown // 1000:06d}kimg.png")

    # -- resumable state -----------------------------------------------------------------------------------------

    def state_dict(self, compact: bool = False) -> dict[str, Any]:
        """Everything ``load`` needs. ``compact`` stores weights in float16 and Adam's second moments in bfloat16
        (about half the bytes, so that a checkpoint of the demo networks fits the device's 64 MiB transfer limit);
        resuming from it is then close to, not bit-for-bit, the uninterrupted run."""
        weight_dtype, moment_dtype = (torch.float16, torch.bfloat16) if compact else (torch.float32, torch.float32)
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "G": _cast_floats(self.G.state_dict(), weight_dtype),
            "D": _cast_floats(self.D.state_dict(), weight_dtype),
            "G_ema": _cast_floats(self.G_ema.state_dict(), weight_dtype),
            "opt_G": _adam_checkpoint_state(self.opt_G, moment_dtype),
            "opt_D": _adam_checkpoint_state(self.opt_D, moment_dtype),
            "pl_mean": self.pl_mean,
            "step": self.step,
            "images_shown": self.images_shown,
            "train_seconds": self.train_seconds,
            "compact": compact,
            "log": self.log,
            "rng": {"device_type": self.device.type, "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
        }

    def save(self, path: Path | str) -> None:
        torch.save(self.state_dict(compact=self.compact_checkpoints), path)

    @classmethod
    def from_generator(cls, path: Path | str, config: TrainConfig, d_warmup_kimg: float,
                       device: torch.device | str = "cpu", compile: bool = True,
                       compact_checkpoints: bool = False) -> "GanTrainer":
        """Continue training an exported generator (project format): G and G_ema start from its weights, D and the
        optimisers start fresh, the image count continues from the file's ``meta.images_shown``, and only D trains
        for the first ``d_warmup_kimg`` thousand images. ``config.generator`` is replaced by the file's."""
        _, _, meta = read_checkpoint(path, expected_kind=GENERATOR_KIND)
        generator = load_generator(path)
        images_shown = int(meta.get("images_shown", 0))
        config = dataclasses.replace(config, generator=generator.config,
                                     g_frozen_until_kimg=images_shown / 1000 + d_warmup_kimg)
        trainer = cls(config, device=device, compile=compile, compact_checkpoints=compact_checkpoints)
        trainer.G.load_state_dict(generator.state_dict())
        trainer.G_ema.load_state_dict(generator.state_dict())
        trainer.images_shown = images_shown
        # New data: the real-image chunks are indexed by step, so continuing the count draws faces not seen before.
        trainer.step = images_shown // config.batch_size
        return trainer

    @classmethod
    def load(cls, path: Path | str, device: torch.device | str = "cpu", compile: bool = True,
             compact_checkpoints: Optional[bool] = None) -> "GanTrainer":
        """Rebuild a trainer from ``save``'s file; the loop continues where it stopped, with the random-number
        streams restored when resuming on the same kind of device. Later checkpoints keep the file's compactness
        unless ``compact_checkpoints`` says otherwise."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a GAN training checkpoint of this project (format {CHECKPOINT_FORMAT})")
        if state["version"] != CHECKPOINT_VERSION:
            raise ValueError(f"{path} has checkpoint version {state['version']}, this code reads "
                             f"{CHECKPOINT_VERSION}")
        if compact_checkpoints is None:
            compact_checkpoints = state["compact"]
        trainer = cls(TrainConfig(**state["config"]), device=device, compile=compile,
                      compact_checkpoints=compact_checkpoints)
        trainer.G.load_state_dict(state["G"])
        trainer.D.load_state_dict(state["D"])
        trainer.G_ema.load_state_dict(state["G_ema"])
        _load_adam_checkpoint_state(trainer.opt_G, state["opt_G"])
        _load_adam_checkpoint_state(trainer.opt_D, state["opt_D"])
        trainer.pl_mean.copy_(state["pl_mean"])
        trainer.step = state["step"]
        trainer.images_shown = state["images_shown"]
        trainer.train_seconds = state["train_seconds"]
        trainer.log = list(state["log"])
        rng = state["rng"]
        if rng["device_type"] == trainer.device.type:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None:
                torch.cuda.set_rng_state(rng["cuda"], trainer.device)
        return trainer


def _cast_floats(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}


def _adam_checkpoint_state(optimizer: torch.optim.Adam, moment_dtype: torch.dtype) -> dict[str, Any]:
    """Adam's state dict with ``exp_avg_sq`` in ``moment_dtype``. With β₁ = 0 the first moment is just the last
    gradient, which the next step overwrites before reading it, so it is left out (a third of the optimiser bytes)."""
    state = optimizer.state_dict()
    keep_first_moment = any(group["betas"][0] != 0 for group in state["param_groups"])
    packed = {}
    for index, param_state in state["state"].items():
        packed[index] = {key: (value.to(moment_dtype) if key == "exp_avg_sq" else value)
                         for key, value in param_state.items() if keep_first_moment or key != "exp_avg"}
    return {"state": packed, "param_groups": state["param_groups"]}


def _load_adam_checkpoint_state(optimizer: torch.optim.Adam, state: dict[str, Any]) -> None:
    """Inverse of ``_adam_checkpoint_state`` (``load_state_dict`` casts the moments back to the parameters' dtype)."""
    for param_state in state["state"].values():
        if "exp_avg" not in param_state:
            param_state["exp_avg"] = torch.zeros_like(param_state["exp_avg_sq"])
    optimizer.load_state_dict(state)


def load_compile_cache(path: Path | str) -> int:
    """Hot-load the ``torch.compile`` artifacts (FX graphs, Triton kernels, autotuning) that ``save_compile_cache``
    wrote, so that this process's compilations become cache hits. Each device call may land on a fresh
    machine, where compiling the trainer's graphs takes about 140 s; artifacts of the same GPU kind and torch build
    carry over. Returns how many artifacts were loaded; raises ``ValueError`` for a file that is not such a cache."""
    info = torch.compiler.load_cache_artifacts(Path(path).read_bytes())
    if info is None:  # torch logs why (checksum, unpickling) and returns None
        raise ValueError(f"{path} is not a torch.compile cache written by save_compile_cache")
    return sum(len(keys) for keys in info.artifacts.values())


def save_compile_cache(path: Path | str) -> int:
    """Write the ``torch.compile`` artifacts of this process's compilations (cache hits included) to ``path``,
    atomically; returns the bytes written, 0 when nothing was compiled (then ``path`` is left alone)."""
    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None or not artifacts[0]:
        return 0
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(artifacts[0])
    os.replace(tmp, path)
    return len(artifacts[0])


def enable_cuda_fast_math() -> None:
    """TF32 for the float32 matmuls/convs that autocast leaves alone, and cuDNN's per-shape algorithm search."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def write_log_csv(rows: list[dict[str, float]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})


def export_generator(checkpoint: Path | str, out_path: Path | str) -> None:
    """Write the checkpoint's EMA generator in the project format, fp16, with training metadata."""
    trainer = GanTrainer.load(checkpoint, device="cpu", compile=False)
    meta = {
        "source": "editor_core.training.gan",
        "images_shown": trainer.images_shown,
        "kimg": trainer.images_shown / 1000,
        "train_seconds": round(trainer.train_seconds, 1),
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "train_config": trainer.config.to_dict(),
    }
    save_generator(out_path, trainer.G_ema, meta=meta, dtype=torch.float16)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

def _tqdm_progress(bar) -> Callable[[ProgressEvent], None]:
    def on_event(event: ProgressEvent) -> None:
        bar.update(event.step - bar.n)
        bar.set_postfix({k: f"{event.losses[k]:.3g}" for k in ("loss_G", "loss_D", "images_per_s")})
    return on_event


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor_core.training.gan", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (or resume) the demo StyleGAN2")
    train.add_argument("--out", type=Path, required=True, help="folder for latest.pt, log.csv and sample grids")
    train.add_argument("--kimg", type=float, required=True, help="total thousands of images to show (all sessions)")
    train.add_argument("--minutes", type=float, default=None, help="stop and checkpoint after this much wall time")
    train.add_argument("--resume", type=Path, default=None, help="a latest.pt to continue from")
    train.add_argument("--init-generator", type=Path, default=None,
                       help="start G and G_ema from an exported generator (.safetensors) with a fresh D")
    train.add_argument("--d-warmup-kimg", type=float, default=50.0,
                       help="with --init-generator: thousands of images during which only D trains (default 50)")
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    train.add_argument("--no-compile", action="store_true", help="run eagerly (debugging; much slower)")
    train.add_argument("--compile-cache", type=Path, default=None,
                       help="torch.compile artifacts: loaded before training when the file exists, written after "
                            "(carry it to the next fresh machine of the same GPU kind to skip most compilation)")
    train.add_argument("--compact-checkpoint", action="store_true", default=None,
                       help="store weights in float16 and Adam moments in bfloat16 (half the size, resume not "
                            "exact); a resumed run keeps its checkpoint's choice")
    train.add_argument("--batch", type=int, default=None, help="batch size (new runs only)")
    train.add_argument("--r1-gamma", type=float, default=None, help="R1 weight (new runs only)")
    train.add_argument("--pl-weight", type=float, default=None, help="path-length weight (new runs only)")
    train.add_argument("--seed", type=int, default=None, help="random seed (new runs only)")
    export = commands.add_parser("export", help="write a checkpoint's EMA generator in the project format (fp16)")
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "export":
        export_generator(args.checkpoint, args.out)
        return
    overrides = {name: value for name, value in (("batch_size", args.batch), ("r1_gamma", args.r1_gamma),
                                                 ("pl_weight", args.pl_weight), ("seed", args.seed))
                 if value is not None}
    if args.d_warmup_kimg < 0:
        parser.error(f"--d-warmup-kimg must be ≥ 0, got {args.d_warmup_kimg}")
    if args.compile_cache is not None:
        if not args.compile_cache.parent.is_dir():
            parser.error(f"--compile-cache: folder {args.compile_cache.parent} does not exist")
        if args.compile_cache.exists():
            try:
                print(f"compile cache: {load_compile_cache(args.compile_cache)} artifacts from {args.compile_cache}")
            except ValueError as err:
                parser.error(f"--compile-cache: {err}")
    if args.resume is not None:
        if overrides or args.init_generator is not None:
            parser.error(f"--resume continues the checkpoint's own training config and networks; drop "
                         f"{sorted(overrides) + (['--init-generator'] if args.init_generator else [])}")
        trainer = GanTrainer.load(args.resume, device=args.device, compile=not args.no_compile,
                                  compact_checkpoints=args.compact_checkpoint)
    elif args.init_generator is not None:
        try:
            trainer = GanTrainer.from_generator(args.init_generator, TrainConfig(**overrides), args.d_warmup_kimg,
                                                device=args.device, compile=not args.no_compile,
                                                compact_checkpoints=bool(args.compact_checkpoint))
        except (CheckpointError, ValueError) as err:
            parser.error(f"--init-generator {args.init_generator}: {err}")
    else:
        trainer = GanTrainer(TrainConfig(**overrides), device=args.device, compile=not args.no_compile,
                             compact_checkpoints=bool(args.compact_checkpoint))
    if trainer.device.type == "cuda":
        enable_cuda_fast_math()
    with tqdm(total=int(args.kimg * 1000), initial=trainer.images_shown, unit="img", unit_scale=True,
              smoothing=0.1) as bar:
        trainer.train(args.out, args.kimg, minutes=args.minutes, progress=_tqdm_progress(bar))
    if args.compile_cache is not None:
        print(f"compile cache: {save_compile_cache(args.compile_cache)} bytes written to {args.compile_cache}")
    last = trainer.log[-1] if trainer.log else {}
    print(f"stopped at {trainer.images_shown} images ({trainer.images_shown / 1000:.1f} kimg), step {trainer.step}, "
          f"{trainer.train_seconds / 60:.1f} min trained in total; last log row: {last}")


if __name__ == "__main__":
    main()
