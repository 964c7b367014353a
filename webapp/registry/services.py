"""Checkpoint registry: import (upload or server path) with validation by the engine, activation, deletion.

An import request is checked at once and queued (``queue_import``); the ``import_checkpoint`` job converts and
registers the file (``import_and_rank``). Every checkpoint is stored in the project format (one .safetensors file);
NVlabs .pkl and rosinality .pt generators are converted on import. ``sha256`` of the stored file is the key workers cache loaded models by.
"""
from __future__ import annotations

import hashlib
import math
import random
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, ProtectedError

from webapp.accounts import roles
from webapp.datasets.models import LabelClass, LabelSchema
from webapp.errors import Conflict, readable
from webapp.jobs import services as jobs
from webapp.jobs.models import Job
from webapp.registry.models import Checkpoint
from webapp.storage import delete_quietly, files_removed_on_error, save_bytes

HEAD_BYTES = 64  # enough of a file for detect_checkpoint_format
IMPORTS_FOLDER = "imports"  # uploads waiting for their import job (deleted when it ends)
ENGINE_FORMAT = {"editgan": Checkpoint.SourceFormat.PROJECT, "nvlabs-pickle": Checkpoint.SourceFormat.NVLABS,
                 "rosinality": Checkpoint.SourceFormat.ROSINALITY}


def visible_checkpoints(user):
    """Every role may see every checkpoint (and its file)."""
    return Checkpoint.objects.all() if user.has_perm(roles.VIEW_CHECKPOINTS) else Checkpoint.objects.none()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_server_path(server_path: str) -> Path:
    """A file below one of STUDIO_IMPORT_ROOTS (never anywhere else on the server)."""
    path = Path(server_path).expanduser().resolve()
    roots = [root.resolve() for root in settings.STUDIO_IMPORT_ROOTS]
    if not any(path.is_relative_to(root) for root in roots):
        raise ValidationError(f"{server_path} is outside the import folders ({', '.join(map(str, roots))}); "
                              "copy the file there or set STUDIO_IMPORT_ROOTS")
    if not path.is_file():
        raise ValidationError(f"{server_path} is not a file on the server")
    return path


def _source_format(path: Path) -> str:
    """Recognised from the file's first bytes (names lie): NVlabs pickle, rosinality torch zip, project safetensors."""
    from editor_core.checkpoints import CheckpointError, detect_checkpoint_format

    try:
        return ENGINE_FORMAT[detect_checkpoint_format(path)]
    except CheckpointError as exc:
        raise ValidationError(readable(exc)) from None


def _source_format_of_head(head: bytes, filename: str) -> str:
    """``_source_format`` of an upload from its first bytes alone (the engine reads no more to tell)."""
    with tempfile.TemporaryDirectory(prefix="studio-import-") as tmp:
        path = Path(tmp) / (Path(filename).name or "upload")
        path.write_bytes(head[:HEAD_BYTES])
        return _source_format(path)


def schema_for(engine_schema) -> LabelSchema:
    """The LabelSchema row for an engine ``LabelSchema``: the one of its name (which must have its classes), else one
    with the same classes under another name (a branch or annotations then work with that schema's data sets), else
    a new one."""
    from editor_core.schema import colour_to_hex

    classes = list(zip(engine_schema.class_names, (colour_to_hex(c) for c in engine_schema.colours)))
    existing = LabelSchema.objects.filter(name=engine_schema.name).first()
    if existing is not None:
        if not _has_classes(existing, classes):
            raise ValidationError(f"a schema named '{engine_schema.name}' exists with other classes; rename one")
        return existing
    for candidate in LabelSchema.objects.annotate(size=Count("classes")).filter(size=len(classes)).order_by("pk"):
        if _has_classes(candidate, classes):
            return candidate
    with transaction.atomic():
        schema = LabelSchema.objects.create(name=engine_schema.name)
        LabelClass.objects.bulk_create(LabelClass(schema=schema, index=i, name=n, colour=c)
                                       for i, (n, c) in enumerate(classes))
    return schema


def _has_classes(schema: LabelSchema, classes: list[tuple[str, str]]) -> bool:
    """Whether ``schema`` has exactly ``classes`` (``colour_to_hex``'s lower-case colours), in order."""
    return [(name, colour.lower()) for name, colour in schema.class_rows()] == classes


def engine_schema(schema: LabelSchema):
    from editor_core.schema import LabelSchema as EngineSchema

    rows = schema.class_rows()
    return EngineSchema(name=schema.name, class_names=tuple(n for n, _ in rows), colours=tuple(c for _, c in rows))


