"""The demo's ground-truth edits: what the renderer can change exactly, and the mask statistics that check a vector
moves the right parts the right way.

Masks: int ``[B, H, W]`` toon-face labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from editor_core.domains import toonface
from editor_core.domains.toonface import PARAM_SCHEMA, ToonFaceParams, ToonPart


def class_area(masks: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Pixels of ``classes`` in each mask ``[B, H, W]`` → ``[B]`` float."""
    return in_classes(masks, classes).flatten(1).sum(1).float()


def class_width(masks: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Columns holding at least one pixel of ``classes`` → ``[B]`` float (robust to stray pixels inside the span)."""
    return in_classes(masks, classes).any(dim=1).sum(1).float()


def class_elevation(masks: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Height of the centroid of ``classes`` above the bottom edge, in pixels → ``[B]`` (NaN where absent)."""
    inside = in_classes(masks, classes).float()
    rows = torch.arange(masks.shape[1], device=masks.device, dtype=torch.float32)
    mean_row = (inside.sum(2) * rows).sum(1) / inside.flatten(1).sum(1)   # 0/0 = NaN for an absent class
    return masks.shape[1] - mean_row


def in_classes(masks: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Bool, shaped like ``masks``: where a pixel's label is one of ``classes``."""
    return torch.isin(masks, torch.as_tensor(list(classes), dtype=masks.dtype, device=masks.device))


MASK_STATISTICS: dict[str, Callable[[torch.Tensor, Sequence[int]], torch.Tensor]] = {
    "area": class_area, "width": class_width, "elevation": class_elevation}


@dataclass(frozen=True)
class GroundTruthEdit:
    """An edit the renderer can make exactly: parameter ``param`` from ``before`` to ``after``, all else equal.

    ``classes``: the vector's edited classes (the parts it is about; skin and background are left out so that the
    region of interest stays local). ``statistic`` of ``measured_classes`` times ``sign`` (``effect``) is a number
    the edit raises on every face, read off a mask: how tests and the report check that a vector moves the right
    parts the right way.
    """

    name: str
    param: str
    before: float
    after: float
    classes: tuple[int, ...]
    measured_classes: tuple[int, ...]
    statistic: str
    sign: int
    description: str

    def __post_init__(self) -> None:
        if self.param not in PARAM_SCHEMA:
            raise ValueError(f"unknown toon-face parameter {self.param!r}")
        spec = PARAM_SCHEMA[self.param]
        if not (spec.low <= self.before <= spec.high and spec.low <= self.after <= spec.high):
            raise ValueError(f"{self.name}: before/after must lie in [{spec.low}, {spec.high}]")
        if self.statistic not in MASK_STATISTICS or self.sign not in (-1, 1):
            raise ValueError(f"{self.name}: statistic must be one of {sorted(MASK_STATISTICS)} and sign ±1")

    @property
    def delta(self) -> float:
        return self.after - self.before

    def start_range(self) -> tuple[float, float]:
        """Values of ``param`` from which a change of ``delta`` stays inside the parameter's range."""
        spec = PARAM_SCHEMA[self.param]
        return (spec.low, spec.high - self.delta) if self.delta > 0 else (spec.low - self.delta, spec.high)

    def applied_to(self, params: ToonFaceParams) -> ToonFaceParams:
        """``params`` with this edit's change of ``param`` (clamped to the range against float rounding)."""
        spec = PARAM_SCHEMA[self.param]
        return toonface.with_param(params, self.param, (params[self.param] + self.delta).clamp(spec.low, spec.high))

    def effect(self, masks: torch.Tensor) -> torch.Tensor:
        """``[B]``: the signed statistic that this edit increases."""
        return self.sign * MASK_STATISTICS[self.statistic](masks, self.measured_classes)


_MOUTH = (ToonPart.UPPER_LIP, ToonPart.LOWER_LIP, ToonPart.TEETH, ToonPart.MOUTH_INSIDE)
_EYES = (ToonPart.LEFT_EYE_WHITE, ToonPart.RIGHT_EYE_WHITE, ToonPart.LEFT_IRIS, ToonPart.RIGHT_IRIS)
_EYEBROWS = (ToonPart.LEFT_EYEBROW, ToonPart.RIGHT_EYEBROW)


DEMO_EDITS: tuple[GroundTruthEdit, ...] = (
    GroundTruthEdit("smile", "smile", -0.4, 0.8, _MOUTH, _MOUTH, "width", 1,
                    "Smile: the mouth corners go up, the mouth widens and the lips thin."),
    GroundTruthEdit("open_mouth", "mouth_open", 0.0, 0.8, _MOUTH, (ToonPart.TEETH, ToonPart.MOUTH_INSIDE), "area", 1,
                    "Open mouth: the lips part and show the upper teeth and the mouth inside."),
    GroundTruthEdit("bigger_eyes", "eye_size", 0.85, 1.25, _EYES, _EYES, "area", 1,
                    "Bigger eyes: eye whites and irises grow by about half."),
    GroundTruthEdit("raised_eyebrows", "eyebrow_height", -0.6, 0.8, _EYEBROWS, _EYEBROWS, "elevation", 1,
                    "Raised eyebrows: both brows move up from low to high."),
    GroundTruthEdit("shorter_hair", "hair_length", 0.9, 0.15, (ToonPart.HAIR,), (ToonPart.HAIR,), "area", -1,
                    "Shorter hair: shoulder-length hair cut to the ears; neck, shirt and backdrop show."),
    GroundTruthEdit("bigger_nose", "nose_size", 0.8, 1.35, (ToonPart.NOSE,), (ToonPart.NOSE,), "area", 1,
                    "Bigger nose: the nose grows by about 70 %."),
)
VECTOR_SCALE_RANGE = (-1.0, 1.5)   # 1 = the learned edit; negative scales reverse it


def transfer_overrides(count: int, seed: int, edits: Sequence[GroundTruthEdit] = DEMO_EDITS
                       ) -> dict[str, torch.Tensor]:
    """For every edit, its parameter drawn uniformly from ``start_range``: one face set serves all vectors, and each
    vector's change keeps every face inside the renderer's range."""
    rng = torch.Generator().manual_seed(seed)
    overrides = {}
    for edit in edits:
        low, high = edit.start_range()
        overrides[edit.param] = low + (high - low) * torch.rand(count, generator=rng)
    return overrides
