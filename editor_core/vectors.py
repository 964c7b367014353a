"""Edit vectors: a latent change δW+ learned on one generator, reusable on other images at a scale ε.

EditGAN's key observation is that an edit found by optimisation on one image, expressed as the change of its W+ latent,
transfers to other images of the same generator: ``w' = w + ε·δ``. Vectors compose by addition.
"""
from __future__ import annotations

import datetime as _dt
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Hashable, Sequence

import torch

from editor_core.checkpoints import read_checkpoint, save_checkpoint

VECTOR_KIND = "edit_vector"


class VectorGeneratorMismatch(ValueError):
    """An edit vector was applied to a generator other than the one it was learned on."""


@dataclass
class EditVectorInfo:
    """Everything about a vector except its numbers (stored as JSON beside the tensor)."""

    name: str
    generator_id: str
    edited_classes: list[int]
    source: dict = field(default_factory=dict)  # where it was learned: e.g. {"kind": "sample", "seed": 3}
    scale_range: tuple[float, float] = (-4.0, 4.0)  # the release's slider range for a fresh vector
    author: str = ""
    description: str = ""
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("an edit vector needs a non-empty name")
        lo, hi = (float(v) for v in self.scale_range)
        if not lo < hi:
            raise ValueError(f"scale_range must be (low, high) with low < high, got {self.scale_range}")
        self.scale_range = (lo, hi)
        self.edited_classes = sorted({int(c) for c in self.edited_classes})


@dataclass
class EditVector:
    """δW+ ``[num_ws, w_dim]`` plus its metadata."""

    delta: torch.Tensor
    info: EditVectorInfo

    def __post_init__(self) -> None:
        if self.delta.ndim != 2:
            raise ValueError(f"an edit vector's delta must be [num_ws, w_dim], got shape {tuple(self.delta.shape)}")
        if not torch.isfinite(self.delta).all():
            raise ValueError(f"edit vector '{self.info.name}' contains NaN or infinite values")

    @property
    def name(self) -> str:
        return self.info.name

    def check_generator(self, generator_id: str) -> None:
        """Raise :class:`VectorGeneratorMismatch` unless this vector was learned on ``generator_id``."""
        if self.info.generator_id != generator_id:
            raise VectorGeneratorMismatch(
                f"edit vector '{self.name}' was learned on generator {self.info.generator_id}, "
                f"not on {generator_id}: vectors only apply to the generator they were learned on")

    def save(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        meta = asdict(self.info)
        meta["scale_range"] = list(self.info.scale_range)
        save_checkpoint(path, VECTOR_KIND, {"delta": self.delta.detach().cpu()},
                        config={"num_ws": self.delta.shape[0], "w_dim": self.delta.shape[1]}, meta=meta,
                        dtype=dtype)
        return Path(path)

    def to_bytes(self) -> bytes:
        """The file :meth:`save` writes, as bytes (what the studio stores)."""
        with tempfile.TemporaryDirectory() as tmp:
            return self.save(Path(tmp) / "vector.safetensors").read_bytes()

    @classmethod
    def load(cls, path: str | Path) -> "EditVector":
        tensors, _config, meta = read_checkpoint(path, expected_kind=VECTOR_KIND)
        meta = dict(meta)
        meta["scale_range"] = tuple(meta["scale_range"])
        return cls(delta=tensors["delta"].float(), info=EditVectorInfo(**meta))


def scale_rows(requests: Sequence[Sequence[tuple[Hashable, EditVector, float]]]
               ) -> tuple[list[EditVector], torch.Tensor]:
    """Several requests' ``(key, vector, scale)`` lists → ``(vectors, scales [B, V])`` over the union of their
    vectors (by key, first seen first), for one batched pass: a vector that only another request uses gets scale 0
    in this request's row."""
    union = {key: vector for request in requests for key, vector, _scale in request}
    columns = {key: column for column, key in enumerate(union)}
    scales = torch.zeros(len(requests), len(union))
    for row, request in enumerate(requests):
        for key, _vector, scale in request:
            scales[row, columns[key]] += scale
    return list(union.values()), scales


def combined_delta(vectors: Sequence[EditVector], scales: torch.Tensor | Sequence[float],
                   generator_id: str) -> torch.Tensor:
    """Σᵢ εᵢ·δᵢ for one image (``scales [V]``) or a batch (``scales [B, V]``) → ``[num_ws, w_dim]`` or ``[B, ...]``.

    Addition is commutative, so the result does not depend on the order of the vectors (paper: edits compose).
    """
    if not vectors:
        raise ValueError("no edit vectors given")
    for vector in vectors:
        vector.check_generator(generator_id)
    shapes = {tuple(v.delta.shape) for v in vectors}
    if len(shapes) != 1:
        raise ValueError(f"edit vectors have different shapes {sorted(shapes)}")
    deltas = torch.stack([v.delta for v in vectors])  # [V, num_ws, w_dim]
    scales = torch.as_tensor(scales, dtype=deltas.dtype, device=deltas.device)
    if scales.shape[-1] != len(vectors):
        raise ValueError(f"got {scales.shape[-1]} scales for {len(vectors)} vectors")
    if not torch.isfinite(scales).all():
        raise ValueError("scales must be finite numbers")
    return torch.einsum("...v,vnd->...nd", scales, deltas)
