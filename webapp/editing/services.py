"""Edits (modes 1–3), the shared vector library and saved compositions."""
from __future__ import annotations

import io
import json
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image

from webapp.accounts import roles
from webapp.datasets import services as datasets
from webapp.datasets.models import Sample
from webapp.editing.models import Composition, CompositionItem, EditResult, EditSession, EditVector
from webapp.errors import Conflict, readable
from webapp.jobs import services as jobs
from webapp.jobs.models import Job
from webapp.realtime.groups import data_url, edit_group, publish, reply
from webapp.realtime.rooms import sync_redis
from webapp.registry.models import Checkpoint
from webapp.registry.services import active_segmentation
from webapp.storage import atomic_with_files, delete_on_commit, files_removed_on_error, read_bytes, save_bytes

THUMB_SIZE = 128
# Rendered thumbnails (vectors that come without pictures): one fixed generator sample, so that every such vector of
# a generator is shown on the same face, at the library's default slider position.
THUMBNAIL_SEED = 0
THUMBNAIL_TRUNCATION = 0.7
DEFAULT_SCALE = 1.0  # frontend/js/views/library.js choose(): a vector's slider starts here
MODE_KIND = {EditSession.Mode.APPLY: "apply", EditSession.Mode.REFINE: "refine", EditSession.Mode.OPTIMIZE: "optimize"}


# --- edits ----------------------------------------------------------------------------------------------------------
def _vectors_for(generator: Checkpoint, items: Sequence[tuple[int, float]]) -> list[dict]:
    if not items:
        raise ValidationError("modes 1 and 2 need at least one vector (or a composition)")
    if len(items) > 32:
        raise ValidationError("at most 32 vectors can be composed in one edit")
    found = {v.pk: v for v in EditVector.objects.filter(pk__in=[pk for pk, _ in items])}
    chosen = []
    for pk, scale in items:
        vector = found.get(pk)
        if vector is None:
            raise ValidationError(f"there is no edit vector #{pk}")
        if vector.generator_id != generator.pk:
            raise ValidationError(f"vector '{vector.name}' belongs to generator #{vector.generator_id}, not to this "
                                  f"sample's generator #{generator.pk}")
        chosen.append({"vector_id": pk, "scale": float(scale)})
    return chosen


# A result image's format → its file suffix. PNG is lossless; JPEG is for mode 1's slider previews.
IMAGE_FORMATS = {"png": "png", "jpeg": "jpg"}


