"""Business logic for label schemas, datasets, samples, annotations (with revisions), ranking and exports."""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image

from webapp.accounts import roles
from webapp.datasets import masks
from webapp.datasets.models import (Annotation, AnnotationRevision, Dataset, LabelClass, LabelSchema, Sample,
                                     SamplePrediction)
from webapp.datasets.selectors import annotation_of, read_mask
from webapp.datasets.uploads import open_uploaded_image
from webapp.errors import Conflict
from webapp.jobs import services as jobs
from webapp.realtime import rooms
from webapp.realtime.groups import annotation_group, publish
from webapp.jobs.models import Job
from webapp.registry.models import Checkpoint
from webapp.registry.services import active_segmentation
from webapp.storage import atomic_with_files, delete_on_commit, files_removed_on_error, read_bytes, save_bytes

MIN_CLASSES, MAX_CLASSES = 2, 255  # a mask is 8-bit; the paper's schemas have 16–34 part classes
COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


# --- schemas and datasets -----------------------------------------------------------------------------------------
def create_schema(name: str, classes: Sequence[tuple[str, str]], description: str = "") -> LabelSchema:
    """A schema from ``[(class name, "#rrggbb"), ...]`` in index order; index 0 is the background."""
    if not MIN_CLASSES <= len(classes) <= MAX_CLASSES:
        raise ValidationError(f"a schema needs {MIN_CLASSES}..{MAX_CLASSES} classes, got {len(classes)}")
    names = [n.strip() for n, _ in classes]
    if any(not n for n in names):
        raise ValidationError("every class needs a non-empty name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValidationError(f"class names must be unique; repeated: {', '.join(duplicates)}")
    bad = [c for _, c in classes if not COLOUR.match(c)]
    if bad:
        raise ValidationError(f"colours must be '#rrggbb', got {bad[:3]}")
    if LabelSchema.objects.filter(name=name).exists():
        raise ValidationError(f"a schema named '{name}' exists already")
    with transaction.atomic():
        schema = LabelSchema.objects.create(name=name, description=description)
        LabelClass.objects.bulk_create(LabelClass(schema=schema, index=i, name=n, colour=c.lower())
                                       for i, (n, c) in enumerate(zip(names, (c for _, c in classes))))
    return schema


def schema_classes(schema: LabelSchema) -> tuple[list[str], list[str]]:
    """(names, colours) in index order."""
    rows = schema.class_rows()
    return [n for n, _ in rows], [c for _, c in rows]


def create_dataset(user, name: str, schema: LabelSchema, generator: Checkpoint, description: str = "") -> Dataset:
    if generator.kind != Checkpoint.Kind.GENERATOR:
        raise ValidationError(f"checkpoint #{generator.pk} is a {generator.kind}, not a generator")
    if Dataset.objects.filter(name=name).exists():
        raise ValidationError(f"a dataset named '{name}' exists already")
    return Dataset.objects.create(name=name, schema=schema, generator=generator, description=description,
                                  created_by=user)


def generator_resolution(generator: Checkpoint) -> int:
    resolution = generator.config.get("img_resolution")
    if not resolution:
        raise ValidationError(f"generator #{generator.pk} has no img_resolution in its config; re-import it")
    return int(resolution)


# --- samples ------------------------------------------------------------------------------------------------------
def visible_samples(user):
    """Every role may see every sample, with its annotation, revisions, predictions and their files."""
    return Sample.objects.all() if user.has_perm(roles.VIEW) else Sample.objects.none()


def add_sample(dataset: Dataset, *, source: str, image_png: bytes, latent: bytes = b"", seed: Optional[int] = None,
               original: bytes = b"", original_name: str = "", user=None,
               then: Optional[Callable[[Sample], object]] = None) -> Sample:
    """Store a new sample; ``image_png`` is at generator resolution, ``latent`` a W+ .safetensors file.

    ``then(sample)`` runs in the row's transaction (a generation job records the sample there, so that its retry
    stores it once); when it raises, the row rolls back and the stored files go."""
    with Image.open(io.BytesIO(image_png)) as image:
        width, height = image.size
    sample = Sample(dataset=dataset, source=source, seed=seed, width=width, height=height, created_by=user)
    prefix = f"datasets/{dataset.pk}/samples"
    with files_removed_on_error():  # a sample that cannot be saved leaves no files behind
        sample.image.name = save_bytes(f"{prefix}/image.png", image_png)
        if latent:
            sample.latent.name = save_bytes(f"{prefix}/latent.safetensors", latent)
        if original:
            sample.original.name = save_bytes(f"{prefix}/{original_name or 'upload'}", original)
        with transaction.atomic():
            sample.save()
            if then is not None:
                then(sample)
    return sample


def add_generated_sample(dataset: Dataset, *, image_png: bytes, latent: bytes, seed: int, user,
                         then: Optional[Callable[[Sample], object]] = None) -> Sample:
    """A generator sample (a generation job's): ``add_sample`` with its seed."""
    return add_sample(dataset, source=Sample.Source.GENERATED, image_png=image_png, latent=latent, seed=seed,
                      user=user, then=then)


def set_sample_latent(sample: Sample, latent: bytes) -> None:
    """A new W+ latent (an embedding): what the segmentation branches said about the old one no longer holds, and a
    pivotal tuning around the old latent (its pivot) goes too."""
    with files_removed_on_error():  # a latent that cannot be recorded leaves no file behind
        name = save_bytes(f"datasets/{sample.dataset_id}/samples/latent.safetensors", latent)
        with transaction.atomic():
            delete_on_commit([sample.tuning.name])
            sample.latent.name = name
            sample.uncertainty, sample.ranked_with = None, None
            sample.tuning.name, sample.tuning_sha256, sample.tuning_metrics = "", "", {}
            sample.save(update_fields=["latent", "uncertainty", "ranked_with", "tuning", "tuning_sha256",
                                       "tuning_metrics"])
            for prediction in sample.predictions.all():
                _delete_prediction(prediction)


def store_tuning(sample: Sample, pivot: str, delta: bytes, metrics: dict) -> Sample:
    """Record a pivotal tuning of the generator around the sample's latent file ``pivot`` (a worker made it):
    ``delta`` is the ``WeightDelta`` file, ``metrics`` its figures. It replaces an older tuning; a tuning of a latent
    the sample no longer has (embedded again meanwhile) is refused."""
    with files_removed_on_error():  # a tuning that cannot be recorded leaves no file behind
        name = save_bytes(f"datasets/{sample.dataset_id}/tunings/{sample.pk}/delta.safetensors", delta)
        with transaction.atomic():
            current = Sample.objects.select_for_update().filter(pk=sample.pk).first()
            if current is None:
                raise ValidationError(f"sample #{sample.pk} was deleted while it was being tuned")
            if current.latent.name != pivot:
                raise ValidationError(f"sample #{sample.pk} was embedded again while it was being tuned: tune it "
                                      "again around its new latent")
            delete_on_commit([current.tuning.name])
            current.tuning.name, current.tuning_sha256 = name, hashlib.sha256(delta).hexdigest()
            current.tuning_metrics = metrics
            current.save(update_fields=["tuning", "tuning_sha256", "tuning_metrics"])
    return current


def upload_sample(dataset: Dataset, user, data: bytes, filename: str) -> Sample:
    """Validate an uploaded photo, centre-crop and resize it to the generator's resolution, store it as a sample.

    Its latent comes later, from an embedding job.
    """
    image = open_uploaded_image(data)
    resolution = generator_resolution(dataset.generator)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)
    buffer = io.BytesIO()
    square.save(buffer, format="PNG")
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename)[-80:] or "upload"
    return add_sample(dataset, source=Sample.Source.UPLOADED, image_png=buffer.getvalue(), original=data,
                      original_name=safe_name, user=user)


