"""One thin task per job kind: claim the job, get models from the engine cache, call editor_core, store results.

Every task takes only a job id; parameters live in the Job row. A message delivered twice (worker lost, broker
redelivery) is harmless: ``jobs.claim`` lets exactly one live worker run a job.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import logging
import math
import os
import secrets
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image

from editor_core.bundle import load_latents
from editor_core.editing import EditConfig, apply_vectors, optimize_edit, refine_config, refine_vectors, \
    render_and_segment
from editor_core.embedding import Encoder, EncoderConfig, EncoderTrainConfig, EmbedConfig, embed_image, \
    image_distances, load_encoder, psnr, save_encoder, train_encoder as train_encoder_engine
from editor_core.images import load_image
from editor_core.perceptual import get_perceptual_loss
from editor_core.progress import Cancelled, ProgressEvent, report
from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, SegTrainConfig, class_iou, \
    image_uncertainty, save_segmentation, train_segmentation as train_segmentation_engine
from editor_core.vectors import EditVector, EditVectorInfo, combined_delta
from gpu_worker import engine_cache
from gpu_worker.convert import image_png, latent_bytes, mask_array, uncertainty_map
from gpu_worker.celery_app import app
from gpu_worker.progress import JobReporter, png_data_url
from webapp.datasets import services as datasets
from webapp.datasets.models import AnnotationRevision, Dataset, Sample
from webapp.editing import services as editing
from webapp.editing.models import EditSession, EditVector as VectorRow
from webapp.errors import Conflict
from webapp.jobs import services as jobs
from webapp.jobs.models import Job
from webapp.realtime.groups import edit_group, publish
from webapp.registry import services as registry
from webapp.registry.models import Checkpoint
from webapp.storage import read_bytes

log = logging.getLogger(__name__)
RANK_BATCH = 8
ENCODER_CHUNK = 100  # encoder steps between time-budget checks (a tenth of the run when that is fewer)
ENCODER_EVAL_SAMPLES = 8  # generator samples an encoder is measured on
ENCODER_EVAL_SEED = 2 ** 31 - 1  # their seed: training draws per-step seeds from 0 up, never this one
ENCODER_LOSS_TAIL = 50  # final losses are the mean of the last steps (single steps are noisy)
EVAL_PIXEL_CHUNK = 1 << 14  # pixels per ensemble pass when measuring IoU: bounds memory at any resolution


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(job_id: int, body: Callable[[Job, JobReporter], dict]) -> str:
    """Claim the job, run ``body`` with a reporter (heartbeat, cancel, progress), record how it ended."""
    job = jobs.claim(job_id, worker_name())
    if job is None:
        return "skipped"
    try:
        with JobReporter(job) as reporter:
            result = body(job, reporter)
        jobs.finish(job, Job.Status.SUCCEEDED, result=result, metrics=reporter.metrics)
        return "succeeded"
    except Cancelled:
        jobs.finish(job, Job.Status.CANCELLED)
        return "cancelled"
    except SoftTimeLimitExceeded:
        jobs.finish(job, Job.Status.FAILED, error=f"ran past the {jobs.time_limit(job.queue)} s time limit")
    except ValidationError as exc:
        jobs.finish(job, Job.Status.FAILED, error=" ".join(exc.messages))
    except Conflict as exc:
        jobs.finish(job, Job.Status.FAILED, error=exc.detail)
    except (ValueError, FileNotFoundError) as exc:  # the engine refused the input: a clear message, no traceback
        jobs.finish(job, Job.Status.FAILED, error=str(exc))
    except Exception as exc:
        log.exception("job %s (%s) failed", job.pk, job.kind)
        jobs.append_log(job, traceback.format_exc())
        jobs.finish(job, Job.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
    return "failed"


# --- latents of stored samples ----------------------------------------------------------------------------------------
def sample_latent(sample: Sample) -> torch.Tensor:
    """``[1, num_ws, w_dim]`` on the worker's device; refuses latents of another generator."""
    if not sample.latent:
        raise ValidationError(f"sample #{sample.pk} has no latent yet: embed it first")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latent.safetensors"
        path.write_bytes(read_bytes(sample.latent.name))
        return load_latents(path, sample.dataset.generator.fingerprint).to(engine_cache.device())


def _segment(generator, ensemble, ws: torch.Tensor):
    with torch.no_grad():
        image, features = generator.synthesis(ws, noise_mode="const", return_features=True)
        return image, ensemble.predict(features)


