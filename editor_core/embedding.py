"""Real images → W+ latents: a feed-forward encoder, its trainer, and optimisation-based refinement.

EditGAN edits an image through its W+ latent, so a real photo must first be embedded (paper §3.3 and its release):

1. ``Encoder``: a pSp / encoder4editing-style network, ``image → W+``. A small residual backbone feeds a feature
   pyramid (coarse, medium, fine levels); one ``MapToStyle`` head per w reads the level that matches that w's
   synthesis resolution, and the output is the generator's ``w_avg`` plus the predicted offsets.
   ``train_encoder`` trains it on generator samples (latent L2 + image L2 + LPIPS on the re-generated image, samples
   drawn at truncation 0.7) mixed with real images (image L2 + LPIPS only).
2. ``embed_image``: starting from the encoder's guess, Adam refines ``w`` with the NVlabs projector's learning-rate
   schedule on ``10·LPIPS + 1·L2 + 1·‖w − E(G(w))‖²``; the last term, the paper's in-domain regulariser, keeps ``w``
   where the encoder (hence the generator's training distribution) puts images like the current one, so edits
   behave as on samples. Noise maps can be optimised too (with the NVlabs noise regulariser).

Shapes: images ``[B, 3, R, R]`` in ``[-1, 1]`` at the generator's resolution ``R``; W+ ``[B, num_ws, w_dim]``.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from editor_core.checkpoints import generator_fingerprint, read_checkpoint, save_checkpoint
from editor_core.metrics import encoder_quality, image_distances, lpips_sized, psnr
from editor_core.networks import Generator
from editor_core.perceptual import PerceptualLoss, get_perceptual_loss
from editor_core.progress import ProgressCallback, ProgressEvent, report

ENCODER_KIND = "encoder"
ENCODER_TRAINING_KIND = "encoder-training"
# Refinement steps: one default for the studio, the worker and the command line (bench/edit_truth.py measured 300
# against the release's 100 interactive steps: +0.6 dB, and two embeddings of one render 32–40 dB apart instead of
# 28–31); the bundle's annotation and vector sources keep the release's batch 500.
EMBED_STEPS = 300
BATCH_EMBED_STEPS = 500

ENCODER_CHUNK = 100  # encoder steps between time-budget checks (a tenth of the run when that is fewer)
ENCODER_EVAL_SAMPLES = 8  # generator samples a trained encoder is measured on
ENCODER_EVAL_SEED = 2 ** 31 - 1  # their seed: training draws per-step seeds from 0 up, never this one
ENCODER_LOSS_TAIL = 50  # final losses are the mean of the last steps

PathLike = Union[str, os.PathLike]
RealImages = Union[Callable[[], torch.Tensor], Iterable[torch.Tensor]]


class EncoderMismatchError(ValueError):
    """An encoder (or its checkpoint) was made for a different generator than the one it is used with."""


# ----------------------------------------------------------------------------------------------------------------------
# The encoder network.


@dataclass(frozen=True)
class EncoderConfig:
    """Shape and widths of an :class:`Encoder`.

    ``resolution``, ``num_ws``, ``w_dim`` come from the generator (``EncoderConfig.for_generator``). Images are
    area-downsampled to ``input_resolution = min(resolution, max_input_resolution)`` first (pSp reads 256²
    even for 1024² generators). The backbone has ``channels_at(res) = min(channel_base // res, channel_max)``
    channels at each resolution and ``blocks_per_stage`` residual blocks per halving, down to input/16. The pyramid
    levels (``pyramid_channels`` wide) are input/16 for the first ``coarse_ws`` ws, input/8 for the next
    ``medium_ws``, input/4 for the rest, as in pSp. The defaults (3.8 M parameters, 0.4 GMAC per 128² image) train
    on a 2-core CPU for the 128² demo generator. For 512²/1024² generators use e.g. ``channel_base=16384,
    channel_max=512, pyramid_channels=256, head_channels=256, blocks_per_stage=2`` (81 M parameters, 39 GMAC at
    the 256² input).
    """

    resolution: int
    num_ws: int
    w_dim: int
    max_input_resolution: int = 256
    channel_base: int = 2048
    channel_max: int = 256
    blocks_per_stage: int = 1
    pyramid_channels: int = 128
    head_channels: int = 64
    coarse_ws: int = 3
    medium_ws: int = 4

    def __post_init__(self) -> None:
        for name in ("resolution", "max_input_resolution"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 16 and value & (value - 1) == 0):
                raise ValueError(f"{name} must be a power of two >= 16, got {value!r}")
        for name in ("num_ws", "w_dim", "channel_base", "channel_max", "blocks_per_stage", "pyramid_channels",
                     "head_channels", "coarse_ws"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.num_ws < 2:
            raise ValueError(f"num_ws must be at least 2 (a base w and deltas), got {self.num_ws}")
        if not (isinstance(self.medium_ws, int) and 0 <= self.medium_ws <= self.num_ws - self.coarse_ws):
            raise ValueError(f"coarse_ws + medium_ws must be at most num_ws={self.num_ws}, got "
                             f"{self.coarse_ws} + {self.medium_ws}")
        if self.channel_base < self.input_resolution:
            raise ValueError(f"channel_base={self.channel_base} gives no channels at {self.input_resolution}px; "
                             f"use channel_base >= input resolution")

    @property
    def input_resolution(self) -> int:
        return min(self.resolution, self.max_input_resolution)

    @property
    def fine_ws(self) -> int:
        return self.num_ws - self.coarse_ws - self.medium_ws

    def channels_at(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EncoderConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def for_generator(cls, generator: Generator, **widths: Any) -> "EncoderConfig":
        """A config matching ``generator``'s resolution and W+ shape; ``widths`` override the other fields."""
        return cls(resolution=generator.config.resolution, num_ws=generator.num_ws, w_dim=generator.config.w_dim,
                   **widths)


def _group_norm(channels: int) -> nn.GroupNorm:
    # GroupNorm rather than BatchNorm: the encoder trains on small batches and embeds one image at a time, and it
    # behaves the same in train and eval mode, so sharing one instance between a trainer and workers is safe.
    return nn.GroupNorm(min(32, channels), channels)


class ResidualBlock(nn.Module):
    """Two 3x3 convs with GroupNorm + leaky ReLU and a shortcut; ``down`` halves the resolution (strided conv)."""

    def __init__(self, in_channels: int, out_channels: int, down: bool):
        super().__init__()
        stride = 2 if down else 1
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm0 = _group_norm(out_channels)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = _group_norm(out_channels)
        self.skip = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                     if down or in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.norm0(self.conv0(x)), 0.2)
        y = self.norm1(self.conv1(y))
        return F.leaky_relu(y + self.skip(x), 0.2)