def delete_sample(sample: Sample) -> None:
    # Files stay in storage (revisions may be exported or audited later), except the tuning: a weight delta is of
    # use only for editing this sample.
    with transaction.atomic():
        delete_on_commit([sample.tuning.name])
        sample.delete()


# --- annotations --------------------------------------------------------------------------------------------------
def mask_png(sample: Sample, mask: np.ndarray) -> bytes:
    _, colours = schema_classes(sample.dataset.schema)
    return masks.encode_mask_png(mask, colours)


def parse_mask(sample: Sample, data: bytes) -> np.ndarray:
    return masks.decode_mask_png(data, (sample.width, sample.height), sample.dataset.schema.num_classes)


def parse_roi(sample: Sample, data: bytes) -> np.ndarray:
    """A region of interest of ``sample``: a single-channel PNG of 0 (outside) and 1 (inside) → bool ``[H, W]``."""
    return masks.decode_mask_png(data, (sample.width, sample.height), 2).astype(bool)


def save_prelabel(sample: Sample, user, mask: np.ndarray, base_version: int, segmentation: Checkpoint,
                  job_id: int) -> int:
    """Store a branch's prediction as the next revision (``save_mask``, announced to the annotation room) and return
    its version; a run after a lost worker finds the revision the lost one saved (else its base version would
    conflict)."""
    note = f"pre-label by segmentation checkpoint #{segmentation.pk} (job #{job_id})"
    earlier = AnnotationRevision.objects.filter(annotation__sample=sample, note=note).first()
    if earlier is not None:
        return earlier.version
    return save_mask(sample, user, mask, base_version, AnnotationRevision.Reason.PRELABEL, note=note).version