def _active_segmentation_or_none(dataset: Dataset):
    try:
        return registry.active_segmentation(dataset.generator, dataset.schema)
    except ValidationError:
        return None


def store_predictions(segmentation: Checkpoint, rows: list[Sample], prediction) -> list:
    """Keep what the branch just predicted for ``rows`` (batch order): labels, uncertainty map and score, served by
    ``GET /samples/{id}/segmentation.png`` and ``uncertainty.png`` and ranking the samples for active learning."""
    scores = image_uncertainty(prediction).tolist()
    stored = []
    for index, row in enumerate(rows):
        unsure, peak = uncertainty_map(prediction.uncertainty[index], row.width)
        stored.append(datasets.store_prediction(row, segmentation, mask_array(prediction.labels[index], row.width),
                                                unsure, peak, scores[index]))
    return stored


# --- datasets ---------------------------------------------------------------------------------------------------------
@app.task(name="gpu_worker.sample")
def sample(job_id: int) -> str:
    return run_job(job_id, _sample)


def _sample(job: Job, reporter: JobReporter) -> dict:
    dataset = Dataset.objects.select_related("generator", "schema").get(pk=job.params["dataset_id"])
    generator = engine_cache.generator(dataset.generator)
    segmentation = _active_segmentation_or_none(dataset)
    ensemble = engine_cache.segmenter(segmentation)[0] if segmentation else None
    count, psi = int(job.params["count"]), float(job.params.get("truncation_psi", 0.7))
    # A run after a lost worker goes on from what the lost one recorded (jobs.record_result, in each sample's
    # transaction): the same seeds, and no sample stored twice.
    done = job.result.get("sample_ids", [])
    first_seed = job.result.get("first_seed", job.params.get("seed"))
    first_seed = secrets.randbelow(2 ** 31 - count) if first_seed is None else int(first_seed)
    stored = {row.pk: row for row in dataset.samples.filter(pk__in=done)}
    created = list(done)
    for index in range(count):
        seed = first_seed + index
        row = stored.get(done[index]) if index < len(done) else None
        if index < len(done) and (row is None or ensemble is None or row.ranked_with_id == segmentation.pk):
            report(reporter, ProgressEvent("sample", index + 1, count))
            continue  # stored (and ranked) by the lost run, or deleted since
        z = torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ws = generator.mapping(z.to(engine_cache.device()), truncation_psi=psi)
        image, prediction = _segment(generator, ensemble, ws) if ensemble else (
            generator.synthesis(ws, noise_mode="const"), None)
        if row is None:
            row = datasets.add_sample(dataset, source=Sample.Source.GENERATED, image_png=image_png(image[0]),
                                      latent=latent_bytes(ws[0], dataset.generator.fingerprint), seed=seed,
                                      user=job.requested_by, then=lambda new: jobs.record_result(
                                          job, {"sample_ids": created + [new.pk], "first_seed": first_seed}))
            created.append(row.pk)
        if prediction is not None:  # new samples come with their prediction and join the ranking right away
            store_predictions(segmentation, [row], prediction)
        report(reporter, ProgressEvent("sample", index + 1, count))
    return {"sample_ids": created, "first_seed": first_seed}


@app.task(name="gpu_worker.prelabel")
def prelabel(job_id: int) -> str:
    return run_job(job_id, _prelabel)


def _prelabel(job: Job, reporter: JobReporter) -> dict:
    sample_row = Sample.objects.select_related("dataset__generator", "dataset__schema").get(pk=job.params["sample_id"])
    segmentation = Checkpoint.objects.get(pk=job.params["segmentation_id"])
    generator = engine_cache.generator(sample_row.dataset.generator)
    ensemble, _schema = engine_cache.segmenter(segmentation)
    _image, prediction = _segment(generator, ensemble, sample_latent(sample_row))
    report(reporter, ProgressEvent("prelabel", 1, 1))
    stored = store_predictions(segmentation, [sample_row], prediction)[0]
    note = f"pre-label by segmentation checkpoint #{segmentation.pk} (job #{job.pk})"
    # A run after a lost worker finds the revision the lost one saved (else its base version would conflict).
    earlier = AnnotationRevision.objects.filter(annotation__sample=sample_row, note=note).first()
    if earlier is not None:
        version = earlier.version
    else:  # the service announces the new version to the annotation room
        labels = mask_array(prediction.labels[0], sample_row.width)
        version = datasets.save_mask(sample_row, job.requested_by, labels, job.params["base_version"],
                                     AnnotationRevision.Reason.PRELABEL, note=note).version
    # uncertainty_url: where the annotator should look first (the annotate view's heat-map overlay).
    return {"sample_id": sample_row.pk, "version": version, **datasets.prediction_urls(stored)}


