"""Read functions that hand an edit or vector-library task its inputs: the session, its vectors, its masks."""
from __future__ import annotations

import json
import time
from typing import Optional

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError

from webapp.datasets import services as datasets
from webapp.datasets.models import Sample
from webapp.editing.models import EditSession, EditVector
from webapp.realtime.rooms import sync_redis
from webapp.registry.models import Checkpoint
from webapp.storage import read_bytes


def session(session_id: int) -> EditSession:
    found = (EditSession.objects.select_related("sample__dataset__generator", "sample__dataset__schema", "generator",
                                                "segmentation", "user").filter(pk=session_id).first())
    if found is None:
        raise ValidationError(f"edit session #{session_id} was deleted after the edit was requested")
    return found


def session_vectors(session: EditSession) -> list[tuple[EditVector, float]]:
    """``(library row, scale)`` for each vector of a mode 1/2 edit, in the order it asked for them."""
    return _scaled_vectors(session.params["vectors"], "the edit was requested")


def _scaled_vectors(wanted: list[dict], since: str, rows: Optional[dict[int, EditVector]] = None
                    ) -> list[tuple[EditVector, float]]:
    """``(library row, scale)`` of each wanted vector; ``rows``: the rows already read (by id), else read here."""
    if rows is None:
        rows = EditVector.objects.in_bulk([v["vector_id"] for v in wanted])
    missing = [v["vector_id"] for v in wanted if v["vector_id"] not in rows]
    if missing:
        raise ValidationError(f"edit vectors {missing} were deleted after {since}")
    return [(rows[v["vector_id"]], float(v["scale"])) for v in wanted]


LiveApplyInputs = tuple[Sample, Checkpoint, list[tuple[EditVector, float]]]


def live_apply_inputs(requests: list[dict]) -> list[LiveApplyInputs | ValidationError]:
    """Each live-apply request's sample (with its generator), segmentation branch and ``(library row, scale)`` of
    its vectors, in request order (``services.live_apply_request`` checked them when the position came in), or why
    it can no longer be drawn. Three queries for the whole batch, whatever its size."""
    samples = Sample.objects.select_related("dataset__generator").in_bulk({r["sample_id"] for r in requests})
    branches = Checkpoint.objects.in_bulk({r["segmentation_id"] for r in requests})
    vectors = EditVector.objects.in_bulk({v["vector_id"] for r in requests for v in r["vectors"]})
    return [_live_apply_input(request, samples, branches, vectors) for request in requests]


def _live_apply_input(request: dict, samples: dict, branches: dict, vectors: dict) -> LiveApplyInputs | ValidationError:
    sample, segmentation = samples.get(request["sample_id"]), branches.get(request["segmentation_id"])
    if sample is None or segmentation is None:
        return ValidationError("the sample or its segmentation branch was deleted after the slider moved")
    try:
        return sample, segmentation, _scaled_vectors(request["vectors"], "the slider moved", vectors)
    except ValidationError as exc:
        return exc


def live_apply_batch(batch_key: str, limit: int) -> list[dict]:
    """Take up to ``limit`` live-apply positions waiting in ``batch_key``'s list (``services.send_live_apply``), in
    the order they came; those older than ``STUDIO_LIVE_APPLY_TIMEOUT_SECONDS`` are dropped, their sockets have
    answered them already."""
    taken = sync_redis().lpop(batch_key, limit) or []
    oldest = time.time() - settings.STUDIO_LIVE_APPLY_TIMEOUT_SECONDS
    return [request for request in map(json.loads, taken) if request["queued_at"] >= oldest]


def vector(vector_id: int) -> EditVector:
    found = EditVector.objects.select_related("generator").filter(pk=vector_id).first()
    if found is None:
        raise ValidationError(f"edit vector #{vector_id} was deleted before its thumbnails were rendered")
    return found


def target_mask(session: EditSession) -> np.ndarray:
    """A mode-3 edit's repainted mask, ``uint8 [H, W]`` class indices (checked when the edit was requested)."""
    return datasets.parse_mask(session.sample, read_bytes(session.target_mask.name))


def painted_over(session: EditSession) -> Optional[np.ndarray]:
    """The segmentation a mode-3 edit's mask was painted on: the stored prediction of the edit's branch for its
    sample (what the edit view shows and the artist repaints; embedding deletes it, tuning stores it anew), ``uint8
    [H, W]``; None when there is none (the worker then segments the sample itself)."""
    prediction = session.sample.predictions.filter(segmentation=session.segmentation).first()
    return None if prediction is None else datasets.parse_mask(session.sample, read_bytes(prediction.mask.name))


def region_of_interest(session: EditSession) -> Optional[np.ndarray]:
    """A mode-3 edit's region of interest, bool ``[H, W]``, or None when the request gave none."""
    name = session.params.get("roi_file")
    return datasets.parse_roi(session.sample, read_bytes(name)) if name else None