def _conflict(sample: Sample, base_version: int) -> Conflict:
    current = Annotation.objects.filter(sample=sample).values("version", "status").first() or {
        "version": 0, "status": Annotation.Status.DRAFT}
    return Conflict(f"the annotation of sample #{sample.pk} is at version {current['version']}, not {base_version}: "
                    "reload it and apply your change again", current_version=current["version"],
                    current_status=current["status"])


def save_mask(sample: Sample, user, mask: np.ndarray, base_version: int,
              reason: str = AnnotationRevision.Reason.SAVE, note: str = "", announce: bool = True) -> Annotation:
    """Store ``mask`` as the next version if the annotation is still at ``base_version`` (else Conflict → 409).

    The new state is always a draft: a submitted or reviewed mask that is changed has to be submitted again.
    ``announce=False``: the caller (a live room's flush) tells the room itself, with the operations it stored.
    """
    if mask.shape != (sample.height, sample.width):
        raise ValidationError(f"mask is {mask.shape[1]}×{mask.shape[0]} but the sample is {sample.width}×"
                              f"{sample.height}")
    masks.check_classes(mask, sample.dataset.schema.num_classes)
    return _new_version(sample, user, base_version, reason, Annotation.Status.DRAFT, note,
                        mask_data=mask_png(sample, mask), announce=announce)


def _new_version(sample: Sample, user, base_version: int, reason: str, status: str, note: str,
                 mask_data: Optional[bytes] = None, required_status: Iterable[str] = (),
                 announce: bool = True) -> Annotation:
    try:
        with atomic_with_files():  # a conflict found after the mask was stored (409) leaves no mask file behind
            annotation, _ = Annotation.objects.get_or_create(sample=sample)
            if annotation.version != base_version:
                raise _conflict(sample, base_version)
            if required_status and annotation.status not in required_status:
                raise Conflict(f"the annotation is {annotation.status}; this needs it to be "
                               f"{' or '.join(required_status)}", current_version=annotation.version,
                               current_status=annotation.status)
            new_version = base_version + 1
            mask_name = annotation.mask.name
            if mask_data is not None:
                mask_name = save_bytes(f"datasets/{sample.dataset_id}/masks/{sample.pk}/v{new_version}.png",
                                       mask_data)
            elif not mask_name:
                raise Conflict("there is no mask to submit or review yet", current_version=annotation.version,
                               current_status=annotation.status)
            changed = Annotation.objects.filter(pk=annotation.pk, version=base_version).update(
                version=new_version, status=status, author=user, mask=mask_name, updated=timezone.now())
            if not changed:
                raise _conflict(sample, base_version)
            AnnotationRevision.objects.create(annotation=annotation, version=new_version, status=status, reason=reason,
                                              author=user, mask=mask_name, note=note)
            if announce:
                event = {"type": "saved", "version": new_version, "status": status, "reason": reason,
                         "author": user.get_username() if user else None, "seq": None,
                         "mask_changed": mask_data is not None}
                transaction.on_commit(lambda: publish(annotation_group(sample.pk), event))
    except IntegrityError:  # two first saves raced on get_or_create or the revision's (annotation, version)
        raise _conflict(sample, base_version) from None
    return annotation_of(sample)


