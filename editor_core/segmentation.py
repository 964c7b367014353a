"""DatasetGAN-style segmentation branch: an ensemble of per-pixel MLPs on StyleGAN2 synthesis features.

Each member maps the feature vector of a pixel (every synthesis conv output, upsampled to the segmentation
resolution and concatenated: ~5.5k channels at 512² config-f) through ``Linear → ReLU → BatchNorm`` blocks to class
logits, as in the DatasetGAN / EditGAN releases (``pixel_classifier``).

The concatenated feature tensor is never built. The first Linear and the upsampling are both linear, and the
upsampling acts on each channel separately, so they commute::

    W · concat_i(up(f_i)) = Σ_i up(W_i · f_i)          (W_i: the columns of W that read map i)

so each map is multiplied at its native resolution (a 1×1 conv) and only the ``E·width`` channel result is
upsampled. Maps sharing a resolution are multiplied together, and for nearest upsampling the coarse terms are
accumulated top-down (upsample the running sum ×2, add the next resolution's term): nearest upsampling by
power-of-two factors composes exactly (``⌊⌊j/2⌋/2⌋ = ⌊j/4⌋``). Bilinear upsampling (``align_corners=False``) does not
compose — two ×2 steps sample the piecewise-linear interpolant at off-knot points and clamp differently at the border
— so in bilinear mode each resolution's term is upsampled straight to the output. Maps finer than the output are
resampled first, since that is cheaper than multiplying pixels that get dropped.

The ensemble is stacked: the E members' first layers are one 1×1 conv with ``E·width`` outputs, later layers are
grouped 1×1 convs (``groups=E``), so one forward evaluates all members in a few kernels. ``forward_naive`` keeps the
reference computation (upsample every map, concatenate, run each member's MLP); tests and the DatasetGAN-baseline
benchmark use it.

Training (``train_segmentation``) never needs full-resolution activations: per step it samples pixels and gathers
each map's upsampled value at those pixels from the native-resolution map (``forward_pixels``), so memory is
independent of the segmentation resolution apart from the (optionally fp16-cached) native features.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from editor_core.checkpoints import read_checkpoint, save_checkpoint
from editor_core.metrics import mean_iou
from editor_core.progress import ProgressCallback, ProgressEvent, report
from editor_core.schema import LabelSchema

UPSAMPLE_MODES = ("nearest", "bilinear")
LR_SCHEDULES = ("constant", "cosine")
CHECKPOINT_KIND = "segmentation"


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class SegmentationConfig:
    """Shape of a segmentation ensemble.

    ``feature_channels[i]`` / ``feature_resolutions[i]``: channels and side of synthesis feature map ``i`` (the
    generator's ``feature_channels`` / ``feature_resolutions``); ``resolution``: side of the output segmentation;
    ``hidden``: widths of each member's hidden layers; ``upsample``: how features are brought to ``resolution``
    (the EditGAN release used ``'nearest'`` at edit time, DatasetGAN's cat/face configs ``'bilinear'``).
    """

    feature_channels: tuple[int, ...]
    feature_resolutions: tuple[int, ...]
    num_classes: int
    resolution: int
    hidden: tuple[int, ...] = (256, 128, 32)
    ensemble_size: int = 10
    upsample: str = "nearest"

    def __post_init__(self) -> None:
        self.feature_channels = tuple(int(c) for c in self.feature_channels)
        self.feature_resolutions = tuple(int(r) for r in self.feature_resolutions)
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.feature_channels or len(self.feature_channels) != len(self.feature_resolutions):
            raise ValueError(f"need one resolution per feature map: got {len(self.feature_channels)} channel counts "
                             f"and {len(self.feature_resolutions)} resolutions")
        if min(self.feature_channels) < 1 or min(self.feature_resolutions) < 1:
            raise ValueError("feature channels and resolutions must be ≥ 1")
        if not 2 <= self.num_classes <= 256:
            raise ValueError(f"num_classes must be in 2..256, got {self.num_classes}")
        if self.resolution < 1:
            raise ValueError(f"resolution must be ≥ 1, got {self.resolution}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty tuple of positive widths, got {self.hidden}")
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be ≥ 1, got {self.ensemble_size}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}")

    @classmethod
    def from_generator(cls, generator: Any, num_classes: int, resolution: Optional[int] = None,
                       **options: Any) -> "SegmentationConfig":
        """Config matching ``generator``'s feature taps; ``resolution`` defaults to its finest feature map."""
        channels = tuple(generator.feature_channels)
        resolutions = tuple(generator.feature_resolutions)
        return cls(channels, resolutions, num_classes, resolution or max(resolutions), **options)

    @property
    def in_channels(self) -> int:
        """Length of a pixel's concatenated feature vector."""
        return sum(self.feature_channels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SegmentationConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SegmentationConfig fields {unknown}")
        return cls(**dict(data))


# ---------------------------------------------------------------------------------------------------------------------
# Resampling helpers (exactly F.interpolate's, align_corners=False)


def _resample(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """``[B, C, r, r]`` → ``[B, C, size, size]``; the one resampling both paths use."""
    if x.shape[-1] == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _add_upsampled(term: torch.Tensor, coarse: torch.Tensor, mode: str) -> torch.Tensor:
    """``term + resample(coarse, term's size)`` (``[B, C, r, r]`` and ``[B, C, r₀, r₀]``), in place on ``term``.

    For nearest upsampling by an integer factor k, output pixel ``j`` reads source ``⌊j/k⌋`` (``F.interpolate``'s
    rule), which is a broadcast over a ``[r₀, k, r₀, k]`` view: no upsampled copy of ``coarse`` is made. On a CPU that
    copy (``F.interpolate`` of thousands of channels) cost more than the matrix products around it.
    """
    size, source = term.shape[-1], coarse.shape[-1]
    if mode != "nearest" or size % source:
        return term.add_(_resample(coarse, size, mode))
    k = size // source
    batch, channels = term.shape[:2]
    view, coarse_view = term.view(batch, channels, source, k, source, k), coarse.view(batch, channels, source, 1,
                                                                                      source, 1)
    if torch.is_grad_enabled() and (term.requires_grad or coarse.requires_grad):
        # Out of place under autograd: an in-place add through a view makes backward copy the whole base tensor.
        return (view + coarse_view).view_as(term)
    return view.add_(coarse_view).view_as(term)


def _resample_taps(source: int, target: int, mode: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices and weights, each ``[T, target]``, with ``resample(v)[j] = Σ_t weight[t,j]·v[index[t,j]]``.

    Read off ``F.interpolate`` applied to the identity (one 1-D signal per source position), so the taps are
    exactly the ones the full-map path uses; 2-D resampling is the separable product of two of these.
    """
    identity = torch.eye(source, device=device)[None]  # [1, source (signal), source (position)]
    if mode == "nearest":
        matrix = F.interpolate(identity, size=target, mode="nearest")[0]
    else:
        matrix = F.interpolate(identity, size=target, mode="linear", align_corners=False)[0]
    taps = 1 if mode == "nearest" else min(2, source)
    weight, index = matrix.topk(taps, dim=0)
    return index, weight


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


# ---------------------------------------------------------------------------------------------------------------------
# The ensemble


@dataclass
class SegmentationPrediction:
    """``labels`` int64 ``[B, H, W]`` (argmax of ``probs``; DatasetGAN took the members' majority vote, which
    breaks ties arbitrarily); ``probs`` ``[B, K, H, W]`` ensemble-mean softmax; ``uncertainty`` ``[B, H, W]``
    Jensen-Shannon divergence of the members (see ``prediction_from_logits``)."""

    labels: torch.Tensor
    probs: torch.Tensor
    uncertainty: torch.Tensor


def _grouped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped 1×1 conv (``weight`` ``[O, I/groups, 1, 1]``) of ``x`` ``[B, I, H, W]`` as one batched matrix product
    per image: ``[B, O, H, W]``. Same result as ``F.conv2d(x, weight, bias, groups=groups)``; on a CPU 3–4× faster,
    since oneDNN's grouped-conv kernel is slow for these few wide groups over many pixels."""
    batch, channels, height, width = x.shape
    out_channels = weight.shape[0]
    grouped_weight = weight.view(groups, out_channels // groups, channels // groups)
    out = torch.matmul(grouped_weight, x.reshape(batch, groups, channels // groups, height * width))
    # In place: a matmul's backward does not need its output.
    out = out.add_(bias.view(1, groups, out_channels // groups, 1))
    return out.view(batch, out_channels, height, width)


def _project(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight`` ``[O, C]`` applied to ``x`` ``[B, C, N]``: ``[B, O, N]``, as one batched matrix product.

    Not ``torch.matmul``: for a 2-D × 3-D product it multiplies the transposes, and the transposed ``[B, N, O]``
    result and its gradient then cost copies — on a CPU, at a training step's few hundred pixels per sample, several
    times the product itself.
    """
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x)


def _fold_batch_norm(norm: nn.BatchNorm2d, conv: nn.Conv2d, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``conv ∘ norm`` for an eval-mode ``norm``: ``W·(a·x + b) + c = (W·diag(a))·x + (W·b + c)``
    with ``a = γ/√(σ² + ε)``, ``b = β − μ·a``, per group of the grouped 1×1 ``conv``."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    out_channels, in_per_group = conv.weight.shape[:2]
    weight = conv.weight.view(groups, out_channels // groups, in_per_group)
    bias = conv.bias + torch.bmm(weight, shift.view(groups, in_per_group, 1)).view(-1)
    return (weight * scale.view(groups, 1, in_per_group)).view_as(conv.weight), bias


class SegmentationEnsemble(nn.Module):
    """E per-pixel MLPs ``in → hidden[0] → … → hidden[-1] → K``, each hidden layer ``Linear → ReLU → BatchNorm``.

    Parameters are stacked along the channel axis, member-major: rows ``m·w : (m+1)·w`` of a layer of width ``w``
    belong to member ``m``. ``input_conv`` is the members' first Linear as one 1×1 conv, ``hidden_convs`` and
    ``output_conv`` are grouped 1×1 convs (``groups=E``); each BatchNorm channel belongs to one member, so the
    per-member normalisation is exactly DatasetGAN's ``BatchNorm1d`` per classifier.
    """

    def __init__(self, config: SegmentationConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        E, widths = config.ensemble_size, config.hidden
        self.input_conv = nn.Conv2d(config.in_channels, E * widths[0], kernel_size=1)
        self.norms = nn.ModuleList([nn.BatchNorm2d(E * w) for w in widths])
        self.hidden_convs = nn.ModuleList([
            nn.Conv2d(E * w_in, E * w_out, kernel_size=1, groups=E) for w_in, w_out in zip(widths[:-1], widths[1:])])
        self.output_conv = nn.Conv2d(E * widths[-1], E * config.num_classes, kernel_size=1, groups=E)

        self._plan_input_projection()
        self.reset_parameters(seed)

    def _plan_input_projection(self) -> None:
        """Group the maps by the resolution they are multiplied at, and pick which groups join the top-down sum."""
        size = self.config.resolution
        groups: dict[int, list[int]] = {}
        for index, resolution in enumerate(self.config.feature_resolutions):
            groups.setdefault(min(resolution, size), []).append(index)
        self._groups_by_resolution = dict(sorted(groups.items()))
        # Nearest upsampling composes exactly along power-of-two ratios; bilinear never does (see module docstring).
        self._top_down_resolutions = [
            r for r in self._groups_by_resolution
            if self.config.upsample == "nearest" and size % r == 0 and _is_power_of_two(size // r)]

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """DatasetGAN's init (weights ~ N(0, 0.02), zero biases, identity BatchNorm), members drawn one after another
        from one generator seeded with ``seed``: deterministic, and every member starts from its own weights."""
        rng = torch.Generator().manual_seed(seed)
        E = self.config.ensemble_size
        convs = [self.input_conv, *self.hidden_convs, self.output_conv]
        for member in range(E):
            for conv in convs:
                rows = conv.out_channels // E
                block = conv.weight[member * rows:(member + 1) * rows]
                block.copy_(torch.randn(block.shape, generator=rng) * 0.02)
        for conv in convs:
            conv.bias.zero_()
        for norm in self.norms:
            norm.reset_parameters()

    # -- validation ---------------------------------------------------------------------------------------------------

    def _check_features(self, features: Sequence[torch.Tensor]) -> None:
        cfg = self.config
        if len(features) != len(cfg.feature_channels):
            raise ValueError(f"expected {len(cfg.feature_channels)} feature maps (the generator's synthesis conv "
                             f"outputs, low → high resolution), got {len(features)}")
        batch = features[0].shape[0]
        for index, (f, channels, resolution) in enumerate(
                zip(features, cfg.feature_channels, cfg.feature_resolutions)):
            expected = (batch, channels, resolution, resolution)
            if tuple(f.shape) != expected:
                raise ValueError(f"feature map {index} must have shape {list(expected)}, got {list(f.shape)}; was "
                                 f"this ensemble built for a different generator?")

    # -- forward paths ------------------------------------------------------------------------------------------------

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Synthesis features (low → high resolution) → member logits ``[B, E, K, S, S]``."""
        self._check_features(features)
        hidden = self._input_projection(features, self._first_layer_columns())
        logits = self._mlp_tail(hidden)
        batch = logits.shape[0]
        return logits.view(batch, self.config.ensemble_size, self.config.num_classes, *logits.shape[-2:])

    @property
    def pixel_count_thresholds(self) -> tuple[int, ...]:
        """The pixel counts (ascending) at which ``forward_pixels`` changes how it computes: ``r²`` of each map
        resolution that joins the top-down sum (``_coarse_projection``). Compiled, it compiles once per range."""
        return tuple(r * r for r in self._top_down_resolutions)

    def forward_pixels(self, features: Sequence[torch.Tensor], pixels: torch.Tensor,
                       pixel_chunk: Optional[int] = None, check_pixels: bool = True) -> torch.Tensor:
        """Member logits ``[B, E, K, P]`` at flat output pixels ``pixels`` (int64 ``[B, P]``, ``y·S + x``).

        Equal to ``forward(features)`` at those pixels in eval mode; in train mode BatchNorm uses the statistics of
        the sampled pixels (DatasetGAN trained on random pixel batches too).

        ``pixel_chunk``: run the per-pixel part ``pixel_chunk`` pixels at a time and, under autograd, recompute each
        chunk in backward instead of keeping its ``[B, E·w0, chunk]`` activations (eval mode only). Peak memory then
        follows the chunk, not P, for one more forward pass of the per-pixel part; the result is the same.
        ``check_pixels=False`` skips the index range check, whose device → host read stalls a GPU queue (for
        callers whose indices are valid by construction, like the edit loop).
        """
        self._check_features(features)
        if check_pixels:
            self._check_pixels(pixels, features[0].shape[0])
        if pixel_chunk is not None and pixel_chunk < 1:
            raise ValueError(f"pixel_chunk must be ≥ 1, got {pixel_chunk}")
        if pixel_chunk is not None and self.training:
            raise ValueError("chunked forward_pixels needs eval mode (call ensemble.eval()): in train mode BatchNorm "
                             "would normalise each chunk with its own statistics")
        columns = self._first_layer_columns()
        coarse = self._coarse_projection(features, columns, pixels.shape[1])
        if pixel_chunk is None or pixels.shape[1] <= pixel_chunk:
            logits = self._pixel_logits(features, columns, coarse, pixels)
        else:
            chunks = []
            for start in range(0, pixels.shape[1], pixel_chunk):
                part = pixels[:, start:start + pixel_chunk]
                if torch.is_grad_enabled():
                    chunks.append(checkpoint(self._pixel_logits, features, columns, coarse, part,
                                             use_reentrant=False))
                else:
                    chunks.append(self._pixel_logits(features, columns, coarse, part))
            logits = torch.cat(chunks, dim=-1)
        return logits.view(logits.shape[0], self.config.ensemble_size, self.config.num_classes, -1)

    def forward_naive(self, features: Sequence[torch.Tensor], pixels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Reference path (the DatasetGAN computation): upsample every map, concatenate, run each member's MLP.

        Same parameters and outputs as ``forward`` (``pixels=None``) or ``forward_pixels``, but materialises the
        ``[B, C_in, S, S]`` concatenation; for tests and baseline benchmarks only.
        """
        self._check_features(features)
        cfg = self.config
        size = cfg.resolution
        dtype = self.input_conv.weight.dtype
        stacked = torch.cat([_resample(f.to(dtype), size, cfg.upsample) for f in features], dim=1)  # [B,C_in,S,S]
        rows = stacked.flatten(2)  # [B, C_in, S·S]
        if pixels is not None:
            self._check_pixels(pixels, stacked.shape[0])
            rows = rows.gather(2, pixels[:, None, :].expand(-1, rows.shape[1], -1))
        batch, positions = rows.shape[0], rows.shape[2]
        rows = rows.transpose(1, 2).reshape(batch * positions, -1)  # [N, C_in]
        member_logits = [self._member_mlp(member, rows) for member in range(cfg.ensemble_size)]
        logits = torch.stack(member_logits, dim=1)  # [N, E, K]
        logits = logits.view(batch, positions, cfg.ensemble_size, cfg.num_classes).permute(0, 2, 3, 1)
        return logits if pixels is not None else logits.reshape(batch, cfg.ensemble_size, cfg.num_classes,
                                                                size, size)

    # -- pieces -------------------------------------------------------------------------------------------------------

    def _input_projection(self, features: Sequence[torch.Tensor], columns: Sequence[torch.Tensor]) -> torch.Tensor:
        """First Linear of all members over the full map, ReLU'd: ``[B, E·w0, S, S]``, never building the concat."""
        cfg = self.config
        size, mode = cfg.resolution, cfg.upsample
        total: Optional[torch.Tensor] = None
        top_down = set(self._top_down_resolutions)
        for resolution, maps in self._groups_by_resolution.items():
            term = self._group_term(features, columns, maps, resolution)
            if resolution in top_down:
                # Running sum of all coarser chain terms, brought up to this resolution (exact for nearest).
                # In place on the fresh product (matmul's backward does not need its output): saves a buffer.
                total = term if total is None else _add_upsampled(term, total, mode)
        if total is not None:
            total = _resample(total, size, mode)
        for resolution, maps in self._groups_by_resolution.items():
            if resolution not in top_down:
                term = _resample(self._group_term(features, columns, maps, resolution), size, mode)
                # In place: neither matmul nor interpolate needs its output for backward, so this saves a buffer.
                total = term if total is None else total.add_(term)
        assert total is not None
        total = total.add_(self.input_conv.bias[:, None, None])  # in place: see above
        return F.relu(total)

    def _group_term(self, features: Sequence[torch.Tensor], columns: Sequence[torch.Tensor], maps: list[int],
                    resolution: int) -> torch.Tensor:
        """``Σ_{i∈maps} W_i · f_i`` at ``resolution`` (maps finer than the output are resampled to it first;
        ``columns``: ``_first_layer_columns()``)."""
        mode = self.config.upsample
        weight = torch.cat([columns[i] for i in maps], dim=1)
        # Features may arrive in the generator's fp16 blocks; compute in the ensemble's dtype.
        inputs = torch.cat([_resample(features[i].to(weight.dtype), resolution, mode) for i in maps], dim=1)
        # A 1×1 conv as one matrix product: on a CPU ~1.4× faster than conv2d's kernel at these shapes.
        product = _project(weight, inputs.flatten(2))  # [B, E·w0, r·r]
        return product.view(*product.shape[:2], resolution, resolution)

    def _first_layer_columns(self) -> tuple[torch.Tensor, ...]:
        """The first Linear's columns per feature map, ``[E·w0, C_i]`` each. Views, taken once per forward:
        backward then joins their gradients with one ``cat`` (indexing the weight per map made each map's backward
        zero-fill a buffer the size of the whole weight)."""
        return self.input_conv.weight.flatten(1).split(self.config.feature_channels, dim=1)

    def _coarse_projection(self, features: Sequence[torch.Tensor], columns: Sequence[torch.Tensor], pixel_count: int
                           ) -> Optional[tuple[int, torch.Tensor]]:
        """The first Linear of the coarse maps (``r² ≤ pixel_count``) at native resolution, summed top-down:
        ``(resolution, [B, E·w0, r, r])`` at the finest coarse resolution, or ``None`` when no map is that coarse.

        Gathering a map's channels at P pixels costs ``P·C_i`` products, projecting it natively ``r²·C_i``: below
        ``r² = P`` the native projection is cheaper, and the E·w0-channel sum is then sampled once at the pixels.
        """
        mode = self.config.upsample
        coarse = [r for r in self._top_down_resolutions if r * r <= pixel_count]
        total: Optional[torch.Tensor] = None
        for resolution in coarse:
            term = self._group_term(features, columns, self._groups_by_resolution[resolution], resolution)
            total = term if total is None else _add_upsampled(term, total, mode)
        return None if total is None else (coarse[-1], total)

    def _pixel_logits(self, features: Sequence[torch.Tensor], columns: Sequence[torch.Tensor],
                      coarse: Optional[tuple[int, torch.Tensor]], pixels: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, E·K, P]`` at ``pixels``, given ``_coarse_projection``'s result."""
        hidden = self._input_projection_at(features, columns, coarse, pixels)  # [B, E·w0, P]
        return self._mlp_tail(hidden.unsqueeze(-1)).squeeze(-1)

    def _input_projection_at(self, features: Sequence[torch.Tensor], columns: Sequence[torch.Tensor],
                             coarse: Optional[tuple[int, torch.Tensor]], pixels: torch.Tensor) -> torch.Tensor:
        """First Linear of all members at the given output pixels, ReLU'd: ``[B, E·w0, P]``.

        Each map's upsampled value at an output pixel is a fixed combination of ≤ 4 native pixels (1 for nearest),
        so it is gathered from the native map; only ``C_i × P`` values per map are ever touched. The coarse maps
        come already projected and summed (``_coarse_projection``): that E·w0-channel sum is sampled once at the
        pixels. At 512² config-f with a quarter of the map as ROI this is about 10× fewer multiply-adds than
        gathering every channel first.
        """
        size, mode = self.config.resolution, self.config.upsample
        rows, cols = pixels // size, pixels % size
        total: Optional[torch.Tensor] = None
        projected_natively: set[int] = set()
        if coarse is not None:
            resolution, coarse_sum = coarse
            tap_index, tap_weight = _resample_taps(resolution, size, mode, coarse_sum.device)
            total = self._gather_resampled(coarse_sum, rows, cols, tap_index, tap_weight)
            projected_natively = {index for r in self._top_down_resolutions if r <= resolution
                                  for index in self._groups_by_resolution[r]}
        taps_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        weights, sampled = [], []
        for index, feature in enumerate(features):
            if index in projected_natively:
                continue
            resolution = feature.shape[-1]
            if resolution not in taps_cache:
                taps_cache[resolution] = _resample_taps(resolution, size, mode, feature.device)
            tap_index, tap_weight = taps_cache[resolution]
            weights.append(columns[index])
            sampled.append(self._gather_resampled(feature.to(columns[index].dtype), rows, cols, tap_index,
                                                  tap_weight))
        if sampled:
            # One product over all gathered maps: per-map products cost a [B, E·w0, P] buffer each and as much again
            # in backward. In place on the product (its backward does not need it).
            term = _project(torch.cat(weights, dim=1), torch.cat(sampled, dim=1))  # [B, E·w0, P]
            total = term if total is None else term.add_(total)
        assert total is not None
        total = total.add_(self.input_conv.bias[:, None])  # in place: see above
        return F.relu(total)

    @staticmethod
    def _gather_resampled(feature: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, tap_index: torch.Tensor,
                          tap_weight: torch.Tensor) -> torch.Tensor:
        """Values of ``resample(feature)`` at output pixels ``(rows, cols)`` (each ``[B, P]``): ``[B, C, P]``."""
        batch, channels, resolution, _ = feature.shape
        flat = feature.reshape(batch, channels, resolution * resolution)
        taps = tap_index.shape[0]
        sampled: Optional[torch.Tensor] = None
        for ty in range(taps):
            for tx in range(taps):
                source = tap_index[ty][rows] * resolution + tap_index[tx][cols]  # [B, P]
                values = flat.gather(2, source[:, None, :].expand(-1, channels, -1))
                if taps == 1:  # nearest: the single tap has weight 1; skip a [B, C, P] product
                    return values
                weight = (tap_weight[ty][rows] * tap_weight[tx][cols])[:, None, :]  # [B, 1, P]
                sampled = values * weight if sampled is None else sampled.addcmul_(values, weight)
        assert sampled is not None
        return sampled

    def _mlp_tail(self, hidden: torch.Tensor) -> torch.Tensor:
        """ReLU'd first-layer activations ``[B, E·w0, H, W]`` → logits ``[B, E·K, H, W]``.

        In eval mode each BatchNorm is an affine map with fixed statistics, so it is folded into the 1×1 conv that
        follows it (exact up to rounding): the tail then makes three passes over the full-map activations fewer,
        which is most of its time since those passes are memory-bound.
        """
        layers = [*self.hidden_convs, self.output_conv]
        groups = self.config.ensemble_size
        if self.training:
            for conv, norm in zip(layers, self.norms):
                hidden = _grouped_linear(norm(hidden), conv.weight, conv.bias, groups)
                if conv is not self.output_conv:
                    hidden = F.relu(hidden)
            return hidden
        for conv, norm in zip(layers, self.norms):
            weight, bias = _fold_batch_norm(norm, conv, groups)
            hidden = _grouped_linear(hidden, weight, bias, groups)
            if conv is not self.output_conv:
                hidden = F.relu_(hidden)  # in place: a matmul's backward does not need its output
        return hidden

    def _member_mlp(self, member: int, rows: torch.Tensor) -> torch.Tensor:
        """Member ``member``'s MLP on feature rows ``[N, C_in]`` → logits ``[N, K]`` (reference path)."""
        E = self.config.ensemble_size
        convs = [self.input_conv, *self.hidden_convs, self.output_conv]
        x = rows
        for layer, conv in enumerate(convs):
            width = conv.out_channels // E
            rows_of_member = slice(member * width, (member + 1) * width)
            x = F.linear(x, conv.weight[rows_of_member, :, 0, 0], conv.bias[rows_of_member])
            if layer < len(self.norms):
                norm = self.norms[layer]
                # Slices of the running buffers are views, so train mode updates this member's statistics in place.
                x = F.batch_norm(F.relu(x), norm.running_mean[rows_of_member], norm.running_var[rows_of_member],
                                 norm.weight[rows_of_member], norm.bias[rows_of_member], training=self.training,
                                 momentum=norm.momentum, eps=norm.eps)
        return x

    def _check_pixels(self, pixels: torch.Tensor, batch: int) -> None:
        limit = self.config.resolution ** 2
        if pixels.dtype != torch.int64 or pixels.ndim != 2 or pixels.shape[0] != batch:
            raise ValueError(f"pixels must be int64 [B={batch}, P] flat indices y·S + x, got "
                             f"{pixels.dtype} {list(pixels.shape)}")
        if pixels.numel() and (int(pixels.min()) < 0 or int(pixels.max()) >= limit):
            raise ValueError(f"pixel indices must be in 0..{limit - 1} (S={self.config.resolution})")

    @torch.no_grad()
    def subset(self, members: int) -> "SegmentationEnsemble":
        """A new ensemble of this one's first ``members`` members (copies of their weights and BatchNorm
        statistics, same mode): exactly those members' logits at ``members/E`` of the cost. For interactive paths
        that trade the ensemble's averaging for speed (an edit's loss, a slider preview's mask)."""
        E = self.config.ensemble_size
        if not 1 <= members <= E:
            raise ValueError(f"members must be in 1..{E}, got {members}")
        smaller = SegmentationEnsemble(replace(self.config, ensemble_size=members))
        for name, target in smaller.state_dict().items():
            source = self.state_dict()[name]
            target.copy_(source if source.ndim == 0 else source[:target.shape[0]])  # member-major rows
        return smaller.to(next(self.parameters()).device).train(self.training)

    # -- inference ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, features: Sequence[torch.Tensor], pixel_chunk: Optional[int] = None) -> SegmentationPrediction:
        """Labels, ensemble-mean probabilities and per-pixel uncertainty of ``features``.

        ``pixel_chunk``: evaluate that many output pixels at a time through ``forward_pixels`` so the
        ``[B, E·w0, S, S]`` activations never exist at once (eval mode only: BatchNorm must use running stats).
        """
        if pixel_chunk is None:
            return prediction_from_logits(self(features))
        if self.training:
            raise ValueError("chunked prediction needs eval mode (call ensemble.eval()): in train mode BatchNorm "
                             "would normalise each chunk with its own statistics")
        if pixel_chunk < 1:
            raise ValueError(f"pixel_chunk must be ≥ 1, got {pixel_chunk}")
        size = self.config.resolution
        batch, device = features[0].shape[0], features[0].device
        chunks = []
        for start in range(0, size * size, pixel_chunk):
            pixels = torch.arange(start, min(start + pixel_chunk, size * size), device=device)
            chunks.append(self.forward_pixels(features, pixels.expand(batch, -1)))
        logits = torch.cat(chunks, dim=-1)
        return prediction_from_logits(logits.view(*logits.shape[:3], size, size))


def ensemble_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Member logits ``[B, E, K, ...]`` → log of the ensemble-mean softmax ``[B, K, ...]`` (for NLL losses)."""
    return torch.logsumexp(F.log_softmax(logits, dim=2), dim=1) - math.log(logits.shape[1])


def prediction_from_logits(logits: torch.Tensor) -> SegmentationPrediction:
    """Member logits ``[B, E, K, ...]`` → ``SegmentationPrediction`` over the trailing (pixel) dims.

    Uncertainty is the Jensen-Shannon divergence of the members, ``H(mean_m p_m) − mean_m H(p_m)`` (in nats,
    0 when all members agree, at most ``log E``): DatasetGAN ranked samples by this quantity, though it took the
    first entropy of the softmax of the mean *logits*; averaging probabilities makes it a true, non-negative JS.
    """
    log_probs = F.log_softmax(logits.float(), dim=2)
    mean_log_probs = torch.logsumexp(log_probs, dim=1) - math.log(logits.shape[1])
    mean_probs = mean_log_probs.exp()
    entropy_of_mean = -(mean_probs * mean_log_probs).sum(dim=1)
    mean_entropy = -(log_probs.exp() * log_probs).sum(dim=2).mean(dim=1)
    return SegmentationPrediction(labels=mean_probs.argmax(dim=1), probs=mean_probs,
                                  uncertainty=(entropy_of_mean - mean_entropy).clamp_min(0.0))


def image_uncertainty(prediction: SegmentationPrediction, top_fraction: float = 0.1) -> torch.Tensor:
    """Per-image active-learning score ``[B]``: mean of the top ``top_fraction`` pixel uncertainties (DatasetGAN's
    ranking used the top 10 %), so a small, confusing part outweighs a large, easy background."""
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    per_pixel = prediction.uncertainty.flatten(1)
    count = max(1, int(per_pixel.shape[1] * top_fraction))
    return per_pixel.topk(count, dim=1).values.mean(dim=1)


def uncertainty_map(uncertainty: torch.Tensor, size: int) -> tuple[np.ndarray, float]:
    """Per-pixel ensemble disagreement ``[h, w]`` (Jensen-Shannon divergence, nats) → ``(uint8 [size, size],
    peak)``: 0 = the members agree … 255 = ``peak``, the image's largest value. Relative to the image, not to the
    ceiling ``log E``: a useful branch disagrees by hundredths of a nat, which an absolute 8-bit scale would round
    to nothing, and "where to look" is a question about this image; ``peak`` gives the absolute values back
    (``value / 255 * peak``). Bilinear resize: it is a smooth field, not class indices."""
    field = uncertainty.detach().float().clamp_min(0.0)[None, None]
    if field.shape[-1] != size or field.shape[-2] != size:
        field = F.interpolate(field, size=(size, size), mode="bilinear", align_corners=False)
    peak = float(field.max())
    scaled = field[0, 0] / peak * 255 if peak > 0 else torch.zeros_like(field[0, 0])
    return scaled.round().clamp(0, 255).to(torch.uint8).cpu().numpy(), peak


@torch.no_grad()
def predict_labels(generator: nn.Module, ensemble: SegmentationEnsemble, ws: torch.Tensor,
                   pixel_chunk: Optional[int] = None, progress: Optional[ProgressCallback] = None) -> torch.Tensor:
    """The ensemble's labels ``int64 [N, r, r]`` (on the CPU) of the images of latents ``ws`` ``[N, num_ws, w_dim]``,
    one image at a time (with ``pixel_chunk``, memory stays bounded at any resolution); reports
    ``ProgressEvent("evaluate", i, N)``."""
    ensemble.eval()
    labels = []
    for index in range(len(ws)):
        _image, features = generator.synthesis(ws[index:index + 1], noise_mode="const", return_features=True)
        labels.append(ensemble.predict(features, pixel_chunk=pixel_chunk).labels[0].cpu())
        report(progress, ProgressEvent("evaluate", index + 1, len(ws)))
    return torch.stack(labels)


# ---------------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class SegTrainConfig:
    """Hyper-parameters of ``train_segmentation``.

    Each step draws ``samples_per_step`` annotated samples and ``pixels_per_step`` pixels spread evenly over them,
    with replacement: uniformly (``class_balance=0``) or with probability ∝ ``n_k^−class_balance``, ``n_k`` the pixels
    of the pixel's class in its sample (1: every class present in the sample equally often, so small parts are not
    left to chance when a step samples few pixels). Adam at ``lr`` (DatasetGAN's 1e-3), constant or, with
    ``lr_schedule='cosine'``, decayed to 0 over ``max_steps``. Every ``eval_every`` steps the monitored
    loss is checked: the held-out split's (``val_fraction`` > 0) or else the mean training loss of the last window;
    after ``min_steps``, ``patience`` checks without an improvement of ``min_delta`` stop training
    (``patience=None``: always run ``max_steps``). Native-resolution features are cached in fp16 when all samples fit
    in ``feature_cache_bytes``, else recomputed by the frozen generator every step. ``reinitialise``: start from
    ``reset_parameters(seed)`` (DatasetGAN retrains from scratch when annotations change).

    Memory is set by ``pixels_per_step``, not by the resolution: the first layer's ``[pixels, E·hidden[0]]``
    activations and their gradients dominate (≈ 60 KB per sampled pixel at E=10, width 256). Measured on CPU at 128²
    (C_in 1728, K=32, defaults otherwise): peak RSS +0.67 GiB over the process at 4096 pixels, +0.94 at 8192,
    +1.42 at 16384. ``eval_pixel_chunk`` bounds evaluation the same way.
    """

    max_steps: int = 2000
    lr: float = 1e-3
    samples_per_step: int = 2
    pixels_per_step: int = 4096
    class_balance: float = 0.0
    lr_schedule: str = "constant"
    val_fraction: float = 0.0
    eval_every: int = 50
    patience: Optional[int] = 8
    min_delta: float = 1e-3
    min_steps: int = 200
    seed: int = 0
    device: Optional[str] = None
    feature_cache_bytes: int = 1 << 30
    eval_pixel_chunk: int = 1 << 12
    reinitialise: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "samples_per_step", "pixels_per_step", "eval_every", "eval_pixel_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.class_balance <= 1:
            raise ValueError(f"class_balance must be in [0, 1], got {self.class_balance}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be ≥ 1 or None, got {self.patience}")
        if self.min_steps < 0 or self.min_delta < 0 or self.feature_cache_bytes < 0:
            raise ValueError("min_steps, min_delta and feature_cache_bytes must be ≥ 0")


@dataclass
class SegTrainResult:
    """Outcome of ``train_segmentation``.

    ``history``: one dict per step (``step``, ``loss``, ``pixel_acc``; plus ``monitor`` and, with a held-out split,
    ``val_loss`` / ``val_pixel_acc`` on check steps). ``member_loss`` / ``member_pixel_acc`` ``[E]`` and ``mean_iou``
    (of the ensemble prediction) are measured at the end, in eval mode, on ``evaluated_on`` (``'validation'`` or
    ``'training'``).
    """

    history: list[dict[str, float]]
    member_loss: list[float]
    member_pixel_acc: list[float]
    mean_iou: float
    steps: int
    stopped_early: bool
    best_monitor: float
    evaluated_on: str
    train_indices: list[int]
    val_indices: list[int]
    cached_features: bool


_CACHE_FILL_BATCH = 4


class _FeatureSource:
    """Synthesis features of the annotated latents: sliced from an fp16 cache, or recomputed per request.

    The cache keeps native resolutions (the upsampled concatenation DatasetGAN cached needed 76+ GB at 512²);
    fp16 is the precision NVlabs runs these activations in anyway (``num_fp16_res``, with ``conv_clamp=256``).
    """

    def __init__(self, generator: Any, latents: torch.Tensor, device: torch.device, cache_bytes: int) -> None:
        self.generator = generator
        self.latents = latents
        self.device = device
        self.generator_device = next(generator.parameters()).device
        per_sample = sum(c * r * r for c, r in zip(generator.feature_channels, generator.feature_resolutions)) * 2
        self.cache: Optional[list[torch.Tensor]] = None
        if per_sample * len(latents) <= cache_bytes:
            # Filled in place, a few latents per generator call, so the peak is the cache plus one small batch.
            self.cache = [torch.empty((len(latents), c, r, r), dtype=torch.float16, device=device)
                          for c, r in zip(generator.feature_channels, generator.feature_resolutions)]
            for start in range(0, len(latents), _CACHE_FILL_BATCH):
                indices = torch.arange(start, min(start + _CACHE_FILL_BATCH, len(latents)))
                for stored, computed in zip(self.cache, self._synthesise(indices, torch.float16)):
                    stored[start:start + len(indices)] = computed

    @torch.no_grad()
    def _synthesise(self, indices: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
        ws = self.latents[indices].to(self.generator_device, torch.float32)
        _, features = self.generator.synthesis(ws, noise_mode="const", return_features=True)
        return [f.to(self.device, dtype) for f in features]

    def __call__(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """Float32 features of samples ``indices`` on the training device."""
        if self.cache is None:
            return self._synthesise(indices, torch.float32)
        on_cache = indices.to(self.cache[0].device)
        return [maps[on_cache].float() for maps in self.cache]


def _check_training_inputs(generator: Any, ensemble: SegmentationEnsemble, latents: torch.Tensor,
                           masks: torch.Tensor) -> None:
    cfg = ensemble.config
    if (tuple(generator.feature_channels) != cfg.feature_channels
            or tuple(generator.feature_resolutions) != cfg.feature_resolutions):
        raise ValueError("the ensemble was built for different generator features: build it with "
                         "SegmentationConfig.from_generator(generator, ...)")
    expected = (generator.num_ws, generator.config.w_dim)
    if latents.ndim != 3 or tuple(latents.shape[1:]) != expected or not latents.dtype.is_floating_point:
        raise ValueError(f"latents must be float W+ codes [N, {expected[0]}, {expected[1]}], got "
                         f"{latents.dtype} {list(latents.shape)}")
    if masks.ndim != 3 or masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise ValueError(f"masks must be integer class indices [N, h, w], got {masks.dtype} {list(masks.shape)}")
    if masks.shape[0] != latents.shape[0]:
        raise ValueError(f"need one mask per latent: {latents.shape[0]} latents, {masks.shape[0]} masks")
    if masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must be square like the generator's canvas (pad them), got {list(masks.shape[1:])}")
    if len(latents) < 1:
        raise ValueError("need at least one annotated sample")
    if int(masks.min()) < 0 or int(masks.max()) >= cfg.num_classes:
        raise ValueError(f"mask labels must be in 0..{cfg.num_classes - 1}, found {int(masks.min())}.."
                         f"{int(masks.max())}")
    if not torch.isfinite(latents).all():
        raise ValueError("latents contain NaN or infinite values")


def _split(count: int, val_fraction: float, rng: torch.Generator) -> tuple[list[int], list[int]]:
    if val_fraction == 0:
        return list(range(count)), []
    val_count = round(count * val_fraction)
    if val_count < 1 or val_count >= count:
        raise ValueError(f"val_fraction={val_fraction} of {count} samples leaves {val_count} for validation and "
                         f"{count - val_count} for training; both need at least one (annotate more samples or set "
                         f"val_fraction=0 to stop on the training-loss plateau)")
    order = torch.randperm(count, generator=rng).tolist()
    return sorted(order[val_count:]), sorted(order[:val_count])


@torch.no_grad()
def _evaluate(ensemble: SegmentationEnsemble, features_of: _FeatureSource, masks: torch.Tensor, indices: list[int],
              pixel_chunk: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-member CE ``[E]``, per-member pixel accuracy ``[E]`` and the ensemble's mean IoU over every pixel of the
    samples ``indices`` (``masks`` already at the segmentation resolution), in eval mode, ``pixel_chunk`` at a time."""
    was_training = ensemble.training
    ensemble.eval()
    cfg = ensemble.config
    size, E = cfg.resolution, cfg.ensemble_size
    loss_sum = torch.zeros(E, dtype=torch.float64)
    correct = torch.zeros(E, dtype=torch.float64)
    predicted, targets = [], []
    for index in indices:
        features = features_of(torch.tensor([index]))
        target = masks[index].flatten()
        labels = torch.empty_like(target)
        # The coarse maps' projection once per sample, the per-pixel part a chunk at a time (one forward_pixels call
        # per chunk projected the coarse maps again for every chunk: most of an evaluation's time).
        all_pixels = torch.arange(size * size, device=target.device)[None]
        logits = ensemble.forward_pixels(features, all_pixels, pixel_chunk=pixel_chunk)[0]  # [E, K, S·S]
        for start in range(0, size * size, pixel_chunk):
            pixels = slice(start, start + pixel_chunk)
            chunk_logits, chunk_target = logits[..., pixels], target[pixels]
            loss_sum += F.cross_entropy(chunk_logits, chunk_target.expand(E, -1),
                                        reduction="none").sum(1).double().cpu()
            correct += (chunk_logits.argmax(1) == chunk_target).sum(1).double().cpu()
            labels[pixels] = prediction_from_logits(chunk_logits[None]).labels[0]
        predicted.append(labels.cpu())
        targets.append(target.cpu())
    ensemble.train(was_training)
    pixel_count = len(indices) * size * size
    miou = mean_iou(torch.stack(predicted), torch.stack(targets), cfg.num_classes)
    return loss_sum / pixel_count, correct / pixel_count, miou


def _pixel_weights(masks: torch.Tensor, num_classes: int, class_balance: float) -> torch.Tensor:
    """Sampling weights ``[N, S·S]`` of the pixels of ``masks`` ``[N, S, S]``: ``n_k^−class_balance``, ``n_k`` the
    count of the pixel's class in its sample."""
    flat = masks.flatten(1)
    counts = torch.zeros(len(masks), num_classes, dtype=torch.float64, device=masks.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    return counts.gather(1, flat).pow(-class_balance).float()


def _sample_stream(indices: list[int], batch: int, rng: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of sample indices, reshuffled every pass (a batch may straddle two passes)."""
    pending: list[int] = []
    while True:
        while len(pending) < batch:
            pending += [indices[i] for i in torch.randperm(len(indices), generator=rng).tolist()]
        yield torch.tensor(pending[:batch])
        pending = pending[batch:]


def train_segmentation(generator: Any, ensemble: SegmentationEnsemble, latents: torch.Tensor, masks: torch.Tensor,
                       config: Optional[SegTrainConfig] = None,
                       progress: Optional[ProgressCallback] = None) -> SegTrainResult:
    """Fit ``ensemble`` to annotated samples of the frozen ``generator``.

    ``latents`` ``[N, num_ws, w_dim]`` W+ codes of the annotated images; ``masks`` int ``[N, h, w]`` their labels
    (square, resized with nearest to the segmentation resolution). Every member is trained with its own
    cross-entropy on the same sampled pixels. The generator is used in eval mode under ``no_grad`` and left in the
    mode it came in; the ensemble is moved to the training device and left in eval mode. A ``Cancelled`` raised by
    ``progress`` propagates.
    """
    config = config or SegTrainConfig()
    _check_training_inputs(generator, ensemble, latents, masks)
    device = torch.device(config.device) if config.device else next(ensemble.parameters()).device
    ensemble.to(device)
    cfg = ensemble.config
    rng = torch.Generator().manual_seed(config.seed)
    train_indices, val_indices = _split(len(latents), config.val_fraction, rng)
    if config.reinitialise:
        ensemble.reset_parameters(config.seed)
    size = cfg.resolution
    masks_at_size = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long().to(device)
    samples_per_step = min(config.samples_per_step, len(train_indices))
    pixels_per_sample = max(1, config.pixels_per_step // samples_per_step)
    # On the CPU, where ``rng`` draws; None: uniform draws (torch.randint, as before class balancing existed).
    pixel_weights = (_pixel_weights(masks_at_size.cpu(), cfg.num_classes, config.class_balance)
                     if config.class_balance else None)

    was_training = generator.training
    generator.eval()
    try:
        features_of = _FeatureSource(generator, latents, device, config.feature_cache_bytes)
        optimiser = torch.optim.Adam(ensemble.parameters(), lr=config.lr)
        schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.max_steps)
                    if config.lr_schedule == "cosine" else None)
        stream = _sample_stream(train_indices, samples_per_step, rng)
        history: list[dict[str, float]] = []
        window: list[float] = []
        best_monitor, checks_without_improvement, stopped_early, step = math.inf, 0, False, 0
        for step in range(1, config.max_steps + 1):
            ensemble.train()
            batch = next(stream)
            features = features_of(batch)
            if pixel_weights is None:
                pixels = torch.randint(0, size * size, (len(batch), pixels_per_sample), generator=rng)
            else:
                pixels = torch.multinomial(pixel_weights[batch], pixels_per_sample, replacement=True, generator=rng)
            pixels = pixels.to(device)
            targets = masks_at_size[batch.to(device)].flatten(1).gather(1, pixels)  # [b, P]
            logits = ensemble.forward_pixels(features, pixels)  # [b, E, K, P]
            member_targets = targets[:, None, :].expand(-1, cfg.ensemble_size, -1)
            member_loss = F.cross_entropy(logits.transpose(1, 2), member_targets, reduction="none").mean(dim=(0, 2))
            optimiser.zero_grad(set_to_none=True)
            # Members share no parameters, so the sum gives each exactly the gradient of its own loss.
            member_loss.sum().backward()
            optimiser.step()
            if schedule is not None:
                schedule.step()

            member_loss = member_loss.detach()
            record = {"step": step, "loss": float(member_loss.mean()),
                      "pixel_acc": float((logits.argmax(dim=2) == member_targets).float().mean())}
            window.append(record["loss"])
            if step % config.eval_every == 0 or step == config.max_steps:
                if val_indices:
                    val_loss, val_acc, _ = _evaluate(ensemble, features_of, masks_at_size, val_indices,
                                                     config.eval_pixel_chunk)
                    record["val_loss"], record["val_pixel_acc"] = float(val_loss.mean()), float(val_acc.mean())
                    record["monitor"] = record["val_loss"]
                else:
                    record["monitor"] = sum(window) / len(window)
                window = []
                if record["monitor"] < best_monitor - config.min_delta:
                    best_monitor, checks_without_improvement = record["monitor"], 0
                else:
                    checks_without_improvement += 1
                stopped_early = (config.patience is not None and step >= config.min_steps
                                 and checks_without_improvement >= config.patience and step < config.max_steps)
            history.append(record)
            report(progress, ProgressEvent(stage="train_segmentation", step=step, total=config.max_steps,
                                           losses={k: v for k, v in record.items() if k != "step"}))
            if stopped_early:
                break

        evaluated_on = "validation" if val_indices else "training"
        member_loss_final, member_acc_final, miou = _evaluate(
            ensemble, features_of, masks_at_size, val_indices or train_indices, config.eval_pixel_chunk)
    finally:
        generator.train(was_training)
    ensemble.eval()
    return SegTrainResult(history=history, member_loss=member_loss_final.tolist(),
                          member_pixel_acc=member_acc_final.tolist(), mean_iou=miou, steps=step,
                          stopped_early=stopped_early, best_monitor=best_monitor, evaluated_on=evaluated_on,
                          train_indices=train_indices, val_indices=val_indices,
                          cached_features=features_of.cache is not None)


# ---------------------------------------------------------------------------------------------------------------------
# Saving


def save_segmentation(path: str | Path, ensemble: SegmentationEnsemble, schema: LabelSchema,
                      meta: Optional[dict[str, Any]] = None) -> None:
    """Write ``ensemble`` and its label ``schema`` to one project-format file (kind ``'segmentation'``)."""
    if schema.num_classes != ensemble.config.num_classes:
        raise ValueError(f"schema {schema.name!r} has {schema.num_classes} classes but the ensemble predicts "
                         f"{ensemble.config.num_classes}")
    config = {"segmentation": ensemble.config.to_dict(), "schema": schema.to_dict()}
    save_checkpoint(path, CHECKPOINT_KIND, ensemble.state_dict(), config, meta)


def load_segmentation(path: str | Path, device: torch.device | str = "cpu"
                      ) -> tuple[SegmentationEnsemble, LabelSchema, dict[str, Any]]:
    """Inverse of ``save_segmentation``: ``(ensemble in eval mode on device, schema, meta)``."""
    state_dict, config, meta = read_checkpoint(path, expected_kind=CHECKPOINT_KIND)
    ensemble = SegmentationEnsemble(SegmentationConfig.from_dict(config["segmentation"]))
    ensemble.load_state_dict(state_dict)
    return ensemble.to(device).eval(), LabelSchema.from_dict(config["schema"]), dict(meta or {})