def start_edit(user, sample: Sample, mode: int, *, vectors: Sequence[tuple[int, float]] = (),
               composition: Optional[Composition] = None, target_mask_png: bytes = b"",
               edited_classes: Sequence[int] = (), steps: Optional[int] = None, roi_png: bytes = b"",
               stop_follow: Optional[float] = None, with_mask: bool = True, image_format: str = "png"
               ) -> EditSession:
    """Create an edit session and queue its job; the result arrives on the session's websocket and in the DB.

    Mode 3 optimises inside ``roi_png`` (greyscale PNG, 1 inside, 0 outside) when it is given, else inside the
    changed pixels plus the pixels of ``edited_classes``, dilated; it stops early once ``stop_follow`` of that region
    follows the painted mask. A mode-1 edit with ``with_mask=False`` renders the image alone, and with
    ``image_format="jpeg"`` stores it as a JPEG (a slider's preview)."""
    if not with_mask and mode != EditSession.Mode.APPLY:
        raise ValidationError("with_mask=false is for mode 1: modes 2 and 3 optimise the segmentation, which their "
                              "result always shows")
    if image_format not in IMAGE_FORMATS:
        raise ValidationError(f"image_format {image_format!r}: use one of {', '.join(IMAGE_FORMATS)}")
    if image_format != "png" and mode != EditSession.Mode.APPLY:
        raise ValidationError("image_format is for mode 1 (a slider's preview): the results of modes 2 and 3 are "
                              "stored losslessly as PNG")
    if not sample.latent:
        raise ValidationError(f"sample #{sample.pk} has no latent yet: embed the uploaded image first")
    generator = sample.dataset.generator
    segmentation = active_segmentation(generator, sample.dataset.schema)
    params: dict = {}
    if mode in (EditSession.Mode.APPLY, EditSession.Mode.REFINE):
        if roi_png or stop_follow is not None:
            raise ValidationError("roi_png and stop_follow are for mode 3 (optimise from a repainted mask)")
        if composition is not None:
            vectors = [(item.vector_id, item.scale) for item in composition.items.all()]
        params["vectors"] = _vectors_for(generator, vectors)
        if not with_mask:
            params["with_mask"] = False
        if image_format != "png":
            params["image_format"] = image_format
    else:
        if not target_mask_png:
            raise ValidationError("mode 3 needs target_mask_png: the mask with your repainted region")
        target = datasets.parse_mask(sample, target_mask_png)
        num_classes = sample.dataset.schema.num_classes
        bad = [c for c in edited_classes if not 0 <= c < num_classes]
        if bad:
            raise ValidationError(f"edited_classes {bad} are not classes of the schema (0..{num_classes - 1})")
        params["edited_classes"] = sorted(set(edited_classes))
        if roi_png and not datasets.parse_roi(sample, roi_png).any():
            raise ValidationError("roi_png marks no pixel: paint the region of interest with 1")
        if stop_follow is not None:
            params["stop_follow"] = float(stop_follow)
    if steps is not None:
        if mode == EditSession.Mode.APPLY:
            raise ValidationError("mode 1 applies vectors without optimisation: 'steps' is for modes 2 and 3")
        params["steps"] = steps
    with atomic_with_files():  # a refused job (429) leaves no target mask behind
        session = EditSession.objects.create(sample=sample, generator=generator, segmentation=segmentation, mode=mode,
                                             params=params, user=user)
        if mode == EditSession.Mode.OPTIMIZE:
            session.target_mask.name = save_bytes("edits/target.png",
                                                  datasets.mask_png(sample, target))
            if roi_png:
                session.params["roi_file"] = save_bytes(f"edits/{session.pk}/roi.png", roi_png)
            session.save(update_fields=["target_mask", "params"])
        batch_key = _mode1_batch_key(sample, segmentation) if mode == EditSession.Mode.APPLY else ""
        session.job = jobs.enqueue(MODE_KIND[mode], user, {"session_id": session.pk}, batch_key=batch_key)
        session.save(update_fields=["job"])
        if mode == EditSession.Mode.APPLY:
            _supersede_queued_applies(session)
    return session


def _mode1_batch_key(sample, segmentation) -> str:
    """Mode-1 requests share a forward pass only on the same networks: generator, branch and the sample's pivotal
    tuning (a prefix of its file's hash; none: the generator as it is)."""
    return f"apply:{sample.dataset.generator_id}:{segmentation.pk}:{sample.tuning_sha256[:16]}"


def _supersede_queued_applies(session: EditSession) -> None:
    """Mode-1 requests coalesce: the newest slider position wins. The same user's earlier mode-1 requests on the same
    sample that no worker has taken yet are cancelled (a running one finishes), so a worker never renders positions
    the user has already moved past."""
    older = (EditSession.objects.filter(user=session.user, sample=session.sample, mode=EditSession.Mode.APPLY,
                                        job__status=Job.Status.QUEUED, pk__lt=session.pk)
             .values_list("job_id", flat=True))
    message = f"superseded by a newer slider position (job #{session.job_id})"
    for job_id in list(older):
        # Only while still queued: a worker that claimed it meanwhile runs it to the end.
        if Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
                status=Job.Status.CANCELLED, cancel_requested=True, finished=timezone.now(), message=message):
            transaction.on_commit(lambda job_id=job_id: jobs.publish_status(Job.objects.get(pk=job_id)))


# --- live apply: slider positions on one open socket ------------------------------------------------------------------
LIVE_APPLY_TASK = "gpu_worker.live_apply"