def import_checkpoint(user, *, kind: str, name: str, data: Optional[bytes] = None, filename: str = "",
                      server_path: str = "", generator: Optional[Checkpoint] = None,
                      then: Optional[Callable[[Checkpoint], object]] = None) -> Checkpoint:
    """Validate a checkpoint with the engine, convert it to the project format and register it (``register_file``,
    which runs ``then`` in the row's transaction).

    Give either ``data`` + ``filename`` (an upload) or ``server_path``. Segmentation branches need ``generator``.
    No transaction is open while the file is read and converted: that takes seconds for a large pickle, and on
    SQLite a transaction holds the database's write lock from its start, so every annotator's save would wait.
    """
    if bool(data) == bool(server_path):
        raise ValidationError("give either an uploaded file or a server path, not both or neither")
    with tempfile.TemporaryDirectory(prefix="studio-import-") as tmp:
        if server_path:
            source = resolve_server_path(server_path)
            filename = source.name
        else:
            source = Path(tmp) / Path(filename or "upload").name
            source.write_bytes(data)
        source_format = _source_format(source)
        _check_import(kind, source.stat().st_size, source_format, generator)
        converted = Path(tmp) / "converted.safetensors"
        if kind == Checkpoint.Kind.GENERATOR:
            fields = _convert_generator(source, converted)
        else:
            fields = _check_segmentation(source, converted, generator)
        return register_file(converted, kind=kind, name=name, source_format=source_format, user=user,
                             generator=generator, then=then, **fields)


def _check_import(kind: str, size: int, source_format: str, generator: Optional[Checkpoint]) -> None:
    """What an import needs of its kind and file that is known without loading the file."""
    if kind not in (Checkpoint.Kind.GENERATOR, Checkpoint.Kind.SEGMENTATION):
        raise ValidationError(f"importing {kind} checkpoints is not supported; use generator or segmentation")
    if size > settings.STUDIO_MAX_CHECKPOINT_BYTES:
        raise ValidationError(f"the checkpoint is larger than {settings.STUDIO_MAX_CHECKPOINT_BYTES} bytes")
    if kind == Checkpoint.Kind.SEGMENTATION:
        if generator is None or generator.kind != Checkpoint.Kind.GENERATOR:
            raise ValidationError("a segmentation branch must name the generator it was trained on (generator_id)")
        if source_format != Checkpoint.SourceFormat.PROJECT:
            raise ValidationError("segmentation branches are imported from project .safetensors files only")


def _convert_generator(source: Path, converted: Path) -> dict:
    from editor_core.checkpoints import CheckpointError, generator_fingerprint, load_generator, save_generator

    try:
        generator = load_generator(source)
    except (CheckpointError, ValueError, KeyError, RuntimeError) as exc:
        raise ValidationError(f"not a usable StyleGAN2 generator checkpoint: {readable(exc)}") from None
    save_generator(converted, generator)
    config = generator.config.to_dict()
    config.update(img_resolution=generator.img_resolution, num_ws=generator.num_ws, w_dim=generator.w_dim)
    return {"fingerprint": generator_fingerprint(generator), "config": config}


def _check_segmentation(source: Path, converted: Path, generator: Optional[Checkpoint]) -> dict:
    from editor_core.checkpoints import CheckpointError
    from editor_core.segmentation import load_segmentation

    try:
        ensemble, schema, meta = load_segmentation(source)
    except (CheckpointError, ValueError, KeyError, RuntimeError) as exc:
        raise ValidationError(f"not a usable segmentation checkpoint: {readable(exc)}") from None
    trained_on = meta.get("generator_id")
    if trained_on and trained_on != generator.fingerprint:
        raise ValidationError(f"this segmentation branch was trained on generator {trained_on}, not on "
                              f"#{generator.pk} ({generator.fingerprint})")
    converted.write_bytes(source.read_bytes())
    return {"fingerprint": generator.fingerprint, "config": ensemble.config.to_dict(), "schema": schema,
            "metrics": dict(meta.get("metrics", {}))}


