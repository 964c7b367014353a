import base64
import binascii
from typing import Optional

from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from ninja import File, Query, Router, UploadedFile, Status
from ninja.errors import HttpError

from webapp.accounts import roles
from webapp.accounts.auth import role_auth
from webapp.datasets import services
from webapp.datasets.models import Dataset, LabelSchema
from webapp.datasets.schemas import (AnnotationOut, DatasetIn, DatasetOut, EmbedIn, GenerateIn, MaskIn, RankIn,
                                     RestoreIn, ReviewIn, RevisionOut, SampleOut, SchemaIn, SchemaOut, TuneIn,
                                     Version, VersionIn)
from webapp.jobs import services as jobs
from webapp.jobs.schemas import JobOut
from webapp.registry.models import Checkpoint
from webapp.storage import read_bytes
from webapp.validation import RowId

router = Router(tags=["datasets"])
viewer, annotator = role_auth(roles.VIEW), role_auth(roles.ANNOTATE)
uploader, manager = role_auth(roles.UPLOAD), role_auth(roles.MANAGE_DATASETS)


@router.get("/schemas", auth=viewer, response=list[SchemaOut])
def list_schemas(request):
    return [services.schema_out(s) for s in LabelSchema.objects.prefetch_related("classes")]


@router.post("/schemas", auth=manager, response={201: SchemaOut})
def create_schema(request, payload: SchemaIn):
    schema = services.create_schema(payload.name, [(c.name, c.colour) for c in payload.classes], payload.description)
    return Status(201, services.schema_out(schema))


@router.get("/schemas/{schema_id}", auth=viewer, response=SchemaOut)
def get_schema(request, schema_id: int):
    return services.schema_out(get_object_or_404(LabelSchema, pk=schema_id))


@router.get("/datasets", auth=viewer, response=list[DatasetOut])
def list_datasets(request):
    return [services.dataset_out(d) for d in Dataset.objects.all()]


@router.post("/datasets", auth=manager, response={201: DatasetOut})
def create_dataset(request, payload: DatasetIn):
    schema = get_object_or_404(LabelSchema, pk=payload.schema_id)
    generator = get_object_or_404(Checkpoint, pk=payload.generator_id)
    dataset = services.create_dataset(request.user, payload.name, schema, generator, payload.description)
    return Status(201, services.dataset_out(dataset))


@router.get("/datasets/{dataset_id}", auth=viewer, response=DatasetOut)
def get_dataset(request, dataset_id: int):
    return services.dataset_out(get_object_or_404(Dataset, pk=dataset_id))


@router.delete("/datasets/{dataset_id}", auth=manager, response={204: None})
def delete_dataset(request, dataset_id: int):
    get_object_or_404(Dataset, pk=dataset_id).delete()
    return Status(204, None)


@router.get("/datasets/{dataset_id}/samples", auth=viewer, response=list[SampleOut])
def list_samples(request, dataset_id: int, offset: int = Query(0, ge=0, le=2 ** 31 - 1),
                 limit: int = Query(100, ge=1, le=500)):
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    rows = dataset.samples.select_related("annotation")[offset:offset + limit]
    return [services.sample_out(s) for s in rows]


@router.get("/datasets/{dataset_id}/next-to-label", auth=viewer, response=list[SampleOut])
def next_to_label(request, dataset_id: int, limit: int = Query(20, ge=1, le=200)):
    """Active learning: unlabelled samples, most uncertain first."""
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    return [services.sample_out(s) for s in services.next_to_label(dataset, limit)]


@router.get("/datasets/{dataset_id}/presence", auth=viewer, response=dict[str, list[str]])
def dataset_presence(request, dataset_id: int):
    """Who is in each live annotation room of the dataset now: ``{sample_id: [username, …]}`` (occupied rooms
    only)."""
    return services.presence(get_object_or_404(Dataset, pk=dataset_id))


