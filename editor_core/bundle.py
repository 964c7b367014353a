"""Model bundles: a folder with a generator and what the studio learned for it.

A bundle folder holds ``generator.safetensors`` and, optionally, ``segmentation.safetensors`` (with its label
schema), ``encoder.safetensors``, ``annotations.safetensors`` (annotated samples: W+ latents and masks) and
``vectors/*.safetensors`` (edit vectors). The studio ships one, the demo bundle in ``demo/``; users make their own
from imported checkpoints with the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from editor_core.checkpoints import generator_fingerprint, load_generator, read_checkpoint, save_checkpoint
from editor_core.editing import EditingModels
from editor_core.schema import LabelSchema
from editor_core.vectors import EditVector

DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "demo"
ANNOTATIONS_KIND = "annotations"
LATENTS_KIND = "latents"


@dataclass
class AnnotatedSamples:
    """Annotated generator samples: ``latents`` ``[N, num_ws, w_dim]``, ``masks`` int64 ``[N, H, W]``."""

    latents: torch.Tensor
    masks: torch.Tensor
    schema: LabelSchema
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.latents.ndim != 3 or self.masks.ndim != 3 or len(self.latents) != len(self.masks):
            raise ValueError(f"need latents [N, num_ws, w_dim] and masks [N, H, W] of the same N, got "
                             f"{tuple(self.latents.shape)} and {tuple(self.masks.shape)}")
        if self.masks.numel() and int(self.masks.max()) >= self.schema.num_classes:
            raise ValueError(f"masks hold label {int(self.masks.max())} but schema {self.schema.name!r} has "
                             f"{self.schema.num_classes} classes")

    def save(self, path: str | Path) -> None:
        # Labels fit in a byte (schemas have ≤ 256 classes): a quarter of the int32 size in the repo.
        save_checkpoint(path, ANNOTATIONS_KIND, {"latents": self.latents, "masks": self.masks.to(torch.uint8)},
                        config={"schema": self.schema.to_dict()}, meta=self.meta)

    @classmethod
    def load(cls, path: str | Path) -> "AnnotatedSamples":
        tensors, config, meta = read_checkpoint(path, expected_kind=ANNOTATIONS_KIND)
        return cls(tensors["latents"].float(), tensors["masks"].long(), LabelSchema.from_dict(config["schema"]),
                   dict(meta or {}))


def save_latents(path: str | Path, ws: torch.Tensor, generator_id: str, meta: Optional[dict] = None) -> None:
    """W+ latents ``[N, num_ws, w_dim]`` of one generator, in the project format."""
    save_checkpoint(path, LATENTS_KIND, {"ws": ws.detach().cpu().float()}, config={"generator_id": generator_id},
                    meta=meta or {})


def load_latents(path: str | Path, generator_id: Optional[str] = None) -> torch.Tensor:
    """Latents saved by :func:`save_latents` (or a ``.npy`` array); refuses those of another generator."""
    path = Path(path)
    if path.suffix == ".npy":
        import numpy as np

        array = np.load(path, allow_pickle=False)
        return torch.from_numpy(array).float()
    tensors, config, _meta = read_checkpoint(path, expected_kind=LATENTS_KIND)
    if generator_id is not None and config.get("generator_id") != generator_id:
        raise ValueError(f"latents in {path} belong to generator {config.get('generator_id')}, not {generator_id}")
    return tensors["ws"]


@dataclass
class ModelBundle:
    """Everything the studio loaded from one bundle folder (absent parts are ``None`` / empty)."""

    directory: Path
    generator: torch.nn.Module
    generator_id: str
    schema: Optional[LabelSchema]
    segmenter: Optional[torch.nn.Module]
    encoder: Optional[torch.nn.Module]
    vectors: dict[str, EditVector]
    annotations: Optional[AnnotatedSamples]

    def editing_models(self, perceptual: torch.nn.Module) -> EditingModels:
        if self.segmenter is None:
            raise ValueError(f"bundle {self.directory} has no segmentation branch (segmentation.safetensors): "
                             f"train one with `python -m editor_core train-seg` first")
        return EditingModels(self.generator, self.segmenter, perceptual, self.generator_id, self.encoder)


def load_bundle(directory: str | Path = DEMO_BUNDLE, device: torch.device | str = "cpu") -> ModelBundle:
    """Load a bundle folder onto ``device``; every part is checked against the generator's fingerprint."""
    from editor_core.encoder import load_encoder
    from editor_core.segmentation import load_segmentation

    directory = Path(directory)
    generator_path = directory / "generator.safetensors"
    if not generator_path.is_file():
        raise FileNotFoundError(f"{directory} is not a model bundle: it has no generator.safetensors")
    generator = load_generator(generator_path, device=device).eval().requires_grad_(False)
    generator_id = generator_fingerprint(generator)

    segmenter = schema = encoder = annotations = None
    if (directory / "segmentation.safetensors").is_file():
        segmenter, schema, _meta = load_segmentation(directory / "segmentation.safetensors", device=device)
    if (directory / "encoder.safetensors").is_file():
        encoder = load_encoder(directory / "encoder.safetensors", generator=generator)
    if (directory / "annotations.safetensors").is_file():
        annotations = AnnotatedSamples.load(directory / "annotations.safetensors")
        schema = schema or annotations.schema
    vectors = {}
    for path in sorted((directory / "vectors").glob("*.safetensors")):
        vector = EditVector.load(path)
        vector.check_generator(generator_id)
        vectors[path.stem] = vector
    return ModelBundle(directory, generator, generator_id, schema, segmenter, encoder, vectors, annotations)