@app.task(name="gpu_worker.rank")
def rank(job_id: int) -> str:
    return run_job(job_id, _rank)


def _rank(job: Job, reporter: JobReporter) -> dict:
    dataset = Dataset.objects.select_related("generator").get(pk=job.params["dataset_id"])
    return {"ranked": rank_dataset(dataset, Checkpoint.objects.get(pk=job.params["segmentation_id"]), reporter)}


def rank_dataset(dataset: Dataset, segmentation: Checkpoint, reporter: JobReporter) -> int:
    """Score every sample with a latent by ensemble disagreement (``image_uncertainty``) and store the branch's
    prediction for it (so segmentation.png / uncertainty.png follow a retraining)."""
    generator = engine_cache.generator(dataset.generator)
    ensemble, _schema = engine_cache.segmenter(segmentation)
    rows = list(dataset.samples.exclude(latent="").select_related("dataset__generator", "dataset__schema"))
    for start in range(0, len(rows), RANK_BATCH):
        chunk = rows[start:start + RANK_BATCH]
        _image, prediction = _segment(generator, ensemble, torch.cat([sample_latent(s) for s in chunk]))
        store_predictions(segmentation, chunk, prediction)
        report(reporter, ProgressEvent("rank", start + len(chunk), len(rows)))
    return len(rows)


@app.task(name="gpu_worker.embed")
def embed(job_id: int) -> str:
    return run_job(job_id, _embed)


def _active_encoder(generator_row: Checkpoint, generator):
    row = Checkpoint.objects.filter(kind=Checkpoint.Kind.ENCODER, generator=generator_row, active=True).first()
    if row is None:
        return None
    return load_encoder(engine_cache.local_path(row.file.name, row.sha256), generator)


def _embed(job: Job, reporter: JobReporter) -> dict:
    sample_row = Sample.objects.select_related("dataset__generator").get(pk=job.params["sample_id"])
    generator_row = sample_row.dataset.generator
    generator = engine_cache.generator(generator_row)
    image = load_image(read_bytes(sample_row.image.name), size=generator.img_resolution)
    encoder = _active_encoder(generator_row, generator)
    config = EmbedConfig(steps=int(job.params.get("steps") or engine_cache.embed_steps()),
                         lpips_net=engine_cache.lpips_net())
    result = embed_image(generator, encoder, image.to(engine_cache.device()), config, progress=reporter)
    datasets.set_sample_latent(sample_row, latent_bytes(result.ws[0], generator_row.fingerprint))
    outcome = {"sample_id": sample_row.pk, "lpips": float(result.lpips[0]), "psnr": float(result.psnr[0]),
               "used_encoder": encoder is not None}
    segmentation = _active_segmentation_or_none(sample_row.dataset)
    if segmentation is not None:  # the embedded photo gets its prediction and ranking like a generated sample
        ensemble, _schema = engine_cache.segmenter(segmentation)
        _image, prediction = _segment(generator, ensemble, result.ws.detach())
        outcome.update(datasets.prediction_urls(store_predictions(segmentation, [sample_row], prediction)[0]))
    return outcome


# --- training ---------------------------------------------------------------------------------------------------------
@app.task(name="gpu_worker.train_segmentation")
def train_segmentation(job_id: int) -> str:
    return run_job(job_id, _train_segmentation)


def _training_rows(dataset: Dataset, ids: list[int]) -> list[Sample]:
    """The job's samples in ``ids`` order; refuses ones deleted or emptied since the job was queued."""
    rows = {row.pk: row for row in dataset.samples.filter(pk__in=ids).select_related("dataset__generator",
                                                                                      "annotation")}
    gone = [pk for pk in ids if pk not in rows or not rows[pk].latent
            or getattr(rows[pk], "annotation", None) is None or rows[pk].annotation.version == 0]
    if gone:
        raise ValidationError(f"samples {gone} were deleted or lost their annotation or latent after the training "
                              "job was queued; start the training again")
    return [rows[pk] for pk in ids]


