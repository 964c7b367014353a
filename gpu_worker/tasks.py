"""One thin task per job kind: load its inputs through webapp selectors, call editor_core (models from the engine
cache), store the results through webapp services, which announce what changed (``runner.run_job`` claims the job
and ends it).

Every task takes only a job id; parameters live in the Job row. A message delivered twice (worker lost, broker
redelivery) is harmless: ``jobs.claim`` lets exactly one live worker run a job.
"""
from __future__ import annotations

import logging
import secrets
import time

import numpy as np
import torch
from django.conf import settings

from editor_core.bundle import latents_bytes
from editor_core.editing import EditConfig, optimize_edit, refine_config, refine_vectors, render_and_segment
from editor_core.images import image_png, load_image, mask_array
from editor_core.inversion import embed_image
from editor_core.metrics import psnr
from editor_core.pivotal import tune_generator
from editor_core.progress import ProgressEvent, report
from editor_core.vectors import combined_delta
from gpu_worker import edits, engine_cache, samples, training
from gpu_worker.celery_app import app
from gpu_worker.progress import JobReporter
from gpu_worker.runner import end_with, failure_text, run_job, worker_name
from webapp.datasets import selectors as dataset_rows, services as datasets
from webapp.editing import selectors as edit_rows, services as editing
from webapp.jobs import services as jobs
from webapp.registry import selectors as checkpoints, services as registry

log = logging.getLogger(__name__)


# --- datasets ---------------------------------------------------------------------------------------------------------
@app.task(name="gpu_worker.sample")
def sample(job_id: int) -> str:
    return run_job(job_id, _sample)


def _sample(job, reporter: JobReporter) -> dict:
    dataset = dataset_rows.dataset(job.params["dataset_id"])
    generator = engine_cache.generator(dataset.generator)
    segmentation = checkpoints.active_segmentation_or_none(dataset)
    ensemble = engine_cache.segmenter(segmentation)[0] if segmentation else None
    count, psi = int(job.params["count"]), float(job.params.get("truncation_psi", 0.7))
    # A run after a lost worker goes on from what the lost one recorded (jobs.record_result, in each sample's
    # transaction): the same seeds, and no sample stored twice.
    done = job.result.get("sample_ids", [])
    first_seed = job.result.get("first_seed", job.params.get("seed"))
    first_seed = secrets.randbelow(2 ** 31 - count) if first_seed is None else int(first_seed)
    stored = dataset_rows.samples_by_id(dataset, done)
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
        image, prediction = samples.segment(generator, ensemble, ws) if ensemble else (
            generator.synthesis(ws, noise_mode="const"), None)
        if row is None:
            row = datasets.add_generated_sample(
                dataset, image_png=image_png(image[0]), latent=latents_bytes(ws[0], dataset.generator.fingerprint),
                seed=seed, user=job.requested_by, then=lambda new: jobs.record_result(
                    job, {"sample_ids": created + [new.pk], "first_seed": first_seed}))
            created.append(row.pk)
        if prediction is not None:  # new samples come with their prediction and join the ranking right away
            samples.store_predictions(segmentation, [row], prediction)
        report(reporter, ProgressEvent("sample", index + 1, count))
    return {"sample_ids": created, "first_seed": first_seed}


@app.task(name="gpu_worker.prelabel")
def prelabel(job_id: int) -> str:
    return run_job(job_id, _prelabel)


def _prelabel(job, reporter: JobReporter) -> dict:
    sample_row = dataset_rows.sample(job.params["sample_id"])
    segmentation = checkpoints.checkpoint(job.params["segmentation_id"])
    prediction, stored = samples.segment_and_store(sample_row, segmentation)
    report(reporter, ProgressEvent("prelabel", 1, 1))
    version = datasets.save_prelabel(sample_row, job.requested_by, mask_array(prediction.labels[0], sample_row.width),
                                     job.params["base_version"], segmentation, job.pk)
    # uncertainty_url: where the annotator should look first (the annotate view's heat-map overlay).
    return {"sample_id": sample_row.pk, "version": version, **datasets.prediction_urls(stored)}


@app.task(name="gpu_worker.rank")
def rank(job_id: int) -> str:
    return run_job(job_id, _rank)