def submit(sample: Sample, user, base_version: int) -> Annotation:
    return _new_version(sample, user, base_version, AnnotationRevision.Reason.SUBMIT, Annotation.Status.SUBMITTED, "",
                        required_status=[Annotation.Status.DRAFT, Annotation.Status.REJECTED])


def review(sample: Sample, user, base_version: int, decision: str, note: str = "") -> Annotation:
    if decision not in (Annotation.Status.REVIEWED, Annotation.Status.REJECTED):
        raise ValidationError("decision must be 'reviewed' or 'rejected'")
    if not user.has_perm(roles.REVIEW):
        raise PermissionDenied("only admins review annotations")
    return _new_version(sample, user, base_version, AnnotationRevision.Reason.REVIEW, decision, note,
                        required_status=[Annotation.Status.SUBMITTED])


def restore(sample: Sample, user, base_version: int, version: int) -> Annotation:
    """Make revision ``version``'s mask the next version (a draft): the revisions after it stay, nothing is lost."""
    if version == base_version:
        raise ValidationError(f"version {version} is the current one: there is nothing to restore")
    return save_mask(sample, user, read_mask(sample, version), base_version, AnnotationRevision.Reason.RESTORE,
                     note=f"restored version {version}")


def revisions(sample: Sample):
    return AnnotationRevision.objects.filter(annotation__sample=sample).select_related("author").order_by("-version")


def sample_coco(sample: Sample) -> dict:
    names, colours = schema_classes(sample.dataset.schema)
    annotation = annotation_of(sample)
    mask = read_mask(sample)
    return {
        "images": [{"id": sample.pk, "width": sample.width, "height": sample.height,
                    "file_name": f"{sample.pk}.png"}],
        "categories": [{"id": i, "name": n, "color": c} for i, (n, c) in enumerate(zip(names, colours)) if i],
        "annotations": masks.coco_annotations(mask, sample.pk, names),
        "info": {"annotation_version": annotation.version if annotation else 0,
                 "status": annotation.status if annotation else None},
    }


# --- active learning ----------------------------------------------------------------------------------------------
def labelled_filter() -> dict:
    return {"annotation__version__gt": 0}


def next_to_label(dataset: Dataset, limit: int = 20):
    """Unlabelled samples, most uncertain first (ensemble disagreement): labelling these helps the branch most."""
    return (dataset.samples.exclude(**labelled_filter())
            .order_by(F("uncertainty").desc(nulls_last=True), "id")[:limit])


# --- model predictions --------------------------------------------------------------------------------------------
def dataset_segmentation(dataset: Dataset, segmentation_id: int) -> Checkpoint:
    """Checkpoint ``segmentation_id`` if it is a segmentation branch that works on ``dataset``: trained on the
    dataset's generator and predicting the dataset's label schema (its classes). Anything else is refused up front
    with a ValidationError (400) that says what differs, rather than queued for a worker to fail on."""
    checkpoint = Checkpoint.objects.select_related("schema").filter(pk=segmentation_id).first()
    if checkpoint is None or checkpoint.kind != Checkpoint.Kind.SEGMENTATION:
        what = "does not exist" if checkpoint is None else f"is a {checkpoint.kind}"
        raise ValidationError(f"checkpoint #{segmentation_id} {what}, not a segmentation branch of dataset "
                              f"'{dataset.name}'")
    if checkpoint.generator_id != dataset.generator_id:
        raise ValidationError(f"segmentation branch #{checkpoint.pk} belongs to generator #{checkpoint.generator_id}, "
                              f"not to generator #{dataset.generator_id} of dataset '{dataset.name}'")
    if checkpoint.schema_id != dataset.schema_id:
        predicts = f"label schema '{checkpoint.schema.name}'" if checkpoint.schema else "no label schema"
        raise ValidationError(f"segmentation branch #{checkpoint.pk} predicts the classes of {predicts}, not those "
                              f"of label schema '{dataset.schema.name}' of dataset '{dataset.name}'")
    return checkpoint


class PredictionMissing(LookupError):
    """No stored prediction answers the request (HTTP 404); the message says how to get one."""