def live_apply_request(sample_id: int, vectors: Sequence[tuple[int, float]], seq: int) -> dict:
    """A slider position of a live-apply socket, checked as ``start_edit`` checks a mode-1 edit, as the worker's
    request: the image alone, as a JPEG, answered on the socket and stored nowhere (no session, no job row)."""
    sample = Sample.objects.select_related("dataset__generator", "dataset__schema").get(pk=sample_id)
    if not sample.latent:
        raise ValidationError(f"sample #{sample.pk} has no latent yet: embed the uploaded image first")
    generator = sample.dataset.generator
    segmentation = active_segmentation(generator, sample.dataset.schema)
    return {"sample_id": sample.pk, "generator_id": generator.pk, "segmentation_id": segmentation.pk, "seq": seq,
            "vectors": _vectors_for(generator, vectors)}


LIVE_APPLY_RECHECK_SECONDS = 5.0


class LiveApplyChecks:
    """``live_apply_request`` for the positions of one live-apply socket, remembered: a slider sends many positions a
    second for the same sample and vectors, and the worker reads their rows again anyway (a vector or branch deleted
    meanwhile fails there, with its reason). A position whose vectors were all checked within the last
    ``LIVE_APPLY_RECHECK_SECONDS`` is built without a query (``known``); any other is checked (``check``)."""

    def __init__(self, sample_id: int):
        self.sample_id = sample_id
        self.checked: Optional[dict] = None  # the last checked request
        self.vector_ids: set[int] = set()  # the vectors checked since checked_at
        self.checked_at = float("-inf")

    def _fresh(self) -> bool:
        return time.monotonic() - self.checked_at <= LIVE_APPLY_RECHECK_SECONDS

    def known(self, vectors: Sequence[tuple[int, float]], seq: int) -> Optional[dict]:
        if self.checked is None or not self._fresh() or not {pk for pk, _ in vectors} <= self.vector_ids:
            return None
        return {**self.checked, "seq": seq, "vectors": [{"vector_id": pk, "scale": float(scale)}
                                                        for pk, scale in vectors]}

    def check(self, vectors: Sequence[tuple[int, float]], seq: int) -> dict:
        request = live_apply_request(self.sample_id, vectors, seq)
        ids = {item["vector_id"] for item in request["vectors"]}
        if self._fresh():
            self.vector_ids |= ids
        else:
            self.vector_ids, self.checked_at = ids, time.monotonic()
        self.checked = dict(request)  # the consumer numbers the request it gets: not this one
        return request


def live_batch_key(request: dict) -> str:
    """The Redis list where live-apply positions wait for a worker: one per generator and branch, the networks a
    forward pass shares (samples of other tunings in one batch are drawn apart by the worker)."""
    return f"{settings.STUDIO_KEY_PREFIX}:live-apply:{request['generator_id']}:{request['segmentation_id']}"


def send_live_apply(request: dict, reply_to: str) -> None:
    """Queue a live-apply position for a worker, to be answered at ``reply_to`` (its consumer's channel name): onto
    its batch's list in the channel layer's Redis (``REDIS_URL``), where a worker takes every position waiting in one
    forward pass (several users' sliders), then a message on the interactive queue that wakes a worker for it. A
    position still waiting when its socket gave up on it is dropped unread, and so is the message."""
    limit = settings.STUDIO_LIVE_APPLY_TIMEOUT_SECONDS
    key = live_batch_key(request)
    entry = json.dumps({**request, "reply_to": reply_to, "queued_at": time.time()})
    sync_redis().pipeline().rpush(key, entry).expire(key, math.ceil(limit)).execute()
    wake_live_worker(key)


def wake_live_worker(batch_key: str) -> None:
    from gpu_worker.celery_app import app  # the Celery app only: the webapp never imports the engine's tasks

    limit = settings.STUDIO_LIVE_APPLY_TIMEOUT_SECONDS
    app.send_task(LIVE_APPLY_TASK, args=[batch_key], queue=jobs.INTERACTIVE, expires=limit, soft_time_limit=limit,
                  time_limit=limit + 30)


