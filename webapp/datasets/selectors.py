"""Read functions that hand a worker task its inputs: dataset and sample rows, latents, masks, uploaded photos.

A row deleted since its job was queued is a ValidationError that says so (the job fails with that message)."""
from __future__ import annotations

import io
from typing import Optional

import numpy as np
from django.core.exceptions import ValidationError
from PIL import Image

from webapp.datasets.models import Annotation, Dataset, Sample
from webapp.storage import read_bytes


def dataset(dataset_id: int) -> Dataset:
    found = Dataset.objects.select_related("generator", "schema").filter(pk=dataset_id).first()
    if found is None:
        raise ValidationError(f"dataset #{dataset_id} was deleted after the job was queued")
    return found


def sample(sample_id: int) -> Sample:
    found = Sample.objects.select_related("dataset__generator", "dataset__schema").filter(pk=sample_id).first()
    if found is None:
        raise ValidationError(f"sample #{sample_id} was deleted after the job was queued")
    return found


def samples_by_id(dataset: Dataset, ids: list[int]) -> dict[int, Sample]:
    """The dataset's samples among ``ids`` that still exist."""
    return {row.pk: row for row in dataset.samples.filter(pk__in=ids)}


def samples_with_latents(dataset: Dataset) -> list[Sample]:
    return list(dataset.samples.exclude(latent="").select_related("dataset__generator", "dataset__schema"))


def training_samples(dataset: Dataset, ids: list[int]) -> list[Sample]:
    """The training job's samples in ``ids`` order; refuses ones deleted or emptied since the job was queued."""
    rows = {row.pk: row for row in dataset.samples.filter(pk__in=ids).select_related("dataset__generator",
                                                                                      "annotation")}
    gone = [pk for pk in ids if pk not in rows or not rows[pk].latent
            or getattr(rows[pk], "annotation", None) is None or rows[pk].annotation.version == 0]
    if gone:
        raise ValidationError(f"samples {gone} were deleted or lost their annotation or latent after the training "
                              "job was queued; start the training again")
    return [rows[pk] for pk in ids]


def latent_file(sample: Sample) -> bytes:
    """The sample's W+ latent file (project-format latents of its dataset's generator)."""
    if not sample.latent:
        raise ValidationError(f"sample #{sample.pk} has no latent yet: embed it first")
    return read_bytes(sample.latent.name)


def image_file(sample: Sample) -> bytes:
    return read_bytes(sample.image.name)


def annotation_of(sample: Sample) -> Optional[Annotation]:
    return Annotation.objects.filter(sample=sample).select_related("author").first()


def read_mask(sample: Sample, version: Optional[int] = None) -> np.ndarray:
    """The sample's mask (current, or revision ``version``) as ``uint8 [H, W]``; all background if never
    annotated."""
    annotation = annotation_of(sample)
    if annotation is None or annotation.version == 0:
        if version not in (None, 0):
            raise ValidationError(f"sample #{sample.pk} has no annotation revision {version}")
        return np.zeros((sample.height, sample.width), dtype=np.uint8)
    name = annotation.mask.name
    if version is not None and version != annotation.version:
        revision = annotation.revisions.filter(version=version).first()
        if revision is None:
            raise ValidationError(f"sample #{sample.pk} has no annotation revision {version}")
        name = revision.mask.name
    with Image.open(io.BytesIO(read_bytes(name))) as image:
        return np.asarray(image, dtype=np.uint8).copy()


class PhotoFiles:
    """A dataset's uploaded photos as a sequence of file contents, read when indexed (a large set costs nothing up
    front)."""

    def __init__(self, dataset_id: int):
        self.names = list(Sample.objects.filter(dataset_id=dataset_id, source=Sample.Source.UPLOADED)
                          .order_by("pk").values_list("image", flat=True))
        if not self.names:
            raise ValidationError(f"dataset #{dataset_id} has no uploaded photos to mix in any more")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> bytes:
        return read_bytes(self.names[index])