def register_file(path: Path, *, kind: str, name: str, source_format: str, user=None,
                  generator: Optional[Checkpoint] = None, schema=None, fingerprint: str = "",
                  config: Optional[dict] = None, metrics: Optional[dict] = None,
                  then: Optional[Callable[[Checkpoint], object]] = None) -> Checkpoint:
    """Store a project-format file and create its Checkpoint row (the first segmentation branch becomes active).

    ``schema`` is a LabelSchema row or an engine schema (matched or created by ``schema_for`` with the row).
    ``then(checkpoint)`` runs in the row's transaction: when it raises, the row rolls back and the stored file goes.
    The file is written before that transaction opens, which thus stays short (on SQLite it holds the write lock).
    """
    digest = sha256_of(path)
    same = {"fingerprint": fingerprint} if kind == Checkpoint.Kind.GENERATOR else {"sha256": digest}
    duplicate = Checkpoint.objects.filter(kind=kind, **same).first()
    if duplicate is not None:
        raise Conflict(f"this {kind} is already registered as #{duplicate.pk} '{duplicate.name}'",
                       existing_id=duplicate.pk)
    with files_removed_on_error():  # a row that cannot be created (or activated) leaves no stored file behind
        stored = save_bytes(f"checkpoints/{kind}/{digest[:16]}.safetensors", path.read_bytes())
        with transaction.atomic():
            if schema is not None and not isinstance(schema, LabelSchema):
                schema = schema_for(schema)
            checkpoint = Checkpoint.objects.create(
                kind=kind, name=name, file=stored, sha256=digest, fingerprint=fingerprint or digest[:32],
                generator=generator if kind != Checkpoint.Kind.GENERATOR else None, schema=schema,
                source_format=source_format, config=config or {}, metrics=metrics or {}, created_by=user)
            if kind != Checkpoint.Kind.GENERATOR and not Checkpoint.objects.filter(
                    generator=generator, kind=kind, schema=schema, active=True).exists():
                activate(checkpoint)
            if then is not None:
                then(checkpoint)
    return checkpoint


def register_trained(path: Path, *, kind: str, job, generator: Checkpoint, **fields) -> Checkpoint:
    """``register_file`` for a checkpoint a training job made; the job records it in the row's transaction, so
    that a run after a lost worker registers nothing twice (``selectors.registered_by``)."""
    return register_file(path, kind=kind, name=job.params["name"], source_format=Checkpoint.SourceFormat.TRAINED,
                         user=job.requested_by, generator=generator, fingerprint=generator.fingerprint, **fields,
                         then=lambda row: jobs.record_result(job, {"checkpoint_id": row.pk}))


def queue_import(user, *, kind: str, name: str, data: Optional[bytes] = None, filename: str = "",
                 server_path: str = "", generator: Optional[Checkpoint] = None):
    """``POST /checkpoints/upload`` and ``/checkpoints/import``: the checks that cost nothing (one source, its size,
    its format from its first bytes, what its kind needs), then an ``import_checkpoint`` job that converts and
    registers it on a training worker (``import_and_rank``): loading a large pickle takes seconds, which must not
    hold a web worker. An upload is stored for the job, which deletes it when it ends; a server path is read by
    the worker, so the import folders must be the same on every machine."""
    if bool(data) == bool(server_path):
        raise ValidationError("give either an uploaded file or a server path, not both or neither")
    if server_path:
        source = resolve_server_path(server_path)
        _check_import(kind, source.stat().st_size, _source_format(source), generator)
    else:
        _check_import(kind, len(data), _source_format_of_head(data, filename), generator)
    params = {"kind": kind, "name": name, "generator_id": generator.pk if generator else None,
              "filename": Path(filename).name, "server_path": str(server_path), "upload": ""}
    with files_removed_on_error():  # a job that cannot be queued (the user's limit) leaves no stored upload behind
        if data:
            params["upload"] = save_bytes(f"{IMPORTS_FOLDER}/{Path(filename).name or 'upload'}", data)
        with transaction.atomic():
            return jobs.enqueue(Job.Kind.IMPORT_CHECKPOINT, user, params)


def import_and_rank(user, *, then: Callable[[Checkpoint, list], object], **source) -> Checkpoint:
    """An ``import_checkpoint`` job's work: ``import_checkpoint(user, **source)``, then (a branch that became active)
    queue the rankings of its datasets and run ``then(checkpoint, rankings)`` in the row's transaction: if either
    fails, neither the checkpoint row nor its stored file remains."""
    def register(row: Checkpoint) -> None:
        then(row, queue_rankings(row, user))

    return import_checkpoint(user, then=register, **source)


def discard_import_upload(params: dict) -> None:
    """Delete the upload an ``import_checkpoint`` job was given (when it ends, whichever way)."""
    if params.get("upload"):
        delete_quietly(params["upload"])