def _labels_at(row: Sample, size: int) -> torch.Tensor:
    """The sample's current mask as int64 ``[size, size]`` (nearest, like the engine's training targets)."""
    mask = torch.from_numpy(datasets.read_mask(row).astype(np.int64))[None, None].float()
    return F.interpolate(mask, size=(size, size), mode="nearest")[0, 0].long()


def segmentation_iou(generator, ensemble: SegmentationEnsemble, rows: list[Sample], class_rows: list[tuple[str, str]],
                     reporter: JobReporter) -> dict:
    """Per-class IoU of ``ensemble``'s prediction against the stored masks of ``rows``, over all their pixels at
    the branch's resolution. A class in neither prediction nor masks gets ``iou: None`` (mIoU skips it)."""
    size, num_classes = ensemble.config.resolution, ensemble.config.num_classes
    predicted, targets = [], []
    ensemble.eval()
    for index, row in enumerate(rows):
        with torch.no_grad():
            _image, features = generator.synthesis(sample_latent(row), noise_mode="const", return_features=True)
            predicted.append(ensemble.predict(features, pixel_chunk=EVAL_PIXEL_CHUNK).labels[0].cpu())
        targets.append(_labels_at(row, size))
        report(reporter, ProgressEvent("evaluate", index + 1, len(rows)))
    predicted, target = torch.stack(predicted), torch.stack(targets)
    iou = class_iou(predicted, target, num_classes)
    pixels = torch.bincount(target.flatten(), minlength=num_classes)
    return {"mean_iou": float(iou.nanmean()) if not iou.isnan().all() else None,
            "per_class_iou": [{"class": k, "name": name, "colour": colour,
                               "iou": None if math.isnan(value) else round(float(value), 6),
                               "pixels": int(pixels[k])}
                              for k, ((name, colour), value) in enumerate(zip(class_rows, iou.tolist()))]}


def _registered_by_lost_run(job: Job) -> Checkpoint | None:
    """The checkpoint a lost run of this training job registered (``jobs.record_result`` in the row's transaction):
    a run after a lost worker activates and ranks it instead of training and registering a second one."""
    return Checkpoint.objects.filter(pk=job.result.get("checkpoint_id", -1)).first()


def _train_segmentation(job: Job, reporter: JobReporter) -> dict:
    dataset = Dataset.objects.select_related("generator", "schema").get(pk=job.params["dataset_id"])
    checkpoint = _registered_by_lost_run(job) or _train_segmentation_branch(job, reporter, dataset)
    metrics = checkpoint.metrics
    if job.params.get("activate", True):
        checkpoint = registry.activate(checkpoint)
    rankings = []
    if checkpoint.active:  # the active-learning ranking follows the branch annotators now work with
        rank_dataset(dataset, checkpoint, reporter)
        # Other datasets of the same generator and schema switched branches too: their rankings are jobs of their own.
        rankings = [job.pk for job in registry.queue_rankings(checkpoint, job.requested_by, skip=[dataset.pk])]
    return {"checkpoint_id": checkpoint.pk, "mean_iou": metrics["mean_iou"], "active": checkpoint.active,
            "metrics": metrics, "ranking_job_ids": rankings}


