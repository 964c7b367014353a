"""Read functions that hand a worker task its checkpoints."""
from __future__ import annotations

from typing import Optional

from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage

from webapp.registry.models import Checkpoint
from webapp.storage import read_bytes


def checkpoint(checkpoint_id: int, kind: Optional[str] = None) -> Checkpoint:
    """The checkpoint row (of ``kind`` when given); one deleted since its job was queued is a ValidationError."""
    found = Checkpoint.objects.filter(pk=checkpoint_id, **({"kind": kind} if kind else {})).first()
    if found is None:
        raise ValidationError(f"{kind or 'checkpoint'} #{checkpoint_id} was deleted after the job was queued")
    return found


def generator(checkpoint_id: int) -> Checkpoint:
    return checkpoint(checkpoint_id, Checkpoint.Kind.GENERATOR)


def segmentation(checkpoint_id: int) -> Checkpoint:
    return checkpoint(checkpoint_id, Checkpoint.Kind.SEGMENTATION)


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


def active_segmentations(limit: int) -> list[Checkpoint]:
    """The ``limit`` most recently created active segmentation branches, with their generators."""
    return list(Checkpoint.objects.filter(kind=Checkpoint.Kind.SEGMENTATION, active=True)
                .select_related("generator").order_by("-created")[:limit])


def import_source(params: dict) -> dict:
    """The keyword arguments of ``services.import_and_rank`` for an ``import_checkpoint`` job's ``params``: kind,
    name, the generator row (segmentation branches) and the stored upload's bytes or the server path."""
    source = {"kind": params["kind"], "name": params["name"],
              "generator": None if params["generator_id"] is None else generator(params["generator_id"])}
    if not params["upload"]:
        return {**source, "server_path": params["server_path"]}
    if not default_storage.exists(params["upload"]):  # a retry: the job that received the upload deleted it
        raise ValidationError("the uploaded file is gone (an import keeps it until its job ends): upload it again")
    return {**source, "data": read_bytes(params["upload"]), "filename": params["filename"]}