def activate(checkpoint: Checkpoint) -> Checkpoint:
    """Make ``checkpoint`` the version workers use for its generator, kind (and schema)."""
    if checkpoint.kind == Checkpoint.Kind.GENERATOR:
        raise ValidationError("generators are chosen per dataset; only encoders and segmentation branches are "
                              "activated")
    with transaction.atomic():
        Checkpoint.objects.filter(generator=checkpoint.generator, kind=checkpoint.kind, schema=checkpoint.schema,
                                  active=True).exclude(pk=checkpoint.pk).update(active=False)
        Checkpoint.objects.filter(pk=checkpoint.pk).update(active=True)
    checkpoint.refresh_from_db()
    return checkpoint


def queue_rankings(checkpoint: Checkpoint, user, skip: Sequence[int] = ()) -> list:
    """Rank every dataset that works with ``checkpoint`` (an active segmentation branch: the datasets of its
    generator and label schema, less ``skip``), so that their stored predictions (``segmentation.png``,
    ``uncertainty.png``) and the "label next" order follow the branch annotators now work with. A ranking of the same
    dataset by the same branch that is still waiting is reused. Returns the jobs (none for other checkpoints)."""
    from webapp.datasets.models import Dataset

    if checkpoint.kind != Checkpoint.Kind.SEGMENTATION or not checkpoint.active:
        return []
    rankings = []
    for dataset in (Dataset.objects.filter(generator=checkpoint.generator, schema=checkpoint.schema)
                    .exclude(pk__in=list(skip)).order_by("pk")):
        waiting = Job.objects.filter(kind=Job.Kind.RANK, status=Job.Status.QUEUED, cancel_requested=False,
                                     params__dataset_id=dataset.pk, params__segmentation_id=checkpoint.pk).first()
        rankings.append(waiting or jobs.enqueue(Job.Kind.RANK, user, {
            "dataset_id": dataset.pk, "segmentation_id": checkpoint.pk}, limited=False))
    return rankings


def activate_and_rank(checkpoint: Checkpoint, user) -> tuple[Checkpoint, list]:
    """``POST /checkpoints/{id}/activate``: activate, then (a segmentation branch) queue the rankings of the datasets
    that use it, in one transaction."""
    with transaction.atomic():
        checkpoint = activate(checkpoint)
        return checkpoint, queue_rankings(checkpoint, user)


def delete(checkpoint: Checkpoint) -> None:
    try:
        checkpoint.delete()
    except ProtectedError as exc:
        users = sorted({str(obj) for obj in exc.protected_objects})[:5]
        raise Conflict(f"checkpoint #{checkpoint.pk} is still used by {', '.join(users)}") from None


def active_segmentation(generator: Checkpoint, schema: LabelSchema) -> Checkpoint:
    found = Checkpoint.objects.filter(kind=Checkpoint.Kind.SEGMENTATION, generator=generator, schema=schema,
                                      active=True).first()
    if found is None:
        raise ValidationError(f"generator #{generator.pk} has no active segmentation branch for schema "
                              f"'{schema.name}': train one or import and activate one")
    return found


TRAINING_STATUSES = ("submitted", "reviewed")  # annotations an admin vouches for (drafts may be half painted)
MIN_TRAINING_SAMPLES = 2
MAX_HELDOUT_SAMPLES = 256  # enough for a per-class IoU; more only costs evaluation time
SPLIT_SEED = 0


