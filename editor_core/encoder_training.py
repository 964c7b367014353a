"""Training of the encoder (``editor_core.encoder``): generator samples mixed with real images, resumable.

``train_encoder`` trains on generator samples (latent L2 + image L2 + LPIPS on the re-generated image, samples drawn
at truncation 0.7) mixed with real images (image L2 + LPIPS only). Its state (weights, Adam moments, loss log) is
checkpointed, and a resumed run draws the same samples as an uninterrupted one; ``train_encoder_within`` uses that
to stop within a time budget. ``encoder_evaluation`` gives the figures a trained encoder is registered with.

Shapes: images ``[B, 3, R, R]`` in ``[-1, 1]`` at the generator's resolution ``R``; W+ ``[B, num_ws, w_dim]``.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import torch

from editor_core.checkpoints import generator_fingerprint, read_checkpoint, save_checkpoint
from editor_core.encoder import (Encoder, EncoderConfig, EncoderMismatchError, PathLike, check_encoder_fits,
                                 check_fingerprint)
from editor_core.metrics import LPIPS_RESOLUTION, encoder_quality, image_distances
from editor_core.networks import Generator
from editor_core.perceptual import get_perceptual_loss
from editor_core.progress import ProgressCallback, ProgressEvent, report

ENCODER_TRAINING_KIND = "encoder-training"
ENCODER_CHUNK = 100  # encoder steps between time-budget checks (a tenth of the run when that is fewer)
ENCODER_EVAL_SAMPLES = 8  # generator samples a trained encoder is measured on
ENCODER_EVAL_SEED = 2 ** 31 - 1  # their seed: training draws per-step seeds from 0 up, never this one
ENCODER_LOSS_TAIL = 50  # final losses are the mean of the last steps

RealImages = Union[Callable[[], torch.Tensor], Iterable[torch.Tensor]]


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
    lpips_resolution: int = LPIPS_RESOLUTION
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
    check_encoder_fits(encoder, generator)
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
    check_fingerprint(meta, fingerprint, path)
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