def _rank(job, reporter: JobReporter) -> dict:
    dataset = dataset_rows.dataset(job.params["dataset_id"])
    return {"ranked": samples.rank_dataset(dataset, checkpoints.checkpoint(job.params["segmentation_id"]), reporter)}


@app.task(name="gpu_worker.embed")
def embed(job_id: int) -> str:
    return run_job(job_id, _embed)


def _embed(job, reporter: JobReporter) -> dict:
    sample_row = dataset_rows.sample(job.params["sample_id"])
    generator_row = sample_row.dataset.generator
    generator = engine_cache.generator(generator_row)
    image = load_image(dataset_rows.image_file(sample_row), size=generator.img_resolution)
    encoder_row = checkpoints.active_encoder(generator_row)
    encoder = engine_cache.encoder(encoder_row) if encoder_row else None
    result = embed_image(generator, encoder, image.to(engine_cache.device()),
                         engine_cache.embed_config(job.params.get("steps")), progress=reporter)
    datasets.set_sample_latent(sample_row, latents_bytes(result.ws[0], generator_row.fingerprint))
    outcome = {"sample_id": sample_row.pk, "lpips": float(result.lpips[0]), "psnr": float(result.psnr[0]),
               "used_encoder": encoder is not None}
    segmentation = checkpoints.active_segmentation_or_none(sample_row.dataset)
    if segmentation is not None:  # the embedded photo gets its prediction and ranking like a generated sample
        ensemble, _schema = engine_cache.segmenter(segmentation)
        _image, prediction = samples.segment(generator, ensemble, result.ws.detach())
        outcome.update(datasets.prediction_urls(samples.store_predictions(segmentation, [sample_row], prediction)[0]))
    return outcome


@app.task(name="gpu_worker.tune")
def tune(job_id: int) -> str:
    return run_job(job_id, _tune)


def _tune(job, reporter: JobReporter) -> dict:
    """Pivotal tuning around the latent the sample had when the job was queued (``pivot``); the sample's stored
    prediction then comes from the tuned generator."""
    sample_row = dataset_rows.sample(job.params["sample_id"])
    generator = engine_cache.generator(sample_row.dataset.generator)
    image = load_image(dataset_rows.image_file(sample_row), size=generator.img_resolution).to(engine_cache.device())
    started = time.monotonic()
    result = tune_generator(generator, samples.latent(sample_row), image,
                            engine_cache.tune_config(job.params.get("steps")), engine_cache.perceptual(),
                            progress=reporter)
    before = result.history[0]
    metrics = {"psnr_before": float(psnr(torch.tensor(before["l2"]))), "psnr_after": float(result.psnr[0]),
               "lpips_before": before["lpips"], "lpips_after": float(result.lpips[0]),
               "steps": len(result.history) - 1, "seconds": round(time.monotonic() - started, 2)}
    sample_row = datasets.store_tuning(sample_row, job.params["pivot"], result.delta.to_bytes(), metrics)
    outcome = {"sample_id": sample_row.pk, **metrics}
    segmentation = checkpoints.active_segmentation_or_none(sample_row.dataset)
    if segmentation is not None:  # the edit view shows the tuned generator's segmentation from now on
        outcome.update(datasets.prediction_urls(samples.segment_and_store(sample_row, segmentation)[1]))
    return outcome


# --- training ---------------------------------------------------------------------------------------------------------
@app.task(name="gpu_worker.train_segmentation")
def train_segmentation(job_id: int) -> str:
    return run_job(job_id, _train_segmentation)


def _train_segmentation(job, reporter: JobReporter) -> dict:
    dataset = dataset_rows.dataset(job.params["dataset_id"])
    checkpoint = checkpoints.registered_by(job) or training.segmentation_branch(job, reporter, dataset)
    metrics = checkpoint.metrics
    if job.params.get("activate", True):
        checkpoint = registry.activate(checkpoint)
    rankings = []
    if checkpoint.active:  # the active-learning ranking follows the branch annotators now work with
        samples.rank_dataset(dataset, checkpoint, reporter)
        # Other datasets of the same generator and schema switched branches too: their rankings are jobs of their own.
        rankings = [job.pk for job in registry.queue_rankings(checkpoint, job.requested_by, skip=[dataset.pk])]
    return {"checkpoint_id": checkpoint.pk, "mean_iou": metrics["mean_iou"], "active": checkpoint.active,
            "metrics": metrics, "ranking_job_ids": rankings}