def training_split(dataset, sample_ids: Optional[list[int]] = None, holdout_fraction: float = 0.2) -> dict:
    """Which annotated samples of ``dataset`` a segmentation branch trains on and which measure it.

    ``sample_ids=None`` picks every sample whose annotation is submitted or reviewed (and has a latent). Picked
    samples may also be drafts, never rejected, unannotated, latent-less or another dataset's samples (400).
    Held out for the per-class IoU: the submitted/reviewed samples that were not picked (at most
    ``MAX_HELDOUT_SAMPLES``); when every one was picked, a seeded ``holdout_fraction`` of the picked samples (at
    least one, leaving at least two to train on); with fewer than three picked or a fraction of 0, nothing is held
    out and the IoU is measured on the training samples (``evaluated_on: "training"``).
    """
    from webapp.datasets.models import Annotation, Sample

    eligible = sorted(dataset.samples.filter(annotation__version__gt=0, annotation__status__in=TRAINING_STATUSES)
                      .exclude(latent="").values_list("pk", flat=True))
    if sample_ids is None:
        picked = eligible
    else:
        picked = sorted(set(sample_ids))
        rows = {row.pk: row for row in Sample.objects.filter(pk__in=picked).select_related("annotation")}
        problems = []
        unknown = [pk for pk in picked if pk not in rows]
        if unknown:
            problems.append(f"samples {unknown} do not exist")
        elsewhere = [pk for pk in picked if pk in rows and rows[pk].dataset_id != dataset.pk]
        if elsewhere:
            problems.append(f"samples {elsewhere} belong to other datasets than '{dataset.name}'")
        ours = [rows[pk] for pk in picked if pk in rows and rows[pk].dataset_id == dataset.pk]
        annotation = {row.pk: getattr(row, "annotation", None) for row in ours}
        unannotated = [row.pk for row in ours if annotation[row.pk] is None or annotation[row.pk].version == 0]
        if unannotated:
            problems.append(f"samples {unannotated} have no saved annotation")
        rejected = [row.pk for row in ours if row.pk not in unannotated
                    and annotation[row.pk].status == Annotation.Status.REJECTED]
        if rejected:
            problems.append(f"the annotations of samples {rejected} were rejected in review (fix and resubmit them)")
        latent_less = [row.pk for row in ours if not row.latent]
        if latent_less:
            problems.append(f"samples {latent_less} are uploaded images without a latent (embed them first)")
        if problems:
            raise ValidationError("cannot train on the picked samples: " + "; ".join(problems))
    if len(picked) < MIN_TRAINING_SAMPLES:
        what = "picked" if sample_ids is not None else "submitted or reviewed annotations with latents"
        raise ValidationError(f"dataset '{dataset.name}' has {len(picked)} {what}; training needs at least "
                              f"{MIN_TRAINING_SAMPLES} (submit annotations, or pick samples with sample_ids)")
    unpicked = [pk for pk in eligible if pk not in set(picked)]
    if unpicked:
        train, heldout, evaluated_on = picked, _spread(unpicked, MAX_HELDOUT_SAMPLES), "held-out"
    else:
        # Halves round up, as in the admin panel's preview (JavaScript's Math.round).
        count = min(max(1, math.floor(len(picked) * holdout_fraction + 0.5)), len(picked) - MIN_TRAINING_SAMPLES)
        if holdout_fraction > 0 and count >= 1:
            shuffled = list(picked)
            random.Random(SPLIT_SEED).shuffle(shuffled)
            heldout = sorted(shuffled[:count])
            train, evaluated_on = [pk for pk in picked if pk not in set(heldout)], "held-out split"
        else:
            train, heldout, evaluated_on = picked, [], "training"
    return {"sample_ids": train, "heldout_ids": heldout, "evaluated_on": evaluated_on}


def _spread(ids: list[int], limit: int) -> list[int]:
    """At most ``limit`` of ``ids``, evenly spread over them (old and new annotations alike)."""
    if len(ids) <= limit:
        return ids
    return [ids[round(k * (len(ids) - 1) / (limit - 1))] for k in range(limit)]


def enqueue_training(dataset, user, steps: int, name: str, activate_when_done: bool,
                     architecture: Optional[dict] = None, pixels_per_step: Optional[int] = None,
                     early_stopping: bool = True, sample_ids: Optional[list[int]] = None,
                     holdout_fraction: float = 0.2):
    """Queue a retraining on ``training_split``'s samples; the split is fixed now and recorded in the job."""
    split = training_split(dataset, sample_ids, holdout_fraction)
    return jobs.enqueue("train_segmentation", user, {
        "dataset_id": dataset.pk, "steps": steps, "name": name or f"{dataset.name} segmentation",
        "activate": activate_when_done, "architecture": architecture or {}, "pixels_per_step": pixels_per_step,
        "early_stopping": early_stopping, "holdout_fraction": holdout_fraction, **split})


def enqueue_encoder_training(generator: Checkpoint, user, steps: int, name: str, activate_when_done: bool,
                             lpips_weight: float = 10.0, max_minutes: Optional[float] = None, batch_size: int = 4,
                             real_dataset=None):
    """Queue an encoder training for ``generator``; ``real_dataset``'s uploaded photos are mixed in (it needs one)."""
    from webapp.datasets.models import Sample
    params = {"generator_id": generator.pk, "steps": steps, "name": name or f"{generator.name} encoder",
              "activate": activate_when_done, "lpips_weight": lpips_weight, "max_minutes": max_minutes,
              "batch_size": batch_size, "real_dataset_id": None}
    if real_dataset is not None:
        photos = real_dataset.samples.filter(source=Sample.Source.UPLOADED).count()
        if photos == 0:
            raise ValidationError(f"dataset '{real_dataset.name}' has no uploaded photos to mix in: upload some, or "
                                  "train on generator samples only")
        params["real_dataset_id"] = real_dataset.pk
    return jobs.enqueue("train_encoder", user, params)
