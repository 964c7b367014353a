"""First-run set-up of a studio: the first admin and the demo data (loaded once)."""
from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Callable, Optional

import torch
from django.contrib.auth import get_user_model
from django.db import transaction

from webapp.accounts.roles import ADMIN, assign_role
from webapp.datasets import services as datasets
from webapp.datasets.models import Dataset, Sample
from webapp.registry import services as registry
from webapp.registry.models import Checkpoint
from webapp.storage import local_path

DEMO_DATASET = "demo"
UNLABELLED_DEMO_SAMPLES = 12  # for the active-learning queue: the branch ranks these for annotators


def ensure_admin(username: str, password: Optional[str]) -> Optional[str]:
    """Create the first superuser (admin role) if the studio has none; returns the password when one was made."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return None
    password = password or secrets.token_urlsafe(12)
    user = User.objects.create_superuser(username=username, password=password)
    assign_role(user, ADMIN)
    return password


def demo_loaded() -> bool:
    return Dataset.objects.filter(name=DEMO_DATASET).exists()


def load_bundle(directory: Path, admin, say: Callable[[str], None], unlabelled: int = UNLABELLED_DEMO_SAMPLES
                ) -> Dataset:
    """Register a model bundle (editor_core.bundle layout) and build the ``demo`` dataset from it: its annotated
    samples (reviewed: they are the bundle's own masks), ``unlabelled`` generated samples to rank, and its vectors
    in the library."""
    from editor_core.bundle import AnnotatedSamples, BundleLayout, latents_bytes
    from editor_core.domains.toonface import toonface_schema
    from editor_core.images import image_png

    layout = BundleLayout(directory)
    generator_row = registry.import_checkpoint(admin, kind="generator", name=f"{directory.name} generator",
                                               data=layout.generator.read_bytes(), filename=layout.GENERATOR)
    schema_row = None
    if layout.segmentation.is_file():
        segmentation = registry.import_checkpoint(
            admin, kind="segmentation", name=f"{directory.name} segmentation", generator=generator_row,
            data=layout.segmentation.read_bytes(), filename=layout.SEGMENTATION)
        schema_row = segmentation.schema
        evaluation = bundle_segmentation_metrics(directory)
        if evaluation and not segmentation.metrics:  # what the branch's own file says wins
            Checkpoint.objects.filter(pk=segmentation.pk).update(metrics=evaluation)
    if layout.encoder.is_file():
        registry.register_file(layout.encoder, kind=Checkpoint.Kind.ENCODER,
                               name=f"{directory.name} encoder", source_format=Checkpoint.SourceFormat.PROJECT,
                               user=admin, generator=generator_row, fingerprint=generator_row.fingerprint)
    annotations = None
    if layout.annotations.is_file():
        annotations = AnnotatedSamples.load(layout.annotations)
        schema_row = schema_row or registry.schema_for(annotations.schema)
    schema_row = schema_row or registry.schema_for(toonface_schema())  # the shipped demo's domain
    dataset = datasets.create_dataset(admin, DEMO_DATASET, schema_row, generator_row,
                                      description=f"loaded from {directory}")
    generator = registry_generator(generator_row)
    latents = annotations.latents if annotations is not None else torch.empty(0)
    say(f"  {len(latents)} annotated samples, {unlabelled} unlabelled ones")
    for index, ws in enumerate(latents):
        with torch.no_grad():
            image = generator.synthesis(ws[None], noise_mode="const")
        sample = datasets.add_sample(dataset, source=Sample.Source.GENERATED, image_png=image_png(image[0]),
                                     latent=latents_bytes(ws, generator_row.fingerprint), user=admin)
        saved = datasets.save_mask(sample, admin, annotations.masks[index].to(torch.uint8).numpy(), base_version=0,
                                   note="demo bundle annotation")
        # The bundle's masks are the renders' true labels: reviewed, so retraining picks them by default.
        submitted = datasets.submit(sample, admin, saved.version)
        datasets.review(sample, admin, submitted.version, "reviewed", note="true masks of the demo bundle's renders")
    for seed in range(unlabelled):
        z = torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ws = generator.mapping(z, truncation_psi=0.7)
            image = generator.synthesis(ws, noise_mode="const")
        datasets.add_sample(dataset, source=Sample.Source.GENERATED, image_png=image_png(image[0]),
                            latent=latents_bytes(ws[0], generator_row.fingerprint), seed=seed, user=admin)
    for path in layout.vector_files():
        import_bundle_vector(directory, path, generator_row, admin, say)
    active = Checkpoint.objects.filter(kind=Checkpoint.Kind.SEGMENTATION, generator=generator_row, schema=schema_row,
                                       active=True).first()
    if active is not None:  # predictions and the "label next" order from the start: the worker ranks the samples
        registry.queue_rankings(active, admin)
        say(f"  ranking the samples with segmentation branch #{active.pk} (a job for the worker)")
    return dataset


def bundle_segmentation_metrics(directory: Path) -> dict:
    """The segmentation branch's figures from the bundle's ``evaluation.json`` in the studio's metric names (those
    a retraining writes): mIoU and per-class IoU on fresh renders with their true masks, each inverted into W+ by
    optimisation; {} when the bundle has no such evaluation."""
    from editor_core.bundle import BundleLayout

    path = BundleLayout(directory).evaluation
    if not path.is_file():
        return {}
    evaluation = json.loads(path.read_text())
    measured = evaluation.get("segmentation", {})
    optimised = measured.get("optimised")
    if not optimised:
        return {}
    metrics = {"mean_iou": optimised["miou"], "per_class_iou": optimised["per_class"],
               "evaluated_on": "bundle evaluation", "num_heldout": measured.get("renders"),
               "num_samples": evaluation.get("config", {}).get("annotated_samples"),
               "measured": evaluation.get("created")}
    if "encoder_only" in measured:
        metrics["mean_iou_encoder_only"] = measured["encoder_only"]["miou"]
    return {key: value for key, value in metrics.items() if value is not None}


def import_bundle_vector(directory: Path, path: Path, generator_row: Checkpoint, admin, say: Callable[[str], None]):
    """A bundle's vector into the library with the bundle's ``thumbnails/<name>_before.png`` and ``_after.png``;
    a vector without both gets thumbnails rendered by a worker (a job that waits for the studio's worker)."""
    from editor_core.bundle import BundleLayout
    from webapp.editing.services import enqueue_thumbnails, import_vector

    pictures = [BundleLayout(directory).thumbnail(path.stem, side) for side in ("before", "after")]
    if all(picture.is_file() for picture in pictures):
        vector = import_vector(admin, path.read_bytes(), path.name, generator_row, tags=["demo"],
                               thumbnails=tuple(picture.read_bytes() for picture in pictures))
        say(f"  vector {path.stem}")
    else:
        vector = import_vector(admin, path.read_bytes(), path.name, generator_row, tags=["demo"])
        enqueue_thumbnails(vector, admin)
        say(f"  vector {path.stem} (its thumbnails are rendered by the worker)")
    return vector


def registry_generator(generator_row: Checkpoint):
    """The registered generator, on the CPU of this (command) process."""
    from editor_core.checkpoints import load_generator

    return load_generator(local_path(generator_row.file.name, generator_row.sha256))


def seed_random_models(folder: Path) -> Path:
    """A tiny random generator + untrained segmentation branch (face preset) as a bundle folder, for studios that
    have no demo bundle: everything works, the images are noise-like until real models are imported."""
    from editor_core.bundle import BundleLayout
    from editor_core.checkpoints import generator_fingerprint, save_generator
    from editor_core.networks import Generator, GeneratorConfig
    from editor_core.schema import preset
    from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, save_segmentation

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = Generator(GeneratorConfig(resolution=64, z_dim=64, w_dim=64, channel_base=1024, channel_max=64,
                                          mapping_layers=2)).eval()
    schema = preset("face")
    ensemble = SegmentationEnsemble(SegmentationConfig.from_generator(generator, schema.num_classes,
                                                                      hidden=(32,), ensemble_size=3))
    layout = BundleLayout(folder)
    save_generator(layout.generator, generator)
    save_segmentation(layout.segmentation, ensemble, schema,
                      meta={"generator_id": generator_fingerprint(generator)})
    return folder


@transaction.atomic
def load_demo(bundle: Path, fallback_folder: Path, admin, say: Callable[[str], None]) -> Dataset:
    from editor_core.bundle import BundleLayout

    if BundleLayout(bundle).generator.is_file():
        say(f"loading the demo bundle from {bundle}")
        return load_bundle(bundle, admin, say)
    say(f"no demo bundle at {bundle}: seeding a tiny RANDOM generator and segmentation branch instead "
        "(import real checkpoints under Models, or build the bundle with `python -m editor_core`)")
    return load_bundle(seed_random_models(fallback_folder), admin, say)