@app.task(name="gpu_worker.train_encoder")
def train_encoder(job_id: int) -> str:
    return run_job(job_id, _train_encoder)


def _train_encoder(job, reporter: JobReporter) -> dict:
    checkpoint = checkpoints.registered_by(job) or training.encoder(job, reporter)
    if job.params.get("activate", True):
        checkpoint = registry.activate(checkpoint)
    return {"checkpoint_id": checkpoint.pk, "active": checkpoint.active, "metrics": checkpoint.metrics}


# --- vector library ---------------------------------------------------------------------------------------------------
@app.task(name="gpu_worker.vector_thumbnails")
def vector_thumbnails(job_id: int) -> str:
    return run_job(job_id, _vector_thumbnails)


def _vector_thumbnails(job, reporter: JobReporter) -> dict:
    """Before/after thumbnails of a library vector that came without pictures: generator sample ``seed`` (mapping at
    ``truncation_psi``) rendered as it is and with the vector added at ``scale``."""
    row = edit_rows.vector(job.params["vector_id"])
    generator = engine_cache.generator(row.generator)
    scale, seed = float(job.params["scale"]), int(job.params["seed"])
    z = torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ws = generator.mapping(z.to(engine_cache.device()), truncation_psi=float(job.params["truncation_psi"]))
        delta = combined_delta([engine_cache.vector(row)], [scale], row.generator.fingerprint)
        images = generator.synthesis(torch.cat([ws, ws + delta.to(ws)[None]]), noise_mode="const")
    report(reporter, ProgressEvent("thumbnails", 1, 1))
    out = editing.vector_out(editing.store_thumbnails(row.pk, image_png(images[0]), image_png(images[1])))
    return {"vector_id": row.pk, "scale": scale, "seed": seed, "thumb_before_url": out["thumb_before_url"],
            "thumb_after_url": out["thumb_after_url"]}


# --- edits ------------------------------------------------------------------------------------------------------------
@app.task(name="gpu_worker.apply")
def apply(job_id: int) -> str:
    """Mode 1. Requests for the same generator, segmentation branch and sample tuning (``batch_key``) that are queued
    together are claimed here too and rendered in one forward pass; they ride along on this job's reporter
    (heartbeat, error path)."""
    return run_job(job_id, _apply)


def _apply(leader, reporter: JobReporter) -> dict:
    requests = [edits.mode1_request(leader)]
    for rider in jobs.claim_batch(leader.batch_key, worker_name(), settings.STUDIO_MODE1_MAX_BATCH - 1,
                                  exclude=leader.pk):
        try:
            requests.append(edits.mode1_request(rider))
        except Exception as exc:  # a bad request fails alone instead of failing the whole batch
            end_with(rider, exc)
            continue
        reporter.batch.append(rider)
    results = edits.render_mode1(leader, requests)
    for request, result in zip(requests[1:], results[1:]):
        jobs.succeed(request.job, result)
        reporter.batch.remove(request.job)
    return results[0]


@app.task(name="gpu_worker.live_apply", acks_late=False, ignore_result=True)
def live_apply(batch_key: str) -> str:
    """Slider positions from live-apply sockets (``ws/apply/<sample>/``): every one waiting in ``batch_key``'s list,
    in one forward pass (mode 1, the image alone), each answered to its socket and stored nowhere, so no job row.
    Each socket keeps one position in flight and answers it with an error when no answer comes in time; positions
    lost with their worker are not run again. The message only wakes a worker: another may have taken its position
    in a batch already."""
    requests = edit_rows.live_apply_batch(batch_key, settings.STUDIO_MODE1_MAX_BATCH)
    if not requests:
        return "none waiting"
    start = time.perf_counter()
    try:
        outcomes = edits.live_apply(requests)
    except Exception as exc:  # the batch's pass failed: each position hears why
        outcomes = [exc] * len(requests)
    worker_ms = 1000 * (time.perf_counter() - start)
    logged = set()
    for request, outcome in zip(requests, outcomes):
        if isinstance(outcome, bytes):
            editing.reply_live_apply(request, outcome, worker_ms, len(requests))
            continue
        error, foreseen = failure_text(outcome, settings.STUDIO_LIVE_APPLY_TIMEOUT_SECONDS)
        if not foreseen and id(outcome) not in logged:
            logged.add(id(outcome))
            log.error("live apply for sample %s failed", request["sample_id"], exc_info=outcome)
        editing.reply_live_apply_failed(request, error)
    return f"{len(requests)} answered"


