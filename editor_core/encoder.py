"""The encoder: real images → W+ latents in one forward pass, and its files.

``Encoder`` is a pSp / encoder4editing-style network, ``image → W+``. A small residual backbone feeds a feature
pyramid (coarse, medium, fine levels); one ``MapToStyle`` head per w reads the level that matches that w's synthesis
resolution, and the output is the generator's ``w_avg`` plus the predicted offsets. ``encoder_training`` trains it;
``inversion`` refines its guess by optimisation.

Shapes: images ``[B, 3, R, R]`` in ``[-1, 1]`` at the generator's resolution ``R``; W+ ``[B, num_ws, w_dim]``.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from editor_core.checkpoints import generator_fingerprint, read_checkpoint, save_checkpoint
from editor_core.networks import Generator

ENCODER_KIND = "encoder"

PathLike = Union[str, os.PathLike]


class EncoderMismatchError(ValueError):
    """An encoder (or its checkpoint) was made for a different generator than the one it is used with."""


# ----------------------------------------------------------------------------------------------------------------------
# The network.

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


def check_encoder_fits(encoder: Encoder, generator: Generator) -> None:
    """Raise ``EncoderMismatchError`` unless ``encoder`` has ``generator``'s resolution and W+ shape."""
    expected = (generator.config.resolution, generator.num_ws, generator.config.w_dim)
    found = (encoder.config.resolution, encoder.config.num_ws, encoder.config.w_dim)
    if found != expected:
        raise EncoderMismatchError(
            f"encoder is for (resolution, num_ws, w_dim) = {found} but the generator has {expected}; build one "
            f"with Encoder(EncoderConfig.for_generator(generator))")


# ----------------------------------------------------------------------------------------------------------------------
# Files.


def save_encoder(path: PathLike, encoder: Encoder, generator: Generator, meta: Optional[dict[str, Any]] = None) -> None:
    """Write ``encoder`` in the project format (kind ``"encoder"``), tagged with ``generator``'s fingerprint."""
    check_encoder_fits(encoder, generator)
    save_checkpoint(path, ENCODER_KIND, encoder.state_dict(), encoder.config.to_dict(),
                    {**(meta or {}), "generator_fingerprint": generator_fingerprint(generator)})


def load_encoder(path: PathLike, generator: Generator) -> Encoder:
    """Read an encoder saved by ``save_encoder`` onto ``generator``'s device.

    Raises ``EncoderMismatchError`` when it was trained for another generator.
    """
    tensors, config, meta = read_checkpoint(path, ENCODER_KIND)
    check_fingerprint(meta, generator_fingerprint(generator), path)
    encoder = Encoder(EncoderConfig.from_dict(config))
    check_encoder_fits(encoder, generator)
    encoder.load_state_dict(tensors)
    return encoder.to(generator.mapping.w_avg.device)


def check_fingerprint(meta: dict[str, Any], expected: str, path: PathLike) -> None:
    """Raise ``EncoderMismatchError`` unless the file at ``path`` (``meta``) was trained for generator ``expected``."""
    found = meta.get("generator_fingerprint")
    if found != expected:
        raise EncoderMismatchError(
            f"{path} was trained for generator {found}, but this generator is {expected}; load the generator it "
            f"was trained for, or train an encoder for this one (python -m editor_core train-encoder)")