@router.post("/datasets/{dataset_id}/samples/generate", auth=uploader, response={202: JobOut})
def generate_samples(request, dataset_id: int, payload: GenerateIn):
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    job = jobs.enqueue("sample", request.user, {"dataset_id": dataset.pk, **payload.dict()})
    return Status(202, job)


@router.post("/datasets/{dataset_id}/samples/upload", auth=uploader, response={201: SampleOut})
def upload_sample(request, dataset_id: int, file: File[UploadedFile]):
    """A PNG/JPEG/WebP photo, centre-cropped to the generator's resolution. Embed it with POST /samples/{id}/embed."""
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    if file.size > services.upload_limit():
        raise ValidationError(f"the file is {file.size} bytes; the limit is {services.upload_limit()} bytes")
    sample = services.upload_sample(dataset, request.user, file.read(), file.name or "upload")
    return Status(201, services.sample_out(sample))


@router.post("/datasets/{dataset_id}/rank", auth=manager, response={202: JobOut})
def rank_samples(request, dataset_id: int, payload: RankIn):
    """Recompute every sample's uncertainty with a segmentation branch (done after each retraining anyway)."""
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    return Status(202, services.enqueue_ranking(dataset, request.user, payload.segmentation_id))


@router.get("/datasets/{dataset_id}/export.zip", auth=viewer)
def export_dataset(request, dataset_id: int):
    dataset = get_object_or_404(Dataset, pk=dataset_id)
    response = HttpResponse(services.export_zip(dataset), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="dataset-{dataset.pk}.zip"'
    return response


@router.get("/samples/{sample_id}", auth=viewer, response=SampleOut)
def get_sample(request, sample_id: int):
    return services.sample_out(get_object_or_404(services.visible_samples(request.user), pk=sample_id))


@router.delete("/samples/{sample_id}", auth=manager, response={204: None})
def delete_sample(request, sample_id: int):
    services.delete_sample(get_object_or_404(services.visible_samples(request.user), pk=sample_id))
    return Status(204, None)


@router.get("/samples/{sample_id}/image.png", auth=viewer)
def sample_image(request, sample_id: int):
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    return HttpResponse(read_bytes(sample.image.name), content_type="image/png")


def _prediction_png(request, sample_id: int, segmentation_id: Optional[int], part: str) -> HttpResponse:
    samples = services.visible_samples(request.user).select_related("dataset__generator", "dataset__schema")
    sample = get_object_or_404(samples, pk=sample_id)
    try:
        prediction, data = services.prediction_file(sample, segmentation_id, part)
    except services.PredictionMissing as exc:
        raise HttpError(404, str(exc)) from None
    response = HttpResponse(data, content_type="image/png")
    response["X-Segmentation-Id"] = str(prediction.segmentation_id)
    response["X-Uncertainty-Peak"] = repr(prediction.uncertainty_peak)
    return response


@router.get("/samples/{sample_id}/segmentation.png", auth=viewer)
def predicted_mask(request, sample_id: int, segmentation_id: Optional[RowId] = None):
    """The segmentation branch's prediction (default: the active branch) as a palette PNG of class indices, like
    ``annotation/mask.png``. Workers store it when they generate, embed, pre-label or rank; 404 until then."""
    return _prediction_png(request, sample_id, segmentation_id, "mask")


@router.get("/samples/{sample_id}/uncertainty.png", auth=viewer)
def prediction_uncertainty(request, sample_id: int, segmentation_id: Optional[RowId] = None):
    """Where that prediction is unsure: a greyscale PNG at the sample's size, 0 = the ensemble members agree …
    255 = the image's largest disagreement, whose value in nats (Jensen-Shannon divergence) is the
    ``X-Uncertainty-Peak`` header."""
    return _prediction_png(request, sample_id, segmentation_id, "uncertainty")


@router.post("/samples/{sample_id}/segment", auth=viewer, response={202: JobOut})
def segment_sample(request, sample_id: int):
    """Have the active branch predict the sample when ``segmentation.png`` has none for it (404): the job's result
    names the stored prediction (``prediction_url``, ``uncertainty_url``)."""
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    return Status(202, services.enqueue_segment(sample, request.user))


@router.post("/samples/{sample_id}/embed", auth=uploader, response={202: JobOut})
def embed_sample(request, sample_id: int, payload: EmbedIn):
    """Find the sample's W+ latent (needed before uploaded photos can be edited or pre-labelled)."""
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    return Status(202, jobs.enqueue("embed", request.user, {"sample_id": sample.pk, "steps": payload.steps}))


@router.post("/samples/{sample_id}/tune", auth=uploader, response={202: JobOut})
def tune_sample(request, sample_id: int, payload: TuneIn):
    """Pivotal tuning: fine-tune the generator around the sample's latent so that it reproduces the image more
    exactly; the sample's edits then run on the tuned generator (until it is embedded again)."""
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    return Status(202, services.enqueue_tuning(sample, request.user, payload.steps))


@router.get("/samples/{sample_id}/annotation", auth=viewer, response=AnnotationOut)
def get_annotation(request, sample_id: int):
    return services.annotation_out(get_object_or_404(services.visible_samples(request.user), pk=sample_id))


@router.put("/samples/{sample_id}/annotation", auth=annotator, response=AnnotationOut)
def save_annotation(request, sample_id: int, payload: MaskIn):
    """Save a whole mask. A stale ``base_version`` is refused with 409 and the current version."""
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    try:
        png = base64.b64decode(payload.mask_png, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("mask_png must be base64-encoded PNG data") from None
    services.save_mask(sample, request.user, services.parse_mask(sample, png), payload.base_version)
    return services.annotation_out(sample)


@router.get("/samples/{sample_id}/annotation/mask.png", auth=viewer)
def annotation_mask(request, sample_id: int, version: Optional[Version] = None):
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    return HttpResponse(services.mask_png(sample, services.read_mask(sample, version)), content_type="image/png")


@router.get("/samples/{sample_id}/annotation/coco", auth=viewer)
def annotation_coco(request, sample_id: int):
    """The current mask as COCO annotations with run-length encoded segmentations."""
    return services.sample_coco(get_object_or_404(services.visible_samples(request.user), pk=sample_id))


@router.post("/samples/{sample_id}/annotation/submit", auth=annotator, response=AnnotationOut)
def submit_annotation(request, sample_id: int, payload: VersionIn):
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    services.submit(sample, request.user, payload.base_version)
    return services.annotation_out(sample)


@router.post("/samples/{sample_id}/annotation/review", auth=role_auth(roles.REVIEW), response=AnnotationOut)
def review_annotation(request, sample_id: int, payload: ReviewIn):
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    services.review(sample, request.user, payload.base_version, payload.decision, payload.note)
    return services.annotation_out(sample)


@router.get("/samples/{sample_id}/annotation/revisions", auth=viewer, response=list[RevisionOut])
def annotation_revisions(request, sample_id: int):
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    return [services.revision_out(r) for r in services.revisions(sample)]


@router.post("/samples/{sample_id}/annotation/restore", auth=annotator, response=AnnotationOut)
def restore_annotation(request, sample_id: int, payload: RestoreIn):
    """Make an earlier revision's mask the next version (reason 'restore'); the revisions in between stay."""
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    services.restore(sample, request.user, payload.base_version, payload.version)
    return services.annotation_out(sample)


@router.post("/samples/{sample_id}/prelabel", auth=annotator, response={202: JobOut})
def prelabel(request, sample_id: int):
    """Ask the active segmentation branch for a mask; it arrives as a draft revision ('prelabel')."""
    sample = get_object_or_404(services.visible_samples(request.user), pk=sample_id)
    return Status(202, services.enqueue_prelabel(sample, request.user))