@app.task(name="gpu_worker.refine")
def refine(job_id: int) -> str:
    return run_job(job_id, _refine)


def _refine(job, reporter: JobReporter) -> dict:
    session = edits.session(job)
    chosen = edits.library_vectors(session)
    models = engine_cache.editing_models(session.generator, session.segmentation, session.sample)
    edits.stream_previews(reporter, session)
    config = refine_config(steps=int(session.params.get("steps", 10)), **engine_cache.edit_speed_options())
    outcome = refine_vectors(models, samples.latent(session.sample), [v for _id, v, _s in chosen],
                             [s for _id, _v, s in chosen], config, progress=reporter)
    return edits.store(session, outcome.image[0], outcome.mask[0], outcome.ws[0], outcome.delta[0],
                       outcome.edited_classes, metrics=outcome.final_losses)


@app.task(name="gpu_worker.optimize")
def optimize(job_id: int) -> str:
    return run_job(job_id, _optimize)


def _optimize(job, reporter: JobReporter) -> dict:
    session = edits.session(job)
    models = engine_cache.editing_models(session.generator, session.segmentation, session.sample)
    ws = samples.latent(session.sample)
    target = torch.from_numpy(edit_rows.target_mask(session).astype(np.int64))[None]
    roi = edit_rows.region_of_interest(session)
    painted_over = edit_rows.painted_over(session)  # stored: spares a full segmentation before the first step
    original = (render_and_segment(models, ws)[1] if painted_over is None
                else torch.from_numpy(painted_over.astype(np.int64))[None])
    edits.stream_previews(reporter, session)
    config = EditConfig(steps=int(session.params.get("steps") or EditConfig.steps),
                        stop_follow=session.params.get("stop_follow"), **engine_cache.edit_speed_options())
    outcome = optimize_edit(models, ws, original, target, config, session.params.get("edited_classes") or None,
                            progress=reporter, roi=None if roi is None else torch.from_numpy(roi)[None])
    return edits.store(session, outcome.image[0], outcome.mask[0], outcome.ws[0], outcome.delta[0],
                       outcome.edited_classes, metrics=outcome.final_losses)


# --- checkpoint import and sample segmentation (issue #19: heavy work as jobs) ----------------------------------------
@app.task(name="gpu_worker.import_checkpoint")
def import_checkpoint(job_id: int) -> str:
    return run_job(job_id, _import_checkpoint)


def _import_checkpoint(job, reporter: JobReporter) -> dict:
    """Convert an uploaded or server-side checkpoint through the engine and register it (``import_and_rank``); the
    upload goes when the job ends, whichever way (a lost worker's next attempt still finds it)."""
    if checkpoints.registered_by(job) is not None:
        registry.discard_import_upload(job.params)
        return job.result
    try:
        source = checkpoints.import_source(job.params)
        report(reporter, ProgressEvent("convert", 0, 1))
        registry.import_and_rank(job.requested_by, then=lambda row, rankings: jobs.record_result(job, {
            "checkpoint_id": row.pk, "ranking_job_ids": [ranking.pk for ranking in rankings]}), **source)
    finally:
        registry.discard_import_upload(job.params)
    return job.result


@app.task(name="gpu_worker.segment")
def segment(job_id: int) -> str:
    return run_job(job_id, _segment_sample)


def _segment_sample(job, reporter: JobReporter) -> dict:
    """The branch's prediction for one sample, stored like a ranking's (what the edit studio starts from)."""
    sample_row = dataset_rows.sample(job.params["sample_id"])
    segmentation = checkpoints.segmentation(job.params["segmentation_id"])
    _prediction, stored = samples.segment_and_store(sample_row, segmentation)
    report(reporter, ProgressEvent("segment", 1, 1))
    return {"sample_id": sample_row.pk, **datasets.prediction_urls(stored)}
