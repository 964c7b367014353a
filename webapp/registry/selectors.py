"""Read functions that hand a worker task its checkpoints."""
from __future__ import annotations

from typing import Optional

from django.core.exceptions import ValidationError

from webapp.registry.models import Checkpoint


def checkpoint(checkpoint_id: int, kind: Optional[str] = None) -> Checkpoint:
    """The checkpoint row (of ``kind`` when given); one deleted since its job was queued is a ValidationError."""
    found = Checkpoint.objects.filter(pk=checkpoint_id, **({"kind": kind} if kind else {})).first()
    if found is None:
        raise ValidationError(f"{kind or 'checkpoint'} #{checkpoint_id} was deleted after the job was queued")
    return found


def generator(checkpoint_id: int) -> Checkpoint:
    return checkpoint(checkpoint_id, Checkpoint.Kind.GENERATOR)


def registered_by(job) -> Optional[Checkpoint]:
    """The checkpoint an earlier run of this training job registered (``jobs.record_result`` in the row's
    transaction): a run after a lost worker activates it instead of training and registering a second one."""
    return Checkpoint.objects.filter(pk=job.result.get("checkpoint_id", -1)).first()


def active_encoder(generator_row: Checkpoint) -> Optional[Checkpoint]:
    return Checkpoint.objects.filter(kind=Checkpoint.Kind.ENCODER, generator=generator_row, active=True).first()


def active_segmentation_or_none(dataset) -> Optional[Checkpoint]:
    """The branch annotators of ``dataset`` work with, if its generator and schema have one."""
    return Checkpoint.objects.filter(kind=Checkpoint.Kind.SEGMENTATION, generator=dataset.generator,
                                     schema=dataset.schema, active=True).first()
