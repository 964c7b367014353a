"""Stored samples in the engine: their latents in, a segmentation branch's predictions for them out."""
from __future__ import annotations

import torch

from editor_core.bundle import latents_from_bytes
from editor_core.images import mask_array
from editor_core.progress import ProgressEvent, report
from editor_core.segmentation import image_uncertainty, uncertainty_map
from gpu_worker import engine_cache
from webapp.datasets import selectors as dataset_rows, services as datasets

RANK_BATCH = 8


def latent(sample) -> torch.Tensor:
    """``[1, num_ws, w_dim]`` on the worker's device; refuses latents of another generator."""
    return latents_from_bytes(dataset_rows.latent_file(sample), sample.dataset.generator.fingerprint).to(
        engine_cache.device())


def segment(generator, ensemble, ws: torch.Tensor):
    """``(images, SegmentationPrediction)`` of latents ``ws``."""
    with torch.no_grad():
        image, features = generator.synthesis(ws, noise_mode="const", return_features=True)
        return image, ensemble.predict(features)


def store_predictions(segmentation, rows: list, prediction) -> list:
    """Keep what the branch just predicted for ``rows`` (batch order): labels, uncertainty map and score, served by
    ``GET /samples/{id}/segmentation.png`` and ``uncertainty.png`` and ranking the samples for active learning."""
    scores = image_uncertainty(prediction).tolist()
    stored = []
    for index, row in enumerate(rows):
        unsure, peak = uncertainty_map(prediction.uncertainty[index], row.width)
        stored.append(datasets.store_prediction(row, segmentation, mask_array(prediction.labels[index], row.width),
                                                unsure, peak, scores[index]))
    return stored


def segment_and_store(sample, segmentation):
    """Segment one stored sample with a branch (through its tuned generator, if it has a tuning) and keep the
    prediction: ``(prediction, stored prediction row)``."""
    ensemble, _schema = engine_cache.segmenter(segmentation)
    _image, prediction = segment(engine_cache.sample_generator(sample), ensemble, latent(sample))
    return prediction, store_predictions(segmentation, [sample], prediction)[0]


def rank_dataset(dataset, segmentation, progress) -> int:
    """Score every sample with a latent by ensemble disagreement (``image_uncertainty``) and store the branch's
    prediction for it (so segmentation.png / uncertainty.png follow a retraining): untuned samples in batches, each
    tuned one alone, through its own tuned generator."""
    ensemble, _schema = engine_cache.segmenter(segmentation)
    rows = dataset_rows.samples_with_latents(dataset)
    untuned = [row for row in rows if not row.tuning]
    chunks = [untuned[start:start + RANK_BATCH] for start in range(0, len(untuned), RANK_BATCH)]
    chunks += [[row] for row in rows if row.tuning]
    done = 0
    for chunk in chunks:
        _image, prediction = segment(engine_cache.sample_generator(chunk[0]), ensemble,
                                     torch.cat([latent(s) for s in chunk]))
        store_predictions(segmentation, chunk, prediction)
        done += len(chunk)
        report(progress, ProgressEvent("rank", done, len(rows)))
    return len(rows)