def _train_segmentation_branch(job: Job, reporter: JobReporter, dataset: Dataset) -> Checkpoint:
    generator = engine_cache.generator(dataset.generator)
    schema = registry.engine_schema(dataset.schema)
    split = job.params if "sample_ids" in job.params else registry.training_split(dataset)  # jobs queued earlier
    training = _training_rows(dataset, split["sample_ids"])
    heldout = _training_rows(dataset, split["heldout_ids"])
    latents = torch.cat([sample_latent(s) for s in training])
    masks = torch.stack([torch.from_numpy(datasets.read_mask(s).astype(np.int64)) for s in training])
    architecture = job.params.get("architecture", {})
    ensemble = SegmentationEnsemble(SegmentationConfig.from_generator(generator, schema.num_classes,
                                                                      **architecture))
    steps = int(job.params["steps"])
    config = SegTrainConfig(max_steps=steps, min_steps=min(200, steps), device=str(engine_cache.device()),
                            patience=SegTrainConfig.patience if job.params.get("early_stopping", True) else None,
                            **engine_cache.retrain_options(job.params.get("pixels_per_step")))
    outcome = train_segmentation_engine(generator, ensemble, latents, masks.to(engine_cache.device()), config,
                                        progress=reporter)
    class_rows = dataset.schema.class_rows()
    measured_on = heldout or training[:registry.MAX_HELDOUT_SAMPLES]
    evaluation = segmentation_iou(generator, ensemble, measured_on, class_rows, reporter)
    metrics = {**evaluation, "evaluated_on": split["evaluated_on"], "num_samples": len(training),
               "num_heldout": len(heldout), "train_mean_iou": outcome.mean_iou, "steps": outcome.steps,
               "stopped_early": outcome.stopped_early, "member_pixel_acc": outcome.member_pixel_acc,
               "sample_ids": [s.pk for s in training], "heldout_ids": [s.pk for s in heldout]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "segmentation.safetensors"
        save_segmentation(path, ensemble.cpu(), schema, meta={"generator_id": dataset.generator.fingerprint,
                                                              "metrics": metrics, "job": job.pk})
        return registry.register_file(
            path, kind=Checkpoint.Kind.SEGMENTATION, name=job.params["name"],
            source_format=Checkpoint.SourceFormat.TRAINED, user=job.requested_by, generator=dataset.generator,
            schema=dataset.schema, fingerprint=dataset.generator.fingerprint, config=ensemble.config.to_dict(),
            metrics=metrics, then=lambda row: jobs.record_result(job, {"checkpoint_id": row.pk}))


@app.task(name="gpu_worker.train_encoder")
def train_encoder(job_id: int) -> str:
    return run_job(job_id, _train_encoder)


def _photo_batches(dataset_id: int | None, batch_size: int, resolution: int):
    """``(photo loader, callable returning [batch_size, 3, R, R] of random photos)`` over a dataset's uploaded
    photos, or ``(None, None)``. The loader maps an index to ``[1, 3, R, R]`` and counts them (``len``); files are
    read when drawn (the last 256 kept), so a large photo set costs no memory up front."""
    if dataset_id is None:
        return None, None
    names = list(Sample.objects.filter(dataset_id=dataset_id, source=Sample.Source.UPLOADED)
                 .order_by("pk").values_list("image", flat=True))
    if not names:
        raise ValidationError(f"dataset #{dataset_id} has no uploaded photos to mix in any more")
    rng = torch.Generator().manual_seed(0)
    photo = _PhotoLoader(names, resolution)

    def batch() -> torch.Tensor:
        return torch.cat([photo(index) for index in torch.randint(len(names), (batch_size,), generator=rng).tolist()])

    return photo, batch


class _PhotoLoader:
    """A dataset's uploaded photos by index, ``[1, 3, R, R]`` at the generator's size; the last 256 kept decoded."""

    def __init__(self, names: list[str], resolution: int):
        self.names, self.resolution = names, resolution
        self._cached = functools.lru_cache(maxsize=256)(self._load)

    def __len__(self) -> int:
        return len(self.names)

    def __call__(self, index: int) -> torch.Tensor:
        return self._cached(index)

    def _load(self, index: int) -> torch.Tensor:
        return load_image(read_bytes(self.names[index]), size=self.resolution)


@torch.no_grad()
def encoder_quality(generator, encoder: Encoder, images: torch.Tensor, true_ws: torch.Tensor | None = None,
                    perceptual=None) -> dict:
    """How well ``generator(encoder(images))`` reconstructs ``images``: PSNR (dB), LPIPS (with ``perceptual``),
    and the W+ error when the true latents are known."""
    was_training = encoder.training
    encoder.eval()
    ws = encoder(images)
    reconstructions = generator.synthesis(ws, noise_mode="const")
    encoder.train(was_training)
    lpips, l2 = image_distances(perceptual, reconstructions, images, EncoderTrainConfig.lpips_resolution)
    quality = {"psnr": float(psnr(l2).mean())}
    if lpips is not None:
        quality["lpips"] = float(lpips.mean())
    if true_ws is not None:
        quality["latent_mse"] = float((ws - true_ws).square().mean())
    return quality


def _train_encoder(job: Job, reporter: JobReporter) -> dict:
    checkpoint = _registered_by_lost_run(job) or _train_encoder_checkpoint(job, reporter)
    if job.params.get("activate", True):
        checkpoint = registry.activate(checkpoint)
    return {"checkpoint_id": checkpoint.pk, "active": checkpoint.active, "metrics": checkpoint.metrics}


def _train_encoder_checkpoint(job: Job, reporter: JobReporter) -> Checkpoint:
    generator_row = Checkpoint.objects.get(pk=job.params["generator_id"], kind=Checkpoint.Kind.GENERATOR)
    generator = engine_cache.generator(generator_row)
    device = engine_cache.device()
    steps, max_minutes = int(job.params["steps"]), job.params.get("max_minutes")
    config = EncoderTrainConfig(steps=steps, batch_size=int(job.params.get("batch_size", 4)),
                                lpips_weight=float(job.params.get("lpips_weight", 10.0)))
    photo, photos = _photo_batches(job.params.get("real_dataset_id"), config.batch_size, generator.img_resolution)
    # The encoder in use now is measured on the same samples, so the admin can compare before activating.
    baseline_row = Checkpoint.objects.filter(kind=Checkpoint.Kind.ENCODER, generator=generator_row, active=True).first()
    baseline = load_encoder(engine_cache.local_path(baseline_row.file.name, baseline_row.sha256), generator) \
        if baseline_row else None
    encoder = Encoder(EncoderConfig.for_generator(generator)).to(device)

    def progress(event: ProgressEvent) -> None:  # chunks report their own end as the total: the run's is steps
        reporter(dataclasses.replace(event, total=steps))

    started = time.monotonic()
    if not max_minutes:
        history = train_encoder_engine(generator, encoder, photos, config, progress=progress)
    else:
        # Chunks of steps, each resuming from the last one's saved state (weights + Adam moments): the time budget
        # is checked between chunks, and a resumed run draws the same generator samples as an uninterrupted one.
        deadline = started + float(max_minutes) * 60
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "encoder-training.safetensors"
            chunk = max(1, min(ENCODER_CHUNK, steps // 10))
            chunked = dataclasses.replace(config, checkpoint_path=str(state), checkpoint_every=chunk)
            history = []
            while len(history) < steps and (not history or time.monotonic() < deadline):
                history = train_encoder_engine(
                    generator, encoder, photos, dataclasses.replace(chunked, steps=min(len(history) + chunk, steps)),
                    progress=progress, resume=state if state.exists() else None)
    minutes = (time.monotonic() - started) / 60

    perceptual = get_perceptual_loss(config.lpips_net, device) if config.lpips_weight > 0 else None
    z = torch.randn(ENCODER_EVAL_SAMPLES, generator.z_dim, generator=torch.Generator().manual_seed(ENCODER_EVAL_SEED))
    with torch.no_grad():
        true_ws = generator.mapping(z.to(device), truncation_psi=config.truncation_psi)
        images = generator.synthesis(true_ws, noise_mode="const")
    tail = history[-ENCODER_LOSS_TAIL:]
    metrics = {"steps": len(history), "minutes": round(minutes, 2), "stopped_by_time": len(history) < steps,
               "batch_size": config.batch_size, "lpips_weight": config.lpips_weight,
               "real_images": len(photo) if photo is not None else 0,
               **{f"final_{name}": sum(row[name] for row in tail) / len(tail) for name in history[-1]},
               "eval_samples": ENCODER_EVAL_SAMPLES,
               **{f"eval_{k}": v for k, v in encoder_quality(generator, encoder, images, true_ws, perceptual).items()}}
    if photo is not None:  # photos it trained on: how well it fits real images at all
        seen = torch.cat([photo(k) for k in range(min(len(photo), ENCODER_EVAL_SAMPLES))]).to(device)
        metrics.update({f"real_{k}": v for k, v in encoder_quality(generator, encoder, seen, None, perceptual).items()})
    if baseline is not None:
        metrics.update({f"baseline_{k}": v for k, v in encoder_quality(generator, baseline, images, true_ws,
                                                                       perceptual).items()})
        metrics["baseline_checkpoint_id"] = baseline_row.pk
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.safetensors"
        save_encoder(path, encoder, generator, meta={"metrics": metrics, "job": job.pk})
        return registry.register_file(
            path, kind=Checkpoint.Kind.ENCODER, name=job.params["name"], source_format=Checkpoint.SourceFormat.TRAINED,
            user=job.requested_by, generator=generator_row, fingerprint=generator_row.fingerprint,
            config=encoder.config.to_dict(), metrics=metrics,
            then=lambda row: jobs.record_result(job, {"checkpoint_id": row.pk}))


# --- vector library ---------------------------------------------------------------------------------------------------
@app.task(name="gpu_worker.vector_thumbnails")
def vector_thumbnails(job_id: int) -> str:
    return run_job(job_id, _vector_thumbnails)


def _vector_thumbnails(job: Job, reporter: JobReporter) -> dict:
    """Before/after thumbnails of a library vector that came without pictures: generator sample ``seed`` (mapping at
    ``truncation_psi``) rendered as it is and with the vector added at ``scale``."""
    row = VectorRow.objects.select_related("generator").filter(pk=job.params["vector_id"]).first()
    if row is None:
        raise ValidationError(f"edit vector #{job.params['vector_id']} was deleted before its thumbnails were "
                              "rendered")
    generator = engine_cache.generator(row.generator)
    scale, seed = float(job.params["scale"]), int(job.params["seed"])
    z = torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ws = generator.mapping(z.to(engine_cache.device()), truncation_psi=float(job.params["truncation_psi"]))
        delta = combined_delta([engine_cache.vector(row)], [scale], row.generator.fingerprint)
        images = generator.synthesis(torch.cat([ws, ws + delta.to(ws)[None]]), noise_mode="const")
    report(reporter, ProgressEvent("thumbnails", 1, 1))
    stored = editing.store_thumbnails(row.pk, image_png(images[0]), image_png(images[1]))
    out = editing.vector_out(stored)
    return {"vector_id": row.pk, "scale": scale, "seed": seed, "thumb_before_url": out["thumb_before_url"],
            "thumb_after_url": out["thumb_after_url"]}


# --- edits ------------------------------------------------------------------------------------------------------------
def _session(job: Job) -> EditSession:
    return EditSession.objects.select_related("sample__dataset__generator", "sample__dataset__schema", "generator",
                                              "segmentation").get(pk=job.params["session_id"])


def _library_vectors(session: EditSession) -> list[tuple[int, EditVector, float]]:
    """``(library id, engine vector, scale)`` for each vector of a mode 1/2 edit."""
    wanted = session.params["vectors"]
    rows = {row.pk: row for row in VectorRow.objects.filter(pk__in=[v["vector_id"] for v in wanted])}
    missing = [v["vector_id"] for v in wanted if v["vector_id"] not in rows]
    if missing:
        raise ValidationError(f"edit vectors {missing} were deleted after the edit was requested")
    return [(v["vector_id"], engine_cache.vector(rows[v["vector_id"]]), float(v["scale"])) for v in wanted]


def _store_edit(session: EditSession, image: torch.Tensor, mask: torch.Tensor, ws: torch.Tensor,
                delta: torch.Tensor | None = None, edited_classes=(), metrics: dict | None = None) -> dict:
    sample_row = session.sample
    vector_file = b""
    if delta is not None:
        info = EditVectorInfo(name=f"edit {session.pk}", generator_id=session.generator.fingerprint,
                              edited_classes=list(edited_classes), source={"kind": "edit", "session": session.pk},
                              author=session.user.get_username() if session.user else "")
        with tempfile.TemporaryDirectory() as tmp:
            vector_file = EditVector(delta=delta.detach().cpu(), info=info).save(Path(tmp) / "v.safetensors") \
                .read_bytes()
    picture = image_png(image)
    result = editing.store_result(session, image_png=picture,
                                  mask_png=datasets.mask_png(sample_row, mask_array(mask, sample_row.width)),
                                  latent=latent_bytes(ws, session.generator.fingerprint), delta=vector_file,
                                  edited_classes=edited_classes, metrics=metrics or {})
    out = editing.session_out(EditSession.objects.select_related("job", "result").get(pk=session.pk))["result"]
    # The PNG this worker just encoded, not a read back of the stored file.
    publish(edit_group(session.pk), {"type": "edit.result", "session": session.pk, **out,
                                     "image": png_data_url(picture)})
    return {"session_id": session.pk, **out}


@app.task(name="gpu_worker.apply")
def apply(job_id: int) -> str:
    """Mode 1. Requests for the same generator and segmentation branch that are queued together are claimed here
    too and rendered in one forward pass (``scales`` [B, V] over the union of their vectors)."""
    job = jobs.claim(job_id, worker_name())
    if job is None:
        return "skipped"
    batch = [job] + jobs.claim_batch(job.batch_key, worker_name(), settings.STUDIO_MODE1_MAX_BATCH - 1,
                                     exclude=job.pk)
    requests = [request for request in map(_mode1_request, batch) if request is not None]
    if not requests:
        return "failed"
    try:
        with JobReporter(job, batch=[request.job for request in requests]):
            _render_mode1_batch(job, requests)
    except Exception as exc:
        log.exception("mode-1 batch led by job %s failed", job.pk)
        for request in requests:
            if not Job.objects.filter(pk=request.job.pk, status=Job.Status.SUCCEEDED).exists():
                jobs.finish(request.job, Job.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    return "succeeded"


@dataclass
class Mode1Request:
    job: Job
    session: EditSession
    vectors: list[tuple[int, EditVector, float]]
    ws: torch.Tensor


def _mode1_request(job: Job) -> Mode1Request | None:
    """Load one request of a batch; a bad one fails alone instead of failing the whole batch."""
    try:
        session = _session(job)
        return Mode1Request(job, session, _library_vectors(session), sample_latent(session.sample))
    except (ValidationError, ValueError, EditSession.DoesNotExist) as exc:
        jobs.finish(job, Job.Status.FAILED, error=" ".join(exc.messages) if isinstance(exc, ValidationError)
                    else str(exc))
        return None


def _render_mode1_batch(leader: Job, requests: list[Mode1Request]) -> None:
    union = {vector_id: vector for request in requests for vector_id, vector, _scale in request.vectors}
    columns = {vector_id: column for column, vector_id in enumerate(union)}
    scales = torch.zeros(len(requests), len(union))  # a request's vectors that another request uses get scale 0
    for row, request in enumerate(requests):
        for vector_id, _vector, scale in request.vectors:
            scales[row, columns[vector_id]] += scale
    first = requests[0].session
    models = engine_cache.editing_models(first.generator, first.segmentation)
    applied = apply_vectors(models, torch.cat([r.ws for r in requests]), list(union.values()), scales,
                            mask_members=engine_cache.mode1_mask_members())
    for index, request in enumerate(requests):
        result = _store_edit(request.session, applied.image[index], applied.mask[index], applied.ws[index],
                             metrics={"batch_size": len(requests), "batch_leader": leader.pk})
        jobs.finish(request.job, Job.Status.SUCCEEDED, result=result)


@app.task(name="gpu_worker.refine")
def refine(job_id: int) -> str:
    return run_job(job_id, _refine)


def _refine(job: Job, reporter: JobReporter) -> dict:
    session = _session(job)
    chosen = _library_vectors(session)
    models = engine_cache.editing_models(session.generator, session.segmentation)
    reporter.preview_group = edit_group(session.pk)
    reporter.mask_png = lambda mask: datasets.mask_png(session.sample, mask_array(mask, session.sample.width))
    config = refine_config(steps=int(session.params.get("steps", 10)), **engine_cache.edit_speed_options())
    outcome = refine_vectors(models, sample_latent(session.sample), [v for _id, v, _s in chosen],
                             [s for _id, _v, s in chosen], config, progress=reporter)
    return _store_edit(session, outcome.image[0], outcome.mask[0], outcome.ws[0], outcome.delta[0],
                       outcome.edited_classes, metrics=outcome.final_losses)


@app.task(name="gpu_worker.optimize")
def optimize(job_id: int) -> str:
    return run_job(job_id, _optimize)


def _optimize(job: Job, reporter: JobReporter) -> dict:
    session = _session(job)
    models = engine_cache.editing_models(session.generator, session.segmentation)
    ws = sample_latent(session.sample)
    with Image.open(io.BytesIO(read_bytes(session.target_mask.name))) as picture:
        target = torch.from_numpy(np.asarray(picture, dtype=np.int64).copy())[None]
    _image, original = render_and_segment(models, ws)
    reporter.preview_group = edit_group(session.pk)
    reporter.mask_png = lambda mask: datasets.mask_png(session.sample, mask_array(mask, session.sample.width))
    config = EditConfig(steps=int(session.params.get("steps") or EditConfig.steps),
                        stop_follow=session.params.get("stop_follow"), **engine_cache.edit_speed_options())
    roi = None
    if session.params.get("roi_file"):
        roi = torch.from_numpy(datasets.parse_roi(session.sample, read_bytes(session.params["roi_file"])))[None]
    outcome = optimize_edit(models, ws, original, target, config, session.params.get("edited_classes") or None,
                            progress=reporter, roi=roi)
    return _store_edit(session, outcome.image[0], outcome.mask[0], outcome.ws[0], outcome.delta[0],
                       outcome.edited_classes, metrics=outcome.final_losses)