def store_prediction(sample: Sample, segmentation: Checkpoint, labels: np.ndarray, uncertainty: np.ndarray,
                     uncertainty_peak: float, score: float) -> SamplePrediction:
    """Record what ``segmentation`` predicts for ``sample`` (a worker ran it): ``labels`` and ``uncertainty`` are
    ``uint8 [H, W]`` at the sample's size (class indices; 0 = sure … 255 = ``uncertainty_peak`` nats), ``score``
    the image's active-learning score, which also becomes the sample's ranking (``uncertainty``, ``ranked_with``)."""
    if segmentation.kind != Checkpoint.Kind.SEGMENTATION:
        raise ValidationError(f"checkpoint #{segmentation.pk} is a {segmentation.kind}, not a segmentation branch")
    for name, array in (("labels", labels), ("uncertainty", uncertainty)):
        if array.shape != (sample.height, sample.width) or array.dtype != np.uint8:
            raise ValidationError(f"predicted {name} must be uint8 {sample.height}×{sample.width}, got "
                                  f"{array.dtype} {'×'.join(map(str, array.shape))}")
    masks.check_classes(labels, sample.dataset.schema.num_classes)
    folder = f"datasets/{sample.dataset_id}/predictions/{sample.pk}"
    with files_removed_on_error():  # a prediction that cannot be recorded leaves no files behind
        mask_name = save_bytes(f"{folder}/seg{segmentation.pk}-labels.png", mask_png(sample, labels))
        uncertainty_name = save_bytes(f"{folder}/seg{segmentation.pk}-uncertainty.png", _grey_png(uncertainty))
        with transaction.atomic():
            previous = SamplePrediction.objects.select_for_update().filter(sample=sample,
                                                                           segmentation=segmentation).first()
            replaced = (previous.mask.name, previous.uncertainty.name) if previous else ()
            prediction, _ = SamplePrediction.objects.update_or_create(
                sample=sample, segmentation=segmentation,
                defaults={"mask": mask_name, "uncertainty": uncertainty_name,
                          "uncertainty_peak": float(uncertainty_peak), "score": float(score)})
            Sample.objects.filter(pk=sample.pk).update(uncertainty=float(score), ranked_with=segmentation)
            # The old files go once the row names the new ones; a reader that got the old row retries.
            delete_on_commit(replaced)
    return prediction