class MapToStyle(nn.Module):
    """pSp's map2style head: ``[B, C, s, s]`` → ``[B, w_dim]`` by log2(s) strided 3x3 convs, then a linear layer."""

    def __init__(self, in_channels: int, hidden_channels: int, w_dim: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, hidden_channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = hidden_channels
        self.convs = nn.Sequential(*layers)
        self.to_w = nn.Linear(channels, w_dim)
        # Zero offsets at initialisation: a fresh encoder outputs w_avg, an in-domain image, so the image losses
        # give useful gradients from the first step.
        nn.init.zeros_(self.to_w.weight)
        nn.init.zeros_(self.to_w.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_w(self.convs(x).flatten(1))


class Encoder(nn.Module):
    """Image ``[B, 3, R, R]`` in ``[-1, 1]`` → W+ ``[B, num_ws, w_dim]`` = ``w_avg`` + per-w offsets.

    Layers: ``from_rgb`` (3x3 conv at the input resolution), stages ``b{res}`` (residual blocks, the first one
    halving the resolution) down to input/16, lateral 1x1 convs and a top-down pathway (bilinear up-sampling + add)
    giving the pyramid levels, and ``coarse_heads`` / ``medium_heads`` / ``fine_heads`` (``MapToStyle``).
    ``w_avg`` (``[w_dim]`` buffer) is the generator's average w; ``train_encoder`` copies it from the generator.
    """

    def __init__(self, config: EncoderConfig, w_avg: Optional[torch.Tensor] = None):
        super().__init__()
        self.config = config
        r = config.input_resolution
        self.stage_resolutions = [r // 2, r // 4, r // 8, r // 16]
        self.from_rgb = nn.Conv2d(3, config.channels_at(r), 3, padding=1)
        in_channels = config.channels_at(r)
        for res in self.stage_resolutions:
            out_channels = config.channels_at(res)
            blocks = [ResidualBlock(in_channels, out_channels, down=True)]
            blocks += [ResidualBlock(out_channels, out_channels, down=False)
                       for _ in range(config.blocks_per_stage - 1)]
            setattr(self, f"b{res}", nn.Sequential(*blocks))
            in_channels = out_channels
        fine, medium, coarse = r // 4, r // 8, r // 16
        pyramid = config.pyramid_channels
        self.lateral_fine = nn.Conv2d(config.channels_at(fine), pyramid, 1)
        self.lateral_medium = nn.Conv2d(config.channels_at(medium), pyramid, 1)
        self.lateral_coarse = nn.Conv2d(config.channels_at(coarse), pyramid, 1)

        def heads(count: int, spatial: int) -> nn.ModuleList:
            return nn.ModuleList(MapToStyle(pyramid, config.head_channels, config.w_dim, spatial) for _ in range(count))

        self.coarse_heads = heads(config.coarse_ws, coarse)
        self.medium_heads = heads(config.medium_ws, medium)
        self.fine_heads = heads(config.fine_ws, fine)
        self.register_buffer("w_avg", torch.zeros(config.w_dim) if w_avg is None else w_avg.detach().clone().float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"encoder expects images [B, 3, {size}, {size}], got {tuple(images.shape)}; "
                             f"load images with editor_core.images.load_image(..., size={size})")
        x = images.to(self.w_avg.dtype)
        if size != self.config.input_resolution:
            x = F.interpolate(x, size=(self.config.input_resolution,) * 2, mode="area")
        x = F.leaky_relu(self.from_rgb(x), 0.2)
        levels = {}
        for res in self.stage_resolutions:
            x = getattr(self, f"b{res}")(x)
            levels[res] = x
        fine, medium, coarse = (levels[res] for res in self.stage_resolutions[1:])
        p_coarse = self.lateral_coarse(coarse)
        p_medium = _upsample(p_coarse) + self.lateral_medium(medium)
        p_fine = _upsample(p_medium) + self.lateral_fine(fine)
        outputs = ([head(p_coarse) for head in self.coarse_heads] + [head(p_medium) for head in self.medium_heads]
                   + [head(p_fine) for head in self.fine_heads])
        # encoder4editing: the first head predicts a base offset shared by every w and the others predict deltas
        # from it, so every w's loss trains the base (generator samples have equal ws) and ws stay close together.
        base, deltas = outputs[0].unsqueeze(1), torch.stack(outputs[1:], dim=1)
        return self.w_avg + torch.cat([base, base + deltas], dim=1)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _check_encoder_fits(encoder: Encoder, generator: Generator) -> None:
    expected = (generator.config.resolution, generator.num_ws, generator.config.w_dim)
    found = (encoder.config.resolution, encoder.config.num_ws, encoder.config.w_dim)
    if found != expected:
        raise EncoderMismatchError(
            f"encoder is for (resolution, num_ws, w_dim) = {found} but the generator has {expected}; build one "
            f"with Encoder(EncoderConfig.for_generator(generator))")


# ----------------------------------------------------------------------------------------------------------------------
# Encoder training.


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Hyper-parameters of ``train_encoder``.

    Each step draws ``batch_size`` generator samples at ``truncation_psi`` (loss ``latent_weight·‖E(x) − w‖²`` +
    ``lpips_weight·LPIPS`` + ``l2_weight·L2`` between ``x`` and ``G(E(x))``) and, when real images are given,
    one real batch (LPIPS + L2 only, scaled by ``real_weight``); weights 5 / 10 / 1 are the EditGAN release's.
    ``lpips_weight = 0`` trains without LPIPS (faster; no backbone weights needed). Adam at ``lr``. Every
    ``checkpoint_every`` steps and at the end the training state goes to ``checkpoint_path`` (if set), from which
    ``train_encoder(..., resume=path)`` continues. Generator samples are seeded per step from ``seed``, so a
    resumed run draws the same samples as an uninterrupted one.
    """

    steps: int = 10_000
    batch_size: int = 4
    lr: float = 1e-4
    truncation_psi: float = 0.7
    latent_weight: float = 5.0
    lpips_weight: float = 10.0
    l2_weight: float = 1.0
    real_weight: float = 1.0
    lpips_net: str = "vgg"
    lpips_resolution: int = 256
    seed: int = 0
    checkpoint_path: Optional[str] = None
    checkpoint_every: int = 500
    preview_every: int = 100

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "preview_every", "lpips_resolution"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("lr", "latent_weight", "lpips_weight", "l2_weight", "real_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.truncation_psi <= 1:
            raise ValueError(f"truncation_psi must be in (0, 1], got {self.truncation_psi}")


def train_encoder(generator: Generator, encoder: Encoder, real_images: Optional[RealImages],
                  config: EncoderTrainConfig, progress: Optional[ProgressCallback] = None,
                  resume: Optional[PathLike] = None) -> list[dict[str, float]]:
    """Train ``encoder`` (in place) to invert ``generator``; returns the loss log, one dict per step.

    ``real_images``: ``None``, a callable returning a batch, or an iterable of batches (re-iterated when it runs
    out), each ``[B, 3, R, R]`` in ``[-1, 1]``. ``resume``: a checkpoint written by an earlier run with
    ``config.checkpoint_path``; training continues from its step up to ``config.steps`` and the returned log
    (``history[step]``: ``loss``, ``latent``, ``l2``, ``lpips``, and ``real_l2`` / ``real_lpips`` with real images)
    includes the earlier steps. The generator is not changed (no gradients reach it). Each step reports a
    ``ProgressEvent("train-encoder", ...)``; every ``preview_every`` steps its preview is a sample and its
    reconstruction side by side (``[3, R, 2R]``).
    """
    _check_encoder_fits(encoder, generator)
    device = generator.mapping.w_avg.device
    encoder.to(device)
    with torch.no_grad():
        encoder.w_avg.copy_(generator.mapping.w_avg)  # the encoder predicts offsets from this generator's w_avg
    params = list(encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    perceptual = get_perceptual_loss(config.lpips_net, device) if config.lpips_weight > 0 else None
    fingerprint = generator_fingerprint(generator)
    history: list[dict[str, float]] = []
    if resume is not None:
        history = _load_training_state(resume, fingerprint, encoder, optimizer)
    real_batches = _real_batches(real_images, generator.config.resolution) if real_images is not None else None

    for step in range(len(history), config.steps):
        samples, true_ws = _generator_samples(generator, config, step)
        predicted_ws = encoder(samples)
        reconstructions = generator.synthesis(predicted_ws, noise_mode="const")
        latent = (predicted_ws - true_ws).square().mean()
        lpips, l2 = image_distances(perceptual, reconstructions, samples, config.lpips_resolution)
        losses = {"latent": latent, "l2": l2.mean()}
        if lpips is not None:
            losses["lpips"] = lpips.mean()
        loss = config.latent_weight * latent + _image_loss(config, lpips, l2)
        if real_batches is not None:
            real = next(real_batches).to(device, torch.float32)
            real_lpips, real_l2 = image_distances(perceptual, generator.synthesis(encoder(real), noise_mode="const"),
                                                  real, config.lpips_resolution)
            losses["real_l2"] = real_l2.mean()
            if real_lpips is not None:
                losses["real_lpips"] = real_lpips.mean()
            loss = loss + config.real_weight * _image_loss(config, real_lpips, real_l2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)  # only the encoder's gradients: the shared generator is left untouched
        optimizer.step()

        history.append({"loss": loss.item(), **{name: value.item() for name, value in losses.items()}})
        done = step + 1
        if config.checkpoint_path is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            _save_training_state(config.checkpoint_path, fingerprint, encoder, optimizer, config, history)
        preview = None
        if done % config.preview_every == 0 or done == config.steps:
            preview = torch.cat([samples[0], reconstructions[0]], dim=2).detach().clamp(-1, 1).cpu()
        report(progress, ProgressEvent("train-encoder", done, config.steps, dict(history[-1]), preview_image=preview))
    optimizer.zero_grad(set_to_none=True)  # a trained encoder carries no stale gradients (memory, shared use)
    return history


def train_encoder_within(generator: Generator, encoder: Encoder, real_images: Optional[RealImages],
                         config: EncoderTrainConfig, max_seconds: Optional[float] = None,
                         progress: Optional[ProgressCallback] = None) -> list[dict[str, float]]:
    """``train_encoder`` with a wall-clock budget: it stops at the first chunk boundary past ``max_seconds`` (None:
    no budget) and returns the log of the steps it ran (fewer than ``config.steps`` when time ran out).

    Chunks of ``ENCODER_CHUNK`` steps (a tenth of the run when that is fewer), each resuming from the last one's
    saved state (weights + Adam moments), so a run cut short is the start of an uninterrupted one (the same
    generator samples). Progress events count towards ``config.steps``.
    """
    if max_seconds is None:
        return train_encoder(generator, encoder, real_images, config, progress=progress)
    deadline = time.monotonic() + max_seconds

    def whole_run(event: ProgressEvent) -> None:  # chunks report their own end as the total
        report(progress, replace(event, total=config.steps))

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "encoder-training.safetensors"
        chunk = max(1, min(ENCODER_CHUNK, config.steps // 10))
        chunked = replace(config, checkpoint_path=str(state), checkpoint_every=chunk)
        history: list[dict[str, float]] = []
        while len(history) < config.steps and (not history or time.monotonic() < deadline):
            history = train_encoder(generator, encoder, real_images,
                                    replace(chunked, steps=min(len(history) + chunk, config.steps)),
                                    progress=whole_run, resume=state if state.exists() else None)
    return history


def final_losses(history: list[dict[str, float]], tail: int = ENCODER_LOSS_TAIL) -> dict[str, float]:
    """``final_<loss>``: the mean of each loss over the last ``tail`` steps of a training log (single steps are
    noisy)."""
    last = history[-tail:]
    return {f"final_{name}": sum(row[name] for row in last) / len(last) for name in history[-1]}


def encoder_evaluation(generator: Generator, encoder: Encoder, config: EncoderTrainConfig,
                       real_images: Optional[torch.Tensor] = None, baseline: Optional[Encoder] = None,
                       samples: int = ENCODER_EVAL_SAMPLES) -> dict[str, float]:
    """What a trained encoder is worth, as flat figures (``metrics.encoder_quality``): ``eval_*`` on ``samples``
    generator samples of a seed training never draws (``eval_samples``: their count), ``real_*`` on
    ``real_images`` ``[M, 3, R, R]`` (photos it trained on: how well it fits real images at all) and
    ``baseline_*`` of ``baseline`` (the encoder in use now) on the same generator samples, to compare."""
    device = generator.mapping.w_avg.device
    perceptual = get_perceptual_loss(config.lpips_net, device) if config.lpips_weight > 0 else None
    z = torch.randn(samples, generator.config.z_dim, generator=torch.Generator().manual_seed(ENCODER_EVAL_SEED))
    with torch.no_grad():
        true_ws = generator.mapping(z.to(device), truncation_psi=config.truncation_psi)
        images = generator.synthesis(true_ws, noise_mode="const")
    figures: dict[str, float] = {"eval_samples": samples}
    measured = {"eval": (encoder, images, true_ws), "real": (encoder, real_images, None),
                "baseline": (baseline, images, true_ws)}
    for prefix, (measured_encoder, measured_images, measured_ws) in measured.items():
        if measured_encoder is not None and measured_images is not None:
            quality = encoder_quality(generator, measured_encoder, measured_images.to(device), measured_ws,
                                      perceptual, config.lpips_resolution)
            figures.update({f"{prefix}_{name}": value for name, value in quality.items()})
    return figures


def _image_loss(config: EncoderTrainConfig, lpips: Optional[torch.Tensor], l2: torch.Tensor) -> torch.Tensor:
    loss = config.l2_weight * l2.mean()
    return loss if lpips is None else loss + config.lpips_weight * lpips.mean()


def _generator_samples(generator: Generator, config: EncoderTrainConfig,
                       step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [B, 3, R, R], ws [B, num_ws, w_dim])`` for one step, seeded by ``(seed, step)``."""
    rng = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    z = torch.randn(config.batch_size, generator.config.z_dim, generator=rng).to(generator.mapping.w_avg.device)
    with torch.no_grad():
        ws = generator.mapping(z, truncation_psi=config.truncation_psi)
        return generator.synthesis(ws, noise_mode="const"), ws


def _real_batches(real_images: RealImages, resolution: int) -> Iterator[torch.Tensor]:
    """Endless stream of validated real batches from a callable or a (re-iterable) iterable."""
    def checked(batch: torch.Tensor) -> torch.Tensor:
        expected = (3, resolution, resolution)
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"real images must be batches [B, 3, {resolution}, {resolution}] in [-1, 1], got {shape}; "
                             f"load them with editor_core.images.load_image(..., size={resolution})")
        return batch

    if callable(real_images):
        while True:
            yield checked(real_images())
    while True:
        count = 0
        for batch in real_images:
            count += 1
            yield checked(batch)
        if count == 0:
            raise ValueError("real_images yielded no batches; pass a list, a DataLoader or a callable that returns "
                             "one batch per call (an iterator that is used up cannot be restarted)")


def _save_training_state(path: PathLike, fingerprint: str, encoder: Encoder, optimizer: torch.optim.Optimizer,
                         config: EncoderTrainConfig, history: list[dict[str, float]]) -> None:
    tensors = {f"encoder.{name}": value for name, value in encoder.state_dict().items()}
    for name, param in encoder.named_parameters():
        for key, value in optimizer.state[param].items():
            tensors[f"adam.{name}.{key}"] = value
    meta = {"generator_fingerprint": fingerprint, "train_config": asdict(config), "history": history}
    save_checkpoint(path, ENCODER_TRAINING_KIND, tensors, encoder.config.to_dict(), meta)


def _load_training_state(path: PathLike, fingerprint: str, encoder: Encoder,
                         optimizer: torch.optim.Optimizer) -> list[dict[str, float]]:
    """Restore encoder weights and Adam moments from ``path``; returns the log so far."""
    tensors, config, meta = read_checkpoint(path, ENCODER_TRAINING_KIND)
    _check_fingerprint(meta, fingerprint, path)
    if EncoderConfig.from_dict(config) != encoder.config:
        raise EncoderMismatchError(f"{path} holds an encoder with config {config}, not {encoder.config.to_dict()}; "
                                   f"resume with the same EncoderConfig")
    encoder.load_state_dict({name[len("encoder."):]: value for name, value in tensors.items()
                             if name.startswith("encoder.")})
    state = {}
    for index, (name, _) in enumerate(encoder.named_parameters()):
        prefix = f"adam.{name}."
        state[index] = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
    # Adam's load_state_dict moves the moments to each parameter's device.
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return list(meta["history"])


# ----------------------------------------------------------------------------------------------------------------------
# Encoder files.


def save_encoder(path: PathLike, encoder: Encoder, generator: Generator, meta: Optional[dict[str, Any]] = None) -> None:
    """Write ``encoder`` in the project format (kind ``"encoder"``), tagged with ``generator``'s fingerprint."""
    _check_encoder_fits(encoder, generator)
    save_checkpoint(path, ENCODER_KIND, encoder.state_dict(), encoder.config.to_dict(),
                    {**(meta or {}), "generator_fingerprint": generator_fingerprint(generator)})


def load_encoder(path: PathLike, generator: Generator) -> Encoder:
    """Read an encoder saved by ``save_encoder`` onto ``generator``'s device.

    Raises ``EncoderMismatchError`` when it was trained for another generator.
    """
    tensors, config, meta = read_checkpoint(path, ENCODER_KIND)
    _check_fingerprint(meta, generator_fingerprint(generator), path)
    encoder = Encoder(EncoderConfig.from_dict(config))
    _check_encoder_fits(encoder, generator)
    encoder.load_state_dict(tensors)
    return encoder.to(generator.mapping.w_avg.device)


def _check_fingerprint(meta: dict[str, Any], expected: str, path: PathLike) -> None:
    found = meta.get("generator_fingerprint")
    if found != expected:
        raise EncoderMismatchError(
            f"{path} was trained for generator {found}, but this generator is {expected}; load the generator it "
            f"was trained for, or train an encoder for this one (python -m editor_core train-encoder)")


# ----------------------------------------------------------------------------------------------------------------------
# Optimisation-based refinement.


@dataclass(frozen=True)
class EmbedConfig:
    """Hyper-parameters of ``embed_image``; defaults are the EditGAN release's interactive embedding, with more steps.

    Loss per image: ``lpips_weight·LPIPS + l2_weight·L2 + encoder_weight·‖w − E(G(w))‖²`` (the last term only with
    an encoder), plus ``noise_weight`` × the NVlabs noise regulariser when ``optimize_noise``. Adam at ``lr`` with
    ``learning_rate_schedule`` (linear ramp-up over the first ``lr_rampup`` of the steps, cosine ramp-down over
    the last ``lr_rampdown``). ``steps``: ``EMBED_STEPS`` (300) in the studio and the command line,
    ``BATCH_EMBED_STEPS`` (500) for the bundle's annotations. A preview image is reported every ``preview_every``
    steps.
    """

    steps: int = EMBED_STEPS
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    lpips_weight: float = 10.0
    l2_weight: float = 1.0
    encoder_weight: float = 1.0
    optimize_noise: bool = False
    noise_weight: float = 1e5  # NVlabs projector's regularize_noise_weight
    lpips_net: str = "vgg"
    lpips_resolution: int = 256
    preview_every: int = 10

    def __post_init__(self) -> None:
        for name in ("steps", "preview_every", "lpips_resolution"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("lr", "lpips_weight", "l2_weight", "encoder_weight", "noise_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not (0 < self.lr_rampup <= 1 and 0 < self.lr_rampdown <= 1):
            raise ValueError(f"lr_rampup and lr_rampdown must be fractions in (0, 1], got "
                             f"{self.lr_rampup} and {self.lr_rampdown}")


@dataclass
class EmbedResult:
    """What ``embed_image`` found, per image at its best step.

    ``ws [B, num_ws, w_dim]``; ``image [B, 3, R, R]`` = ``G.synthesis(ws)`` (with ``noise``); ``history[step]``:
    batch means of ``loss``, ``lpips``, ``l2`` and, when used, the ``encoder`` and ``noise`` terms (step 0 is the
    starting point, step k follows k updates); ``best_step``, ``lpips``, ``psnr``: ``[B]``; ``noise``: the
    optimised ``noise_const`` map per synthesis layer name (``None`` unless ``optimize_noise``); synthesise inside
    ``swapped_noise(G, noise)`` to reproduce ``image``.
    """

    ws: torch.Tensor
    image: torch.Tensor
    history: list[dict[str, float]]
    best_step: torch.Tensor
    lpips: torch.Tensor
    psnr: torch.Tensor
    noise: Optional[dict[str, torch.Tensor]] = field(default=None)


def learning_rate_schedule(config: EmbedConfig) -> list[float]:
    """Learning rate of each of the ``config.steps`` updates (NVlabs ``projector.py``).

    ``lr(t) = lr · min(1, t / rampup) · (1 − cos(π · min(1, (1 − t) / rampdown))) / 2``. NVlabs samples it at
    ``t = step / steps``, so its first update has lr 0; sampling each update's midpoint keeps the curve without
    wasting a step.
    """
    rates = []
    for step in range(config.steps):
        t = (step + 0.5) / config.steps
        ramp_down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / config.lr_rampdown))
        rates.append(config.lr * min(1.0, t / config.lr_rampup) * ramp_down)
    return rates


def noise_regularizer(noise_maps: Iterable[torch.Tensor]) -> torch.Tensor:
    """NVlabs projector's noise regulariser: squared autocorrelation at lag 1 of each ``[H, W]`` map, summed over
    an average-pooled pyramid down to 8x8, so that noise cannot encode image content (which is spatially
    correlated)."""
    loss = torch.zeros(())
    for noise in noise_maps:
        x = noise[None, None]
        while True:
            loss = loss + (x * x.roll(1, dims=3)).mean().square() + (x * x.roll(1, dims=2)).mean().square()
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return loss


@contextlib.contextmanager
def swapped_noise(generator: Generator, noise: dict[str, torch.Tensor]) -> Iterator[None]:
    """Make the synthesis layers' ``noise_const`` buffers the given tensors (keyed by buffer name) for a while.

    ``Generator.synthesis`` reads constant noise only from these buffers and takes no noise argument, so to
    optimise noise we put our leaf tensors in place of the buffers and restore the originals on exit (also on
    error). While swapped, anyone else using this generator object sees the swapped noise: do not run other work
    on the same generator concurrently (the studio's workers run one job per process at a time).
    """
    originals = {}
    try:
        for name, value in noise.items():
            module_name, buffer_name = name.rsplit(".", 1)
            module = generator.synthesis.get_submodule(module_name)
            originals[name] = getattr(module, buffer_name)
            setattr(module, buffer_name, value)  # a registered buffer: nn.Module stores the tensor as the buffer
        yield
    finally:
        for name, value in originals.items():
            module_name, buffer_name = name.rsplit(".", 1)
            setattr(generator.synthesis.get_submodule(module_name), buffer_name, value)


def embed_image(generator: Generator, encoder: Optional[Encoder], image: torch.Tensor,
                config: EmbedConfig = EmbedConfig(), progress: Optional[ProgressCallback] = None) -> EmbedResult:
    """Find W+ latents that ``generator`` turns into ``image`` (``[B, 3, R, R]`` in ``[-1, 1]``, R = G's resolution).

    Starts from ``encoder(image)``, or from ``w_avg`` when ``encoder`` is ``None`` (for users who bring only a
    generator: then the in-domain regulariser is off and more steps are needed), and runs ``config.steps`` Adam
    updates on ``w`` (and the noise maps with ``optimize_noise``, which needs B = 1 since the maps are shared by
    the batch). Losses are evaluated before each update and after the last; each image keeps its lowest-loss step.
    Only the latents (and noise copies) receive gradients: the generator and encoder are not modified. Reports
    ``ProgressEvent("embed", step, steps, losses)`` per step, with a preview of the first image every
    ``preview_every`` steps.
    """
    size = generator.config.resolution
    if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
        raise ValueError(f"image must be [B, 3, {size}, {size}] in [-1, 1], got {tuple(image.shape)}; load it with "
                         f"editor_core.images.load_image(..., size={size})")
    if config.optimize_noise and image.shape[0] != 1:
        raise ValueError(f"optimize_noise embeds one image at a time (noise maps are shared by a batch), "
                         f"got a batch of {image.shape[0]}")
    if encoder is not None:
        _check_encoder_fits(encoder, generator)
    device = generator.mapping.w_avg.device
    target = image.to(device, torch.float32)
    perceptual = get_perceptual_loss(config.lpips_net, device)
    with torch.no_grad():
        start = (encoder(target) if encoder is not None
                 else generator.mapping.w_avg.expand(target.shape[0], generator.num_ws, -1))
    ws = start.detach().clone().requires_grad_(True)
    noise = ({name: buffer.detach().clone().requires_grad_(True)
              for name, buffer in generator.synthesis.named_buffers() if name.endswith("noise_const")}
             if config.optimize_noise else {})
    params = [ws, *noise.values()]
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999))
    rates = learning_rate_schedule(config)
    weights = {"lpips": config.lpips_weight, "l2": config.l2_weight, "encoder": config.encoder_weight,
               "noise": config.noise_weight}
    best = _BestStep(start, target)
    # The target's LPIPS features once, instead of a backbone pass over the same image every step.
    lpips_target = perceptual.reference(lpips_sized(target, config.lpips_resolution))
    history: list[dict[str, float]] = []
    with swapped_noise(generator, noise):
        for step in range(config.steps + 1):
            generated = generator.synthesis(ws, noise_mode="const")
            terms = _embedding_terms(perceptual, encoder, generated, target, ws, noise, config, lpips_target)
            loss = sum(weights[name] * value for name, value in terms.items())
            best.update(step, loss, ws, generated, terms, noise)
            history.append({"loss": loss.mean().item(), **{name: value.mean().item() for name, value in terms.items()}})
            preview = (generated[0].detach().clamp(-1, 1).cpu()
                       if step % config.preview_every == 0 or step == config.steps else None)
            report(progress, ProgressEvent("embed", step, config.steps, dict(history[-1]), preview_image=preview))
            if step == config.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = rates[step]
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward(inputs=params)  # per-image losses are independent, so one sum optimises each
            optimizer.step()
            with torch.no_grad():  # NVlabs keeps each noise map at zero mean and unit variance
                for value in noise.values():
                    value -= value.mean()
                    value *= value.square().mean().rsqrt()
    return EmbedResult(ws=best.ws, image=best.image, history=history, best_step=best.step, lpips=best.lpips,
                       psnr=psnr(best.l2), noise=best.noise if noise else None)


