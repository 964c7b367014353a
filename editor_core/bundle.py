"""Model bundles: a folder with a generator and what the studio learned for it.

A bundle folder holds ``generator.safetensors`` and, optionally, ``segmentation.safetensors`` (with its label
schema), ``encoder.safetensors``, ``annotations.safetensors`` (annotated samples: W+ latents and masks) and
``vectors/*.safetensors`` (edit vectors); the demo bundle also has its vectors' ``thumbnails/``, the Fréchet-distance
regressor, ``bundle.json`` (its manifest) and ``evaluation.json`` (its measured figures). ``BundleLayout`` is the one
definition of these names. The studio ships one, the demo bundle in ``demo/``; users make their own from imported
checkpoints with the CLI.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Optional

import torch

from editor_core.checkpoints import generator_fingerprint, load_generator, read_checkpoint, save_checkpoint
from editor_core.editing import EditingModels
from editor_core.schema import LabelSchema
from editor_core.vectors import EditVector

DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "demo"
ANNOTATIONS_KIND = "annotations"
LATENTS_KIND = "latents"


@dataclass(frozen=True)
class BundleLayout:
    """Where each part of the bundle folder ``root`` lives: ``BundleLayout(root).encoder`` is its encoder file.
    The names (class attributes) are relative to ``root``, as ``bundle.json`` lists them."""

    root: Path

    GENERATOR: ClassVar[str] = "generator.safetensors"
    SEGMENTATION: ClassVar[str] = "segmentation.safetensors"
    ENCODER: ClassVar[str] = "encoder.safetensors"
    ANNOTATIONS: ClassVar[str] = "annotations.safetensors"
    REGRESSOR: ClassVar[str] = "param_regressor.safetensors"
    VECTORS: ClassVar[str] = "vectors"
    THUMBNAILS: ClassVar[str] = "thumbnails"
    MANIFEST: ClassVar[str] = "bundle.json"
    EVALUATION: ClassVar[str] = "evaluation.json"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def generator(self) -> Path:
        return self.root / self.GENERATOR

    @property
    def segmentation(self) -> Path:
        return self.root / self.SEGMENTATION

    @property
    def encoder(self) -> Path:
        return self.root / self.ENCODER

    @property
    def annotations(self) -> Path:
        return self.root / self.ANNOTATIONS

    @property
    def regressor(self) -> Path:
        return self.root / self.REGRESSOR

    @property
    def manifest(self) -> Path:
        return self.root / self.MANIFEST

    @property
    def evaluation(self) -> Path:
        return self.root / self.EVALUATION

    @staticmethod
    def vector_name(name: str) -> str:
        """The relative name of vector ``name``'s file."""
        return f"{BundleLayout.VECTORS}/{name}.safetensors"

    @staticmethod
    def thumbnail_name(vector: str, side: str) -> str:
        """The relative name of vector ``vector``'s ``side`` (``before`` / ``after``) picture."""
        return f"{BundleLayout.THUMBNAILS}/{vector}_{side}.png"

    def vector(self, name: str) -> Path:
        return self.root / self.vector_name(name)

    def thumbnail(self, vector: str, side: str) -> Path:
        return self.root / self.thumbnail_name(vector, side)

    def vector_files(self) -> list[Path]:
        """The bundle's vector files, sorted by name (the stem is the vector's name)."""
        return sorted((self.root / self.VECTORS).glob("*.safetensors"))


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


def latents_bytes(ws: torch.Tensor, generator_id: str) -> bytes:
    """One W+ latent ``[num_ws, w_dim]`` as the bytes of a :func:`save_latents` file (what the studio stores)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latent.safetensors"
        save_latents(path, ws[None], generator_id)
        return path.read_bytes()


def latents_from_bytes(data: bytes, generator_id: Optional[str] = None) -> torch.Tensor:
    """:func:`load_latents` of a file's bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latent.safetensors"
        path.write_bytes(data)
        return load_latents(path, generator_id)


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
            raise ValueError(f"bundle {self.directory} has no segmentation branch ({BundleLayout.SEGMENTATION}): "
                             f"train one with `python -m editor_core train-seg` first")
        return EditingModels(self.generator, self.segmenter, perceptual, self.generator_id, self.encoder)


def load_bundle(directory: str | Path = DEMO_BUNDLE, device: torch.device | str = "cpu") -> ModelBundle:
    """Load a bundle folder onto ``device``; every part is checked against the generator's fingerprint."""
    from editor_core.encoder import load_encoder
    from editor_core.segmentation import load_segmentation

    directory = Path(directory)
    layout = BundleLayout(directory)
    if not layout.generator.is_file():
        raise FileNotFoundError(f"{directory} is not a model bundle: it has no {layout.GENERATOR}")
    generator = load_generator(layout.generator, device=device).eval().requires_grad_(False)
    generator_id = generator_fingerprint(generator)

    segmenter = schema = encoder = annotations = None
    if layout.segmentation.is_file():
        segmenter, schema, _meta = load_segmentation(layout.segmentation, device=device)
    if layout.encoder.is_file():
        encoder = load_encoder(layout.encoder, generator=generator)
    if layout.annotations.is_file():
        annotations = AnnotatedSamples.load(layout.annotations)
        schema = schema or annotations.schema
    vectors = load_vectors(layout.vector_files(), generator_id)
    return ModelBundle(directory, generator, generator_id, schema, segmenter, encoder, vectors, annotations)


def load_vectors(paths: Iterable[Path], generator_id: str) -> dict[str, EditVector]:
    """Edit vector files by name (the file's stem), each checked to be of the generator ``generator_id``."""
    vectors = {}
    for path in paths:
        vector = EditVector.load(path)
        vector.check_generator(generator_id)
        vectors[path.stem] = vector
    return vectors
