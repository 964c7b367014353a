"""Toon-face renders for the demo pipeline: render seeds per purpose, faces, the encoder's render stream, and the
regressor features on both sides of the Fréchet distance.

Images ``[N, 3, size, size]`` in ``[-1, 1]``, masks int ``[N, size, size]``.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch

from editor_core.domains import toonface
from editor_core.domains.toonface import ToonFaceParams
from editor_core.networks import Generator
from editor_core.training.param_regressor import ParamRegressor, regressor_features

FD_CHUNK = 250  # images per regressor pass of the Fréchet distance
RENDER_SEEDS = {"annotate": 101, "vector_sources": 102, "evaluate": 103, "transfer": 104, "fd_renders": 105,
                "fd_renders_floor": 106, "regressor_check": 107, "encoder_check": 108, "figures": 109,
                "direction": 110, "vector_calibration": 111}
SAMPLE_SEEDS = {"fd_samples": 201, "fd_samples_truncated": 202, "direction": 203, "figures": 204}
SEED_STREAMS = {"encoder_reals": 1_000_000, "regressor": 2_000_000}


def render_faces(count: int, seed: int, size: int, device: torch.device,
                 overrides: Optional[dict[str, torch.Tensor]] = None
                 ) -> tuple[ToonFaceParams, torch.Tensor, torch.Tensor]:
    """``count`` random faces from ``seed`` (``overrides``: parameter values to use instead) →
    ``(params, images [N, 3, size, size], masks [N, size, size])`` on ``device``."""
    params = toonface.sample_params(count, seed, device=device)
    for name, value in (overrides or {}).items():
        params = toonface.with_param(params, name, value.to(device))
    images, masks = toonface.render(params, size)
    return params, images, masks


class RenderStream:
    """The encoder's "real" images: each call renders a fresh batch, seeded by ``seed + position``, on ``device``."""

    def __init__(self, batch: int, size: int, seed: int, device: torch.device):
        self.batch, self.size, self.seed, self.device = batch, size, seed, device
        self.position = 0

    def __call__(self) -> torch.Tensor:
        params = toonface.sample_params(self.batch, self.seed + self.position, device=self.device)
        self.position += 1
        return toonface.render(params, self.size)[0]


def chunks(count: int, size: int) -> Iterator[slice]:
    """Slices of ``range(count)``, ``size`` at a time (the last may be shorter)."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@torch.no_grad()
def sample_features(generator: Generator, regressor: ParamRegressor, count: int, seed: int, psi: float
                    ) -> torch.Tensor:
    """Regressor features ``[count, D]`` (float64, CPU) of ``count`` generator samples (z from ``seed``, truncation
    ``psi``, constant noise): one side of the Fréchet distance."""
    device = generator.mapping.w_avg.device
    z = torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return torch.cat([regressor_features(regressor, generator(z[part], truncation_psi=psi, noise_mode="const"))
                      for part in chunks(count, FD_CHUNK)])


@torch.no_grad()
def render_features(regressor: ParamRegressor, count: int, seed: int, size: int, device: torch.device
                    ) -> torch.Tensor:
    """Regressor features ``[count, D]`` (float64, CPU) of ``count`` renders at ``size``², rendered ``FD_CHUNK`` at a
    time (chunk ``k`` from seed ``seed·100 000 + k·FD_CHUNK``): the other side of the Fréchet distance."""
    return torch.cat([regressor_features(regressor, render_faces(part.stop - part.start, seed * 100_000 + part.start,
                                                                 size, device)[1])
                      for part in chunks(count, FD_CHUNK)])