def reply_live_apply(request: dict, image_jpeg: bytes, worker_ms: float, batch_size: int) -> None:
    """The worker's answer to a live-apply request: its picture, inline."""
    reply(request["reply_to"], {"type": "apply.image", "ticket": request["ticket"], "seq": request["seq"],
                                "sample": request["sample_id"], "image": data_url(image_jpeg, "image/jpeg"),
                                "worker_ms": round(worker_ms, 1), "batch_size": batch_size})


def reply_live_apply_failed(request: dict, error: str) -> None:
    reply(request["reply_to"], {"type": "apply.failed", "ticket": request["ticket"], "seq": request["seq"],
                                "error": readable(error)})


def follow_retry(sender, old, new, **_kwargs) -> None:
    """jobs.signals.job_retried: an edit whose job is retried points at the new job."""
    EditSession.objects.filter(job=old).update(job=new)


def visible_sessions(user):
    """The edits ``user`` may see (and their files): their own; every edit for those who see all jobs."""
    sessions = EditSession.objects.select_related("job", "result")
    return sessions if user.has_perm(roles.VIEW_ALL_JOBS) else sessions.filter(user=user)


def visible_results(user):
    return EditResult.objects.filter(session__in=visible_sessions(user))


def store_result(session: EditSession, *, image: bytes, mask_png: Optional[bytes], latent: bytes,
                 delta: bytes = b"", edited_classes: Sequence[int] = (), metrics: Optional[dict] = None,
                 image_format: str = "png") -> EditResult:
    """Called by the worker when an edit finished: store its files and row and announce ``edit.result`` on the
    edit's websocket, with what ``GET /edits/{id}`` gives as its ``result`` (``result_out``). ``image``: encoded in
    ``image_format`` (``IMAGE_FORMATS``); a JPEG (a slider's preview) also travels in the message itself, as
    ``image`` (a data URL), so the slider shows it without another request. ``mask_png`` None: a mode-1 edit asked
    for without its mask."""
    result = EditResult(session=session, edited_classes=list(edited_classes), metrics=metrics or {})
    with files_removed_on_error():  # a result that cannot be recorded leaves no files behind
        result.image.name = save_bytes(f"edits/image.{IMAGE_FORMATS[image_format]}", image)
        if mask_png is not None:
            result.mask.name = save_bytes("edits/mask.png", mask_png)
        result.latent.name = save_bytes("edits/latent.safetensors", latent)
        if delta:
            result.delta.name = save_bytes("edits/vector.safetensors", delta)
        with transaction.atomic():
            earlier = EditResult.objects.filter(session=session)  # a retried job replaces the earlier result
            _delete_unused_files_on_commit([name for old in earlier for name in
                                            (old.image.name, old.mask.name, old.latent.name, old.delta.name)])
            earlier.delete()
            result.save()
    message = {"type": "edit.result", "session": session.pk, **result_out(result)}
    if image_format == "jpeg":
        message["image"] = data_url(image, "image/jpeg")
    publish(edit_group(session.pk), message)
    return result


def publish_preview(session: EditSession, job_id: int, step: int, total: int, image_jpeg: bytes,
                    mask_png: Optional[bytes] = None) -> None:
    """An intermediate picture of a running mode 2/3 edit (a JPEG: a 1024² PNG took 14× longer to encode, in the
    optimisation's loop, and was 6× bigger) and its segmentation (a PNG: exact labels) for the edit's websocket;
    nothing is stored."""
    message = {"type": "edit.preview", "job": job_id, "step": step, "total": total,
               "image": data_url(image_jpeg, "image/jpeg")}
    if mask_png is not None:
        message["mask"] = data_url(mask_png)
    publish(edit_group(session.pk), message)


def _delete_unused_files_on_commit(names: Sequence[str]) -> None:
    """Once the transaction commits, delete the files ``names`` that no library vector uses: a vector saved from an
    edit shares the edit's vector file, and its thumbnails are its own."""
    names = [name for name in names if name]
    used = set()
    for field in ("file", "thumb_before", "thumb_after"):
        used.update(EditVector.objects.filter(**{f"{field}__in": names}).values_list(field, flat=True))
    delete_on_commit(name for name in names if name not in used)