def _grey_png(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _delete_prediction(prediction: SamplePrediction) -> None:
    names = (prediction.mask.name, prediction.uncertainty.name)
    prediction.delete()
    delete_on_commit(names)


def prediction_of(sample: Sample, segmentation_id: Optional[int] = None) -> SamplePrediction:
    """The stored prediction of segmentation branch ``segmentation_id`` (default: the dataset's active branch).

    PredictionMissing (404) says why there is none and what produces one; a checkpoint that is not a segmentation
    branch of this dataset is a ValidationError (400, ``dataset_segmentation``)."""
    dataset = sample.dataset
    if segmentation_id is None:
        try:
            segmentation = active_segmentation(dataset.generator, dataset.schema)
        except ValidationError as exc:
            raise PredictionMissing(f"sample #{sample.pk} has no prediction: {' '.join(exc.messages)}") from None
    else:
        segmentation = dataset_segmentation(dataset, segmentation_id)
    prediction = SamplePrediction.objects.filter(sample=sample, segmentation=segmentation).first()
    if prediction is not None:
        return prediction
    if not sample.latent:
        raise PredictionMissing(f"sample #{sample.pk} is an uploaded image without a latent yet: embed it "
                                f"(POST /api/samples/{sample.pk}/embed) and its prediction is made then")
    raise PredictionMissing(
        f"segmentation branch #{segmentation.pk} '{segmentation.name}' has no prediction for sample #{sample.pk} "
        "yet: one is stored when a sample is generated, embedded or pre-labelled, and for every sample when the "
        f"dataset is ranked (POST /api/datasets/{dataset.pk}/rank, run after each retraining)")


def prediction_file(sample: Sample, segmentation_id: Optional[int], part: str) -> tuple[SamplePrediction, bytes]:
    """``part`` ('mask' or 'uncertainty') of the stored prediction, as PNG bytes."""
    for _attempt in range(2):  # a worker may replace the files between reading the row and reading the file
        prediction = prediction_of(sample, segmentation_id)
        try:
            return prediction, read_bytes(getattr(prediction, part).name)
        except FileNotFoundError:
            continue
    raise PredictionMissing(f"the prediction for sample #{sample.pk} is being recomputed: try again in a moment")


def prediction_urls(prediction: SamplePrediction) -> dict:
    query = f"?segmentation_id={prediction.segmentation_id}"
    return {"segmentation_id": prediction.segmentation_id,
            "prediction_url": f"/api/samples/{prediction.sample_id}/segmentation.png{query}",
            "uncertainty_url": f"/api/samples/{prediction.sample_id}/uncertainty.png{query}",
            "uncertainty": prediction.score, "uncertainty_peak": prediction.uncertainty_peak}


# --- live annotation rooms ---------------------------------------------------------------------------------------
def presence(dataset: Dataset) -> dict[str, list[str]]:
    """``{sample_id: [username, …]}`` of the dataset's occupied annotation rooms (the live state in Redis)."""
    occupied = rooms.dataset_presence(dataset.pk)
    existing = set(dataset.samples.filter(pk__in=list(occupied)).values_list("pk", flat=True))
    return {str(sample_id): names for sample_id, names in occupied.items() if sample_id in existing}


def save_live_operations(sample_id: int, user, reason: str = "autosave") -> dict | None:
    """Apply the room's waiting operations to the stored mask as one revision (``reason``: 'autosave' when the
    room's timer or a leaving painter flushes, 'save' when a painter asked) and return the room's new state; None
    if nothing was waiting. The room announces the revision itself, with the operations' seq."""
    def save(entries: list[dict]) -> dict:
        sample = Sample.objects.select_related("dataset__schema").get(pk=sample_id)
        painters = sorted({e["username"] for e in entries})
        note = f"live operations {entries[0]['seq']}–{entries[-1]['seq']} by {', '.join(painters)}"
        for _attempt in range(5):  # a REST save may slip in between reading and writing: re-apply on top of it
            annotation = annotation_of(sample)
            mask = masks.apply_ops(read_mask(sample), [e["op"] for e in entries])
            try:
                annotation = save_mask(sample, user, mask, annotation.version if annotation else 0,
                                       AnnotationRevision.Reason(reason), note, announce=False)
                break
            except Conflict:
                continue
        else:
            raise Conflict("the annotation kept changing while live operations were being saved; they stay queued")
        return {"version": annotation.version, "status": annotation.status, "reason": reason,
                "author": user.get_username(), "seq": entries[-1]["seq"]}

    return rooms.flush(sample_id, save)


# --- export -------------------------------------------------------------------------------------------------------
def export_zip(dataset: Dataset) -> bytes:
    """images/<id>.png, masks/<id>.png (palette PNG of class indices), annotations.coco.json, schema.json."""
    names, colours = schema_classes(dataset.schema)
    coco = {"images": [], "annotations": [],
            "categories": [{"id": i, "name": n, "color": c} for i, (n, c) in enumerate(zip(names, colours)) if i]}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", json.dumps({"name": dataset.schema.name, "classes": [
            {"index": i, "name": n, "colour": c} for i, (n, c) in enumerate(zip(names, colours))]}, indent=1))
        for sample in dataset.samples.select_related("annotation"):
            archive.writestr(f"images/{sample.pk}.png", read_bytes(sample.image.name))
            coco["images"].append({"id": sample.pk, "width": sample.width, "height": sample.height,
                                   "file_name": f"images/{sample.pk}.png"})
            annotation = getattr(sample, "annotation", None)
            if annotation is None or annotation.version == 0:
                continue
            archive.writestr(f"masks/{sample.pk}.png", read_bytes(annotation.mask.name))
            mask = read_mask(sample)
            coco["annotations"] += masks.coco_annotations(mask, sample.pk, names,
                                                          first_id=len(coco["annotations"]) + 1)
        archive.writestr("annotations.coco.json", json.dumps(coco))
    return buffer.getvalue()


# --- jobs on datasets -----------------------------------------------------------------------------------------------
def enqueue_prelabel(sample: Sample, user):
    if not sample.latent:
        raise ValidationError(f"sample #{sample.pk} has no latent yet: embed the uploaded image first")
    segmentation = active_segmentation(sample.dataset.generator, sample.dataset.schema)
    annotation = annotation_of(sample)
    # The pre-label lands as the next revision only if nobody saved meanwhile (else the job fails with a conflict).
    return jobs.enqueue("prelabel", user, {"sample_id": sample.pk, "segmentation_id": segmentation.pk,
                                           "base_version": annotation.version if annotation else 0})


