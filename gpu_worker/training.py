"""The training jobs in the engine: a segmentation branch or an encoder trained on the job's inputs, measured by the
engine's metrics, and registered (``registry.register_trained`` records it in the job, so a run after a lost worker
registers nothing twice)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from django.conf import settings

from editor_core.editing import resize_mask
from editor_core.encoder import Encoder, EncoderConfig, save_encoder
from editor_core.encoder_training import ENCODER_EVAL_SAMPLES, EncoderTrainConfig, encoder_evaluation, \
    final_losses, train_encoder_within
from editor_core.metrics import iou_table
from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, SegTrainConfig, predict_labels, \
    save_segmentation, train_segmentation
from gpu_worker import engine_cache, samples
from gpu_worker.photos import Photos
from webapp.datasets import selectors as dataset_rows
from webapp.registry import selectors as checkpoints, services as registry

EVAL_PIXEL_CHUNK = 1 << 14  # pixels per ensemble pass when measuring IoU: bounds memory at any resolution


def _stored_masks(rows: list) -> torch.Tensor:
    """The samples' current masks, int64 ``[N, H, W]``."""
    return torch.stack([torch.from_numpy(dataset_rows.read_mask(row).astype(np.int64)) for row in rows])


def segmentation_branch(job, progress, dataset):
    """Train a branch on the job's split of ``dataset`` (or today's split for jobs queued without one), measure its
    per-class IoU on the held-out samples (the training ones when none are held out) and register it."""
    generator = engine_cache.generator(dataset.generator)
    schema = registry.engine_schema(dataset.schema)
    split = job.params if "sample_ids" in job.params else registry.training_split(dataset)  # jobs queued earlier
    training = dataset_rows.training_samples(dataset, split["sample_ids"])
    heldout = dataset_rows.training_samples(dataset, split["heldout_ids"])
    ensemble = SegmentationEnsemble(SegmentationConfig.from_generator(generator, schema.num_classes,
                                                                      **job.params.get("architecture", {})))
    steps = int(job.params["steps"])
    config = SegTrainConfig(max_steps=steps, min_steps=min(200, steps), device=str(engine_cache.device()),
                            patience=SegTrainConfig.patience if job.params.get("early_stopping", True) else None,
                            feature_cache_bytes=settings.STUDIO_SEG_FEATURE_CACHE_MB << 20,
                            **engine_cache.retrain_options(job.params.get("pixels_per_step")))
    outcome = train_segmentation(generator, ensemble, torch.cat([samples.latent(s) for s in training]),
                                 _stored_masks(training).to(engine_cache.device()), config, progress=progress)
    measured_on = heldout or training[:registry.MAX_HELDOUT_SAMPLES]
    predicted = predict_labels(generator, ensemble, torch.cat([samples.latent(s) for s in measured_on]),
                               EVAL_PIXEL_CHUNK, progress=progress)
    targets = resize_mask(_stored_masks(measured_on), ensemble.config.resolution)  # nearest, like training targets
    metrics = {**iou_table(predicted, targets, dataset.schema.class_rows()),
               "evaluated_on": split["evaluated_on"], "num_samples": len(training),
               "num_heldout": len(heldout), "train_mean_iou": outcome.mean_iou, "steps": outcome.steps,
               "stopped_early": outcome.stopped_early, "member_pixel_acc": outcome.member_pixel_acc,
               "cached_features": outcome.cached_features,
               "sample_ids": [s.pk for s in training], "heldout_ids": [s.pk for s in heldout]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "segmentation.safetensors"
        save_segmentation(path, ensemble.cpu(), schema, meta={"generator_id": dataset.generator.fingerprint,
                                                              "metrics": metrics, "job": job.pk})
        return registry.register_trained(path, kind="segmentation", job=job, generator=dataset.generator,
                                         schema=dataset.schema, config=ensemble.config.to_dict(), metrics=metrics)


def encoder(job, progress):
    """Train an encoder for the job's generator (photos of ``real_dataset_id`` mixed in, within ``max_minutes``),
    measure it next to the encoder in use now, on the same samples, so the admin can compare before activating,
    and register it."""
    generator_row = checkpoints.generator(job.params["generator_id"])
    generator = engine_cache.generator(generator_row)
    config = EncoderTrainConfig(steps=int(job.params["steps"]), batch_size=int(job.params.get("batch_size", 4)),
                                lpips_weight=float(job.params.get("lpips_weight", 10.0)))
    photos = None
    if job.params.get("real_dataset_id") is not None:
        photos = Photos(dataset_rows.PhotoFiles(job.params["real_dataset_id"]), generator.img_resolution)
    baseline_row = checkpoints.active_encoder(generator_row)
    trained = Encoder(EncoderConfig.for_generator(generator)).to(engine_cache.device())
    started = time.monotonic()
    max_minutes = job.params.get("max_minutes")
    history = train_encoder_within(generator, trained, photos.batches(config.batch_size) if photos else None, config,
                                   max_seconds=float(max_minutes) * 60 if max_minutes else None, progress=progress)
    metrics = {"steps": len(history), "minutes": round((time.monotonic() - started) / 60, 2),
               "stopped_by_time": len(history) < config.steps, "batch_size": config.batch_size,
               "lpips_weight": config.lpips_weight, "real_images": len(photos) if photos else 0,
               **final_losses(history),
               **encoder_evaluation(generator, trained, config,
                                    real_images=photos.first(ENCODER_EVAL_SAMPLES) if photos else None,
                                    baseline=engine_cache.encoder(baseline_row) if baseline_row else None)}
    if baseline_row is not None:
        metrics["baseline_checkpoint_id"] = baseline_row.pk
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.safetensors"
        save_encoder(path, trained, generator, meta={"metrics": metrics, "job": job.pk})
        return registry.register_trained(path, kind="encoder", job=job, generator=generator_row,
                                         config=trained.config.to_dict(), metrics=metrics)