def session_out(session: EditSession) -> dict:
    result = getattr(session, "result", None)
    return {"id": session.pk, "sample_id": session.sample_id, "generator_id": session.generator_id,
            "mode": session.mode, "params": session.params, "job_id": session.job_id,
            "job_status": session.job.status if session.job else None, "created": session.created,
            "result": None if result is None else result_out(result)}


def result_out(result: EditResult) -> dict:
    return {"image_url": default_storage.url(result.image.name),
            "mask_url": default_storage.url(result.mask.name) if result.mask else None,
            "has_vector": bool(result.delta), "edited_classes": result.edited_classes, "metrics": result.metrics}


# --- vector library -------------------------------------------------------------------------------------------------
def visible_vectors(user):
    """The library is shared: every role may see every vector (and its file and thumbnails)."""
    return EditVector.objects.all() if user.has_perm(roles.VIEW_VECTORS) else EditVector.objects.none()


def _clean_tags(tags: Sequence[str]) -> list[str]:
    cleaned = sorted({t.strip().lower() for t in tags if t.strip()})
    if any(len(t) > 40 or not re.match(r"^[\w -]+$", t) for t in cleaned):
        raise ValidationError("tags are words of at most 40 letters, digits, spaces, '-' or '_'")
    return cleaned


def _check_range(scale_min: float, scale_max: float) -> None:
    if not scale_min < scale_max:
        raise ValidationError(f"scale range must be low < high, got [{scale_min}, {scale_max}]")