def _embedding_terms(perceptual: PerceptualLoss, encoder: Optional[Encoder], generated: torch.Tensor,
                     target: torch.Tensor, ws: torch.Tensor, noise: dict[str, torch.Tensor],
                     config: EmbedConfig, lpips_target=None) -> dict[str, torch.Tensor]:
    """Unweighted per-image loss terms ``[B]``: ``lpips``, ``l2``, and ``encoder`` / ``noise`` when they apply."""
    lpips, l2 = image_distances(perceptual, generated, target, config.lpips_resolution, lpips_target)
    terms = {"lpips": lpips, "l2": l2}
    if encoder is not None:
        with torch.no_grad():  # a fixed target per step, as in the release: E(G(w)) is not differentiated
            reencoded = encoder(generated)
        terms["encoder"] = (ws - reencoded).square().mean(dim=(1, 2))
    if noise:
        terms["noise"] = noise_regularizer(noise.values()).expand(target.shape[0])
    return terms


class _BestStep:
    """Per image, the lowest-loss step of an embedding run so far and what it produced."""

    def __init__(self, start_ws: torch.Tensor, target: torch.Tensor):
        batch, device = target.shape[0], target.device
        self.loss = torch.full((batch,), math.inf, device=device)
        self.step = torch.zeros(batch, dtype=torch.long, device=device)
        self.ws = start_ws.detach().clone()
        self.image = torch.zeros_like(target)
        self.lpips = torch.zeros(batch, device=device)
        self.l2 = torch.zeros(batch, device=device)
        self.noise: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, step: int, loss: torch.Tensor, ws: torch.Tensor, image: torch.Tensor,
               terms: dict[str, torch.Tensor], noise: dict[str, torch.Tensor]) -> None:
        improved = loss < self.loss
        for current, value in ((self.loss, loss), (self.ws, ws), (self.image, image), (self.lpips, terms["lpips"]),
                               (self.l2, terms["l2"])):
            current[improved] = value.detach()[improved]
        self.step[improved] = step
        if bool(improved.any()):  # noise is only optimised for a single image
            self.noise = {name: value.detach().clone() for name, value in noise.items()}
