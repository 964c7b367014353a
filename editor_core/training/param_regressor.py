"""Render-parameter regressor: the feature network of the demo generator's Fréchet distance.

FID needs Inception weights, which this project does not ship or download. The demo domain has something better:
every real image is a render with known parameters. A network trained to read those parameters back from an image
(``ParamRegressor``: residual conv stages down to 4x4, a fully connected feature layer, a linear head) must encode
exactly what varies between toon faces — shape, pose, colours, hair — so its feature layer is a domain-specific
replacement for Inception's pool features. ``frechet_distance`` compares two feature sets the way FID does.

Targets (``regression_targets``): each parameter of ``toonface.PARAM_SCHEMA`` scaled to ``[0, 1]`` by its range,
hues as ``(cos, sin)`` pairs (hue 0 and hue 1 are the same colour), ``noise_seed`` left out (an integer seed has no
visual ordering).

Shapes: images ``[B, 3, R, R]`` in ``[-1, 1]``; targets ``[B, num_targets]``; features ``[B, feature_dim]``.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from editor_core.checkpoints import read_checkpoint, save_checkpoint
from editor_core.domains.toonface import PARAM_SCHEMA, ToonFaceParams
from editor_core.encoder import ResidualBlock
from editor_core.progress import ProgressCallback, ProgressEvent, report

REGRESSOR_KIND = "param_regressor"
CYCLIC_PARAMS = ("iris_hue", "background_hue", "clothing_hue")
UNORDERED_PARAMS = ("noise_seed",)


def target_names() -> list[str]:
    """Name of each regression target, in column order (``<hue>.cos`` / ``<hue>.sin`` for the cyclic ones)."""
    names = []
    for name in PARAM_SCHEMA:
        if name in UNORDERED_PARAMS:
            continue
        names += [f"{name}.cos", f"{name}.sin"] if name in CYCLIC_PARAMS else [name]
    return names


def regression_targets(params: ToonFaceParams) -> torch.Tensor:
    """Toon-face parameters → targets ``[B, len(target_names())]`` (ranges scaled to [0, 1], hues on the circle)."""
    columns = []
    for name, spec in PARAM_SCHEMA.items():
        if name in UNORDERED_PARAMS:
            continue
        value = params[name].to(torch.float32)
        if name in CYCLIC_PARAMS:
            angle = 2 * math.pi * value
            columns += [angle.cos(), angle.sin()]
        else:
            columns.append((value - spec.low) / (spec.high - spec.low))
    return torch.stack(columns, dim=1)


@dataclass(frozen=True)
class RegressorConfig:
    """Shape of a ``ParamRegressor``: residual stages halve ``resolution`` down to ``feature_resolution``, with
    ``min(channel_base // res, channel_max)`` channels at each; the flattened map feeds a ``feature_dim`` layer."""

    resolution: int
    num_targets: int
    channel_base: int = 4096
    channel_max: int = 256
    feature_resolution: int = 4
    feature_dim: int = 256

    def __post_init__(self) -> None:
        for name in ("resolution", "feature_resolution"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 4 and value & (value - 1) == 0):
                raise ValueError(f"{name} must be a power of two >= 4, got {value!r}")
        if self.feature_resolution > self.resolution:
            raise ValueError(f"feature_resolution {self.feature_resolution} exceeds the image resolution "
                             f"{self.resolution}")
        for name in ("num_targets", "channel_base", "channel_max", "feature_dim"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")

    def channels_at(self, res: int) -> int:
        return max(1, min(self.channel_base // res, self.channel_max))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RegressorConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown RegressorConfig fields {sorted(unknown)}")
        return cls(**data)


class ParamRegressor(nn.Module):
    """Image ``[B, 3, R, R]`` → render-parameter targets ``[B, num_targets]``; ``features`` gives the layer below."""

    def __init__(self, config: RegressorConfig):
        super().__init__()
        self.config = config
        res = config.resolution
        self.from_rgb = nn.Conv2d(3, config.channels_at(res), 3, padding=1)
        self.stage_resolutions = []
        in_channels = config.channels_at(res)
        while res > config.feature_resolution:
            res //= 2
            setattr(self, f"b{res}", ResidualBlock(in_channels, config.channels_at(res), down=True))
            self.stage_resolutions.append(res)
            in_channels = config.channels_at(res)
        self.fc = nn.Linear(in_channels * config.feature_resolution ** 2, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_targets)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, R, R]`` in ``[-1, 1]`` → ``[B, feature_dim]`` (after the activation: the Fréchet features)."""
        size = self.config.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"the regressor reads images [B, 3, {size}, {size}], got {tuple(images.shape)}")
        x = F.leaky_relu(self.from_rgb(images), 0.2)
        for res in self.stage_resolutions:
            x = getattr(self, f"b{res}")(x)
        return F.leaky_relu(self.fc(x.flatten(1)), 0.2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


# ----------------------------------------------------------------------------------------------------------------------
# Training and evaluation.

TrainingBatches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]
"""``batches(step) → (images [B, 3, R, R], targets [B, num_targets])`` on the training device."""


@dataclass(frozen=True)
class RegressorTrainConfig:
    """AdamW on the mean squared error of the targets for ``steps`` steps or ``minutes`` of wall time, whichever
    ends first; bf16 autocast on CUDA (the loss needs no more precision than the targets' spread)."""

    steps: int = 20_000
    minutes: Optional[float] = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    report_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1 or self.report_every < 1:
            raise ValueError(f"steps and report_every must be >= 1, got {self.steps} and {self.report_every}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be None or > 0, got {self.minutes}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")


def train_param_regressor(regressor: ParamRegressor, batches: TrainingBatches, config: RegressorTrainConfig,
                          progress: Optional[ProgressCallback] = None) -> list[dict[str, float]]:
    """Train ``regressor`` in place on ``batches``; returns one ``{"step", "loss"}`` row per ``report_every`` steps
    (and one for the last, shorter window), ``loss`` the window's mean. At least one step is always taken.

    The learning rate decays with a cosine over the step budget (or, with ``minutes``, over the elapsed fraction of
    the time budget), so a time-limited run still ends at a low rate.
    """
    device = next(regressor.parameters()).device
    optimizer = torch.optim.AdamW(regressor.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    start = time.monotonic()
    budget = None if config.minutes is None else config.minutes * 60
    history: list[dict[str, float]] = []
    window: list[torch.Tensor] = []
    regressor.train()
    for step in range(config.steps):
        elapsed = time.monotonic() - start
        if budget is not None and elapsed >= budget and step > 0:
            break
        done = max(step / config.steps, 0.0 if budget is None else elapsed / budget)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        images, targets = batches(step)
        with autocast:
            predicted = regressor(images)
        loss = F.mse_loss(predicted.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(loss.detach())
        if (step + 1) % config.report_every == 0 or step + 1 == config.steps:
            history.append(_flush(window, step + 1, config.steps, progress))
    else:
        step = config.steps
    if window:
        history.append(_flush(window, step, config.steps, progress))
    regressor.eval()
    return history


def _flush(window: list[torch.Tensor], step: int, total: int, progress: Optional[ProgressCallback]) -> dict[str, float]:
    """One log row from the losses of a window (emptied), reported to ``progress``."""
    row = {"step": step, "loss": torch.stack(window).mean().item()}
    window.clear()
    report(progress, ProgressEvent("train-regressor", step, total, {"loss": row["loss"]}))
    return row


@torch.no_grad()
def regression_r2(regressor: ParamRegressor, images: torch.Tensor, targets: torch.Tensor,
                  batch: int = 256) -> torch.Tensor:
    """Coefficient of determination ``[num_targets]`` of the predictions on held-out ``images``: 1 is perfect,
    0 is no better than predicting the mean."""
    predicted = torch.cat([regressor(images[i:i + batch]) for i in range(0, len(images), batch)]).float()
    residual = (predicted - targets).square().sum(0)
    total = (targets - targets.mean(0)).square().sum(0).clamp_min(1e-12)
    return 1 - residual / total


@torch.no_grad()
def regressor_features(regressor: ParamRegressor, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``features`` of ``images`` ``[N, 3, R, R]`` in float64 on the CPU, ``batch`` images at a time."""
    return torch.cat([regressor.features(images[i:i + batch]).double().cpu() for i in range(0, len(images), batch)])


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a [N, D]`` and ``b [M, D]`` (FID's formula):
    ``‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½)``.

    ``tr((Σa Σb)^½)`` is computed as the sum of the square roots of the eigenvalues of ``Σa^½ Σb Σa^½`` (symmetric
    positive semi-definite, same eigenvalues as ``Σa Σb``), in float64, so no complex matrix square root is needed.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two feature sets [N, D] with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(len(a), len(b)) < 2:
        raise ValueError("each feature set needs at least 2 rows to estimate a covariance")
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov_a)
    sqrt_a = eigenvectors @ torch.diag(eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp_min(0).sqrt().sum()
    return float((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


# ----------------------------------------------------------------------------------------------------------------------
# Files.


def save_param_regressor(path: str | Path, regressor: ParamRegressor, meta: Optional[dict[str, Any]] = None,
                         dtype: Optional[torch.dtype] = None) -> None:
    """Write ``regressor`` in the project format (kind ``"param_regressor"``); ``meta`` gets the target names."""
    save_checkpoint(path, REGRESSOR_KIND, regressor.state_dict(), regressor.config.to_dict(),
                    {**(meta or {}), "targets": target_names()}, dtype=dtype)


def load_param_regressor(path: str | Path, device: torch.device | str = "cpu") -> ParamRegressor:
    """Inverse of ``save_param_regressor``: a float32 regressor in eval mode on ``device``."""
    tensors, config, meta = read_checkpoint(path, expected_kind=REGRESSOR_KIND)
    if meta.get("targets") != target_names():
        raise ValueError(f"{path} regresses targets {meta.get('targets')}, but this code's toon-face parameters give "
                         f"{target_names()}; retrain it (python -m editor_core.training.demo_bundle regressor)")
    regressor = ParamRegressor(RegressorConfig.from_dict(config))
    regressor.load_state_dict(tensors)
    return regressor.to(device).eval().requires_grad_(False)