def _thumbnail(data: bytes, what: str = "the image") -> bytes:
    """``data`` (any image Pillow reads) as an RGB PNG of at most THUMB_SIZE² pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValidationError(f"{what} is not a readable image: {readable(exc)}") from None


def _save_vector_row(vector: EditVector) -> EditVector:
    try:
        with transaction.atomic():
            vector.save()
    except IntegrityError:
        raise Conflict(f"generator #{vector.generator_id} already has a vector named '{vector.name}'") from None
    return vector


def vector_from_edit(user, session: EditSession, name: str, description: str, tags: Sequence[str],
                     scale_min: float, scale_max: float) -> EditVector:
    """Put the vector an edit learned (mode 2 or 3) into the shared library."""
    result = getattr(session, "result", None)
    if result is None or not result.delta:
        raise ValidationError(f"edit #{session.pk} has no learned vector (mode 2/3 edits have one once they finish)")
    _check_range(scale_min, scale_max)
    vector = EditVector(name=name.strip(), description=description, tags=_clean_tags(tags),
                        edited_classes=result.edited_classes, generator=session.generator, author=user,
                        scale_min=scale_min, scale_max=scale_max, source=result)
    vector.file.name = result.delta.name
    with files_removed_on_error():  # a taken name (409) leaves no thumbnails behind
        vector.thumb_before.name = save_bytes("vectors/thumbs/before.png",
                                              _thumbnail(read_bytes(session.sample.image.name)))
        vector.thumb_after.name = save_bytes("vectors/thumbs/after.png",
                                             _thumbnail(read_bytes(result.image.name)))
        return _save_vector_row(vector)


def import_vector(user, data: bytes, filename: str, generator: Checkpoint, tags: Sequence[str] = (),
                  thumbnails: Optional[tuple[bytes, bytes]] = None,
                  then: Optional[Callable[[EditVector], object]] = None) -> EditVector:
    """Add an edit-vector file (project format, from ``GET /vectors/{id}/file`` or the CLI) to the library.

    ``thumbnails``: its before/after pictures (PNG, e.g. a bundle's ``thumbnails/<name>_before.png`` and
    ``_after.png``); without them the vector has none until ``enqueue_thumbnails`` renders some. ``then(vector)``
    runs in the row's transaction; the files are stored before it opens (on SQLite it holds the write lock)."""
    from editor_core.checkpoints import CheckpointError
    from editor_core.vectors import EditVector as EngineVector, VectorGeneratorMismatch

    if len(data) > settings.STUDIO_MAX_UPLOAD_BYTES:
        raise ValidationError(f"vector files are at most {settings.STUDIO_MAX_UPLOAD_BYTES} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vector.safetensors"
        path.write_bytes(data)
        try:
            engine_vector = EngineVector.load(path)
            engine_vector.check_generator(generator.fingerprint)
        except VectorGeneratorMismatch as exc:
            raise ValidationError(f"{readable(exc, {path: filename})}; "
                                  f"{_owner_hint(engine_vector.info.generator_id)}") from None
        except (CheckpointError, ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"'{filename}' is not an edit-vector file: {readable(exc, {path: filename})}"
                                  ) from None
    info = engine_vector.info
    vector = EditVector(name=info.name, description=info.description, tags=_clean_tags(tags),
                        edited_classes=list(info.edited_classes), generator=generator, author=user,
                        scale_min=info.scale_range[0], scale_max=info.scale_range[1])
    pictures = {}
    if thumbnails is not None:  # checked before anything is stored
        pictures = {part: _thumbnail(picture, f"the {part} thumbnail of '{info.name}'")
                    for part, picture in zip(("before", "after"), thumbnails)}
    with files_removed_on_error():  # a taken name (409) or any later failure leaves no files behind
        vector.file.name = save_bytes("vectors/imported.safetensors", data)
        if pictures:
            vector.thumb_before.name = save_bytes("vectors/thumbs/imported-before.png", pictures["before"])
            vector.thumb_after.name = save_bytes("vectors/thumbs/imported-after.png", pictures["after"])
        with transaction.atomic():
            _save_vector_row(vector)
            if then is not None:
                then(vector)
    return vector


def _owner_hint(fingerprint: str) -> str:
    """Where a vector learned on generator ``fingerprint`` belongs in this studio (for the mismatch error)."""
    owner = Checkpoint.objects.filter(kind=Checkpoint.Kind.GENERATOR, fingerprint=fingerprint).first()
    if owner is None:
        return (f"generator {fingerprint} is not registered in this studio: import it (POST /api/checkpoints/upload) "
                "before its vectors")
    return f"it belongs to generator #{owner.pk} '{owner.name}': upload it with generator_id={owner.pk}"


def upload_vector(user, data: bytes, filename: str, generator: Checkpoint, tags: Sequence[str] = ()) -> EditVector:
    """``POST /vectors/upload``: import the file; a worker renders its thumbnails (files carry no pictures). If
    they cannot be queued, neither the row nor the stored file remains."""
    return import_vector(user, data, filename, generator, tags, then=lambda vector: enqueue_thumbnails(vector, user))


def thumbnail_scale(vector: EditVector) -> float:
    """The scale a vector's rendered thumbnails show: the library's default slider position (1, the scale the
    vector was learned at), moved into the vector's range if that excludes it."""
    return min(max(DEFAULT_SCALE, vector.scale_min), vector.scale_max)


def enqueue_thumbnails(vector: EditVector, user):
    """Queue the rendering of ``vector``'s before/after thumbnails (interactive queue): generator sample
    THUMBNAIL_SEED without and with the vector at ``thumbnail_scale``. The library shows them once it is done."""
    job = jobs.enqueue("vector_thumbnails", user, {
        "vector_id": vector.pk, "seed": THUMBNAIL_SEED, "truncation_psi": THUMBNAIL_TRUNCATION,
        "scale": thumbnail_scale(vector)})
    vector.thumbnails_job = job
    vector.save(update_fields=["thumbnails_job"])
    return job


def store_thumbnails(vector_id: int, before_png: bytes, after_png: bytes) -> EditVector:
    """Called by the worker: attach rendered thumbnails (a vector deleted meanwhile is a ValidationError)."""
    vector = EditVector.objects.filter(pk=vector_id).first()
    if vector is None:
        raise ValidationError(f"edit vector #{vector_id} was deleted before its thumbnails were rendered")
    with files_removed_on_error():
        names = {"thumb_before": save_bytes("vectors/thumbs/before.png", _thumbnail(before_png)),
                 "thumb_after": save_bytes("vectors/thumbs/after.png", _thumbnail(after_png))}
        with transaction.atomic():
            earlier = EditVector.objects.filter(pk=vector_id).values_list("thumb_before", "thumb_after").first()
            if earlier is None or not EditVector.objects.filter(pk=vector_id).update(**names):
                raise ValidationError(f"edit vector #{vector_id} was deleted before its thumbnails were rendered")
            _delete_unused_files_on_commit(earlier)  # re-rendered thumbnails replace the earlier ones
    vector.refresh_from_db()
    return vector


def update_vector(user, vector: EditVector, changes: dict) -> EditVector:
    _check_author(user, vector)
    for field in ("name", "description", "scale_min", "scale_max"):
        if changes.get(field) is not None:
            setattr(vector, field, changes[field])
    if changes.get("tags") is not None:
        vector.tags = _clean_tags(changes["tags"])
    _check_range(vector.scale_min, vector.scale_max)
    return _save_vector_row(vector)


def delete_vector(user, vector: EditVector) -> None:
    _check_author(user, vector)
    if vector.composition_items.exists():
        names = sorted(set(vector.composition_items.values_list("composition__name", flat=True)))
        raise Conflict(f"vector '{vector.name}' is used by compositions {', '.join(names)}: delete those first")
    vector.delete()


def _check_author(user, vector: EditVector) -> None:
    if vector.author_id != user.pk and not user.has_perm(roles.MANAGE_MODELS):
        raise PermissionDenied("only the vector's author or an admin may change or delete it")


def vector_file(vector: EditVector) -> bytes:
    """The vector as a project-format file carrying the library's current name, description and range."""
    from editor_core.vectors import EditVector as EngineVector

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vector.safetensors"
        path.write_bytes(read_bytes(vector.file.name))
        engine_vector = EngineVector.load(path)
        info = engine_vector.info
        info.name, info.description = vector.name, vector.description
        info.scale_range = (vector.scale_min, vector.scale_max)
        info.author = vector.author.get_username() if vector.author else info.author
        engine_vector.save(path)
        return path.read_bytes()


def vector_out(vector: EditVector) -> dict:
    return {"id": vector.pk, "name": vector.name, "description": vector.description, "tags": vector.tags,
            "edited_classes": vector.edited_classes, "generator_id": vector.generator_id,
            "author": vector.author.get_username() if vector.author else None,
            "scale_min": vector.scale_min, "scale_max": vector.scale_max,
            "thumb_before_url": default_storage.url(vector.thumb_before.name) if vector.thumb_before else None,
            "thumb_after_url": default_storage.url(vector.thumb_after.name) if vector.thumb_after else None,
            "thumbnails_job_id": vector.thumbnails_job_id,
            "thumbnails_status": _thumbnails_status(vector),
            "file_url": f"/api/vectors/{vector.pk}/file", "created": vector.created}


def _thumbnails_status(vector: EditVector) -> Optional[str]:
    """``ready`` (pictures attached), the rendering job's status while there are none, or None (none coming)."""
    if vector.thumb_before and vector.thumb_after:
        return "ready"
    return vector.thumbnails_job.status if vector.thumbnails_job_id else None


# --- compositions ---------------------------------------------------------------------------------------------------
def create_composition(user, name: str, generator: Checkpoint, items: Sequence[tuple[int, float]]) -> Composition:
    chosen = _vectors_for(generator, items)
    with transaction.atomic():
        composition = Composition.objects.create(name=name.strip(), generator=generator, author=user)
        CompositionItem.objects.bulk_create(
            CompositionItem(composition=composition, vector_id=item["vector_id"], scale=item["scale"], position=i)
            for i, item in enumerate(chosen))
    return composition


def delete_composition(user, composition: Composition) -> None:
    if composition.author_id != user.pk and not user.has_perm(roles.MANAGE_MODELS):
        raise PermissionDenied("only the composition's author or an admin may delete it")
    composition.delete()


def composition_out(composition: Composition) -> dict:
    return {"id": composition.pk, "name": composition.name, "generator_id": composition.generator_id,
            "author": composition.author.get_username() if composition.author else None,
            "items": [{"vector_id": i.vector_id, "scale": i.scale} for i in composition.items.all()],
            "created": composition.created}