def enqueue_segment(sample: Sample, user):
    """``POST /samples/{id}/segment``: have the active branch predict the sample (a ``segment`` job that stores it as
    ``segmentation.png`` / ``uncertainty.png`` and names them in its result), for a sample whose stored prediction
    is missing or of another branch. A waiting job for the same sample and branch is reused."""
    if not sample.latent:
        raise ValidationError(f"sample #{sample.pk} has no latent yet: embed the uploaded image first")
    segmentation = active_segmentation(sample.dataset.generator, sample.dataset.schema)
    params = {"sample_id": sample.pk, "segmentation_id": segmentation.pk}
    waiting = Job.objects.filter(kind=Job.Kind.SEGMENT, status=Job.Status.QUEUED, cancel_requested=False,
                                 params__sample_id=sample.pk, params__segmentation_id=segmentation.pk).first()
    return waiting or jobs.enqueue(Job.Kind.SEGMENT, user, params)


def enqueue_tuning(sample: Sample, user, steps: Optional[int] = None):
    """``POST /samples/{id}/tune``: a ``tune`` job that fine-tunes the generator around the sample's latent (pivotal
    tuning), for the latent file the sample has now."""
    if not sample.latent:
        raise ValidationError(f"sample #{sample.pk} has no latent yet: embed the uploaded image first, then tune")
    return jobs.enqueue(Job.Kind.TUNE, user, {"sample_id": sample.pk, "pivot": sample.latent.name, "steps": steps})


def enqueue_ranking(dataset: Dataset, user, segmentation_id: Optional[int] = None):
    """``POST /datasets/{id}/rank``: queue a ranking by branch ``segmentation_id`` (default: the active branch),
    checked by ``dataset_segmentation`` before the job exists."""
    if segmentation_id is None:
        segmentation = active_segmentation(dataset.generator, dataset.schema)
    else:
        segmentation = dataset_segmentation(dataset, segmentation_id)
    return jobs.enqueue("rank", user, {"dataset_id": dataset.pk, "segmentation_id": segmentation.pk})


# --- API representations ---------------------------------------------------------------------------------------------
def upload_limit() -> int:
    return settings.STUDIO_MAX_UPLOAD_BYTES


def schema_out(schema: LabelSchema) -> dict:
    names, colours = schema_classes(schema)
    return {"id": schema.pk, "name": schema.name, "description": schema.description,
            "classes": [{"name": n, "colour": c} for n, c in zip(names, colours)]}


def dataset_out(dataset: Dataset) -> dict:
    return {"id": dataset.pk, "name": dataset.name, "description": dataset.description,
            "schema_id": dataset.schema_id, "generator_id": dataset.generator_id,
            "num_samples": dataset.samples.count(), "num_labelled": dataset.samples.filter(**labelled_filter()).count(),
            "created": dataset.created}


def sample_out(sample: Sample) -> dict:
    annotation = getattr(sample, "annotation", None)
    return {"id": sample.pk, "dataset_id": sample.dataset_id, "source": sample.source, "seed": sample.seed,
            "width": sample.width, "height": sample.height, "has_latent": bool(sample.latent),
            "tuned": bool(sample.tuning), "tuning": sample.tuning_metrics or None,
            "image_url": f"/api/samples/{sample.pk}/image.png", "uncertainty": sample.uncertainty,
            "annotation_version": annotation.version if annotation else 0,
            "annotation_status": annotation.status if annotation and annotation.version else None,
            "created": sample.created}


def annotation_out(sample: Sample) -> dict:
    annotation = annotation_of(sample)
    if annotation is None or annotation.version == 0:
        return {"sample_id": sample.pk, "version": 0, "status": None, "author": None, "mask_url": None,
                "updated": None}
    return {"sample_id": sample.pk, "version": annotation.version, "status": annotation.status,
            "author": annotation.author.get_username() if annotation.author else None,
            "mask_url": f"/api/samples/{sample.pk}/annotation/mask.png?version={annotation.version}",
            "updated": annotation.updated}


def revision_out(revision: AnnotationRevision) -> dict:
    return {"version": revision.version, "status": revision.status, "reason": revision.reason,
            "author": revision.author.get_username() if revision.author else None, "note": revision.note,
            "created": revision.created}
