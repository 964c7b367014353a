"""Who may read a stored file: those who may see a row that refers to it.

Every model with a ``FileField`` is listed in ``FILE_OWNERS`` with the function its app's API decides visibility
with (``visible_samples``, ``visible_sessions``, ...), so a file is served exactly where the row is: an edit's
image and latent to the edit's owner (and to those who see every job), never to an annotator or another artist.
A name that no visible row refers to is "not found" — the same answer as a name that does not exist.
"""
from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Callable

from django.db import models
from django.db.models import Q, QuerySet

from webapp.datasets import services as datasets
from webapp.datasets.models import Annotation, AnnotationRevision, Sample, SamplePrediction
from webapp.editing import services as editing
from webapp.editing.models import EditResult, EditSession, EditVector
from webapp.registry import services as registry
from webapp.registry.models import Checkpoint


def _of_visible_samples(model, sample: str):
    """The rows of ``model`` whose sample (reached through the lookup path ``sample``) the user may see."""
    return lambda user: model.objects.filter(**{f"{sample}__in": datasets.visible_samples(user)})


# model → the rows of it that a user may see (the API's own visibility function for that kind of row)
FILE_OWNERS: dict[type[models.Model], Callable[..., QuerySet]] = {
    Sample: datasets.visible_samples,
    Annotation: _of_visible_samples(Annotation, "sample"),
    AnnotationRevision: _of_visible_samples(AnnotationRevision, "annotation__sample"),
    SamplePrediction: _of_visible_samples(SamplePrediction, "sample"),
    Checkpoint: registry.visible_checkpoints,
    EditSession: editing.visible_sessions,
    EditResult: editing.visible_results,
    EditVector: editing.visible_vectors,
}


def file_fields(model) -> list[str]:
    return [field.name for field in model._meta.concrete_fields if isinstance(field, models.FileField)]


def may_read(user, name: str) -> bool:
    """Whether ``user`` may see a row of any kind that refers to the stored file ``name``."""
    if not name or not user.is_authenticated:
        return False
    for model, visible in FILE_OWNERS.items():
        refers = reduce(or_, (Q(**{field: name}) for field in file_fields(model)))
        if visible(user).filter(refers).exists():
            return True
    return False
