from typing import Optional

from django.shortcuts import get_object_or_404
from ninja import File, Form, Router, UploadedFile, Status

from webapp.accounts import roles
from webapp.accounts.auth import role_auth
from webapp.jobs.schemas import JobOut
from webapp.registry import services
from webapp.registry.models import Checkpoint
from webapp.registry.schemas import CheckpointChangeOut, CheckpointOut, ImportPathIn, TrainEncoderIn, \
    TrainSegmentationIn
from webapp.validation import RowId, text

router = Router(tags=["models"])
viewer, manager = role_auth(roles.VIEW_CHECKPOINTS), role_auth(roles.MANAGE_MODELS)


def _generator(generator_id: Optional[int]) -> Optional[Checkpoint]:
    return None if generator_id is None else get_object_or_404(Checkpoint, pk=generator_id,
                                                               kind=Checkpoint.Kind.GENERATOR)


@router.get("/checkpoints", auth=viewer, response=list[CheckpointOut])
def list_checkpoints(request, kind: Optional[text(16)] = None):
    rows = services.visible_checkpoints(request.user)
    return rows.filter(kind=kind) if kind else rows


def _with_rankings(checkpoint: Checkpoint, rankings: list) -> Checkpoint:
    checkpoint.ranking_job_ids = [job.pk for job in rankings]
    return checkpoint


@router.post("/checkpoints/upload", auth=manager, response={202: JobOut})
def upload_checkpoint(request, file: File[UploadedFile], kind: Form[text(16)], name: Form[text(200)],
                      generator_id: Form[Optional[RowId]] = None):
    """Import an NVlabs .pkl / rosinality .pt / project .safetensors generator, or a segmentation branch, through an
    ``import_checkpoint`` job: its result names the checkpoint (and the rankings of a branch that became active)."""
    job = services.queue_import(request.user, kind=kind, name=name, data=file.read(), filename=file.name or "",
                                generator=_generator(generator_id))
    return Status(202, job)


@router.post("/checkpoints/import", auth=manager, response={202: JobOut})
def import_checkpoint(request, payload: ImportPathIn):
    """Import a checkpoint file that is already on the server, below one of STUDIO_IMPORT_ROOTS; as upload."""
    job = services.queue_import(request.user, kind=payload.kind, name=payload.name, server_path=payload.server_path,
                                generator=_generator(payload.generator_id))
    return Status(202, job)


@router.get("/checkpoints/{checkpoint_id}", auth=viewer, response=CheckpointOut)
def get_checkpoint(request, checkpoint_id: int):
    return get_object_or_404(services.visible_checkpoints(request.user), pk=checkpoint_id)


@router.post("/checkpoints/{checkpoint_id}/activate", auth=manager, response=CheckpointChangeOut)
def activate_checkpoint(request, checkpoint_id: int):
    """Make an encoder or segmentation branch the active version; a segmentation branch's datasets are ranked
    again by it (``ranking_job_ids``), so their stored predictions and "label next" follow the switch."""
    checkpoint, rankings = services.activate_and_rank(get_object_or_404(Checkpoint, pk=checkpoint_id), request.user)
    return _with_rankings(checkpoint, rankings)


@router.delete("/checkpoints/{checkpoint_id}", auth=manager, response={204: None})
def delete_checkpoint(request, checkpoint_id: int):
    services.delete(get_object_or_404(Checkpoint, pk=checkpoint_id))
    return Status(204, None)


@router.post("/train/segmentation", auth=manager, response={202: JobOut})
def train_segmentation(request, payload: TrainSegmentationIn):
    """Retrain the segmentation branch on picked annotated samples of a dataset (default: the submitted and reviewed
    ones); the held-out samples' per-class IoU goes into the new checkpoint's metrics; ranking refreshes when it
    ends."""
    from webapp.datasets.models import Dataset

    dataset = get_object_or_404(Dataset, pk=payload.dataset_id)
    job = services.enqueue_training(dataset, request.user, payload.steps, payload.name, payload.activate,
                                    architecture={"ensemble_size": payload.ensemble_size, "hidden": payload.hidden},
                                    pixels_per_step=payload.pixels_per_step, early_stopping=payload.early_stopping,
                                    sample_ids=payload.sample_ids, holdout_fraction=payload.holdout_fraction)
    return Status(202, job)


@router.post("/train/encoder", auth=manager, response={202: JobOut})
def train_encoder(request, payload: TrainEncoderIn):
    """Train an image → W+ encoder for a generator on its own samples, optionally mixed with a dataset's uploaded
    photos (embedding starts from its guess); the new checkpoint's metrics hold its reconstruction quality."""
    from webapp.datasets.models import Dataset

    generator = get_object_or_404(Checkpoint, pk=payload.generator_id, kind=Checkpoint.Kind.GENERATOR)
    real_dataset = None if payload.real_dataset_id is None else get_object_or_404(Dataset, pk=payload.real_dataset_id)
    job = services.enqueue_encoder_training(generator, request.user, payload.steps, payload.name, payload.activate,
                                            payload.lpips_weight, max_minutes=payload.max_minutes,
                                            batch_size=payload.batch_size, real_dataset=real_dataset)
    return Status(202, job)
