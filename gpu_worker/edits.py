"""Edit sessions in the engine: their vectors and latents in; previews, results and mode-1 batches out, stored
through ``webapp.editing.services`` (which announces them on the edit's websocket)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from django.core.exceptions import ValidationError

from editor_core.bundle import latents_bytes
from editor_core.editing import apply_vectors
from editor_core.images import image_jpeg, image_png, mask_array
from editor_core.progress import ProgressEvent
from editor_core.vectors import EditVector, EditVectorInfo, scale_rows
from gpu_worker import engine_cache, samples
from gpu_worker.progress import JobReporter
from webapp.datasets import services as datasets
from webapp.editing import selectors as edit_rows, services as editing


def session(job):
    return edit_rows.session(job.params["session_id"])


def library_vectors(session) -> list[tuple[int, EditVector, float]]:
    """``(library id, engine vector, scale)`` for each vector of a mode 1/2 edit."""
    return [(row.pk, engine_cache.vector(row), scale) for row, scale in edit_rows.session_vectors(session)]


def stream_previews(reporter: JobReporter, session) -> None:
    """Send a mode 2/3 edit's previews (the image, and its segmentation in the schema's colours) to its websocket."""
    sample = session.sample

    def preview(event: ProgressEvent) -> None:
        mask = None if event.preview_mask is None else datasets.mask_png(
            sample, mask_array(event.preview_mask, sample.width))
        editing.publish_preview(session, reporter.job.pk, event.step, event.total, image_png(event.preview_image),
                                mask)

    reporter.on_preview = preview


def store(session, image: torch.Tensor, mask: torch.Tensor | None, ws: torch.Tensor,
          delta: torch.Tensor | None = None, edited_classes=(), metrics: dict | None = None) -> dict:
    """Store an edit's result (its vector file too, when the edit learned one; no mask file when ``mask`` is None);
    the job's result is what ``GET /edits/{id}`` shows."""
    vector_file = b""
    if delta is not None:
        info = EditVectorInfo(name=f"edit {session.pk}", generator_id=session.generator.fingerprint,
                              edited_classes=list(edited_classes), source={"kind": "edit", "session": session.pk},
                              author=session.user.get_username() if session.user else "")
        vector_file = EditVector(delta=delta.detach().cpu(), info=info).to_bytes()
    mask_png = None if mask is None else datasets.mask_png(session.sample, mask_array(mask, session.sample.width))
    image_format = session.params.get("image_format", "png")
    encoded = image_jpeg(image) if image_format == "jpeg" else image_png(image)
    result = editing.store_result(session, image=encoded, image_format=image_format, mask_png=mask_png,
                                  latent=latents_bytes(ws, session.generator.fingerprint), delta=vector_file,
                                  edited_classes=edited_classes, metrics=metrics or {})
    return {"session_id": session.pk, **editing.result_out(result)}


def live_apply(requests: list[dict]) -> list[bytes | Exception]:
    """Live-apply positions (``editing.live_apply_request``, several users' sliders): mode 1, the image alone, as
    JPEGs, in request order; one forward pass per sample tuning, as ``render_mode1`` draws them. A position whose rows
    are gone gets its own error."""
    outcomes: list[bytes | Exception | None] = [None] * len(requests)
    by_tuning: dict[str, list[tuple[int, object, object, list]]] = {}
    for index, request in enumerate(requests):
        try:
            sample, segmentation, vectors = edit_rows.live_apply_inputs(request)
        except ValidationError as exc:
            outcomes[index] = exc
            continue
        by_tuning.setdefault(sample.tuning_sha256, []).append((index, sample, segmentation, vectors))
    for group in by_tuning.values():
        _index, first, segmentation, _vectors = group[0]
        vectors, scales = scale_rows([[(row.pk, engine_cache.vector(row), scale) for row, scale in chosen]
                                      for *_rest, chosen in group])
        applied = apply_vectors(engine_cache.editing_models(first.dataset.generator, segmentation, first),
                                torch.cat([samples.latent(sample) for _index, sample, *_rest in group]), vectors,
                                scales, with_mask=False)
        for row, (index, *_rest) in enumerate(group):
            outcomes[index] = image_jpeg(applied.image[row])
    return outcomes


@dataclass
class Mode1Request:
    job: object
    session: object
    vectors: list[tuple[int, EditVector, float]]
    ws: torch.Tensor


def mode1_request(job) -> Mode1Request:
    edit = session(job)
    return Mode1Request(job, edit, library_vectors(edit), samples.latent(edit.sample))


def render_mode1(leader, requests: list[Mode1Request]) -> list[dict]:
    """Apply each request's vectors to its latent and store the results (request order): one forward pass per
    sample tuning. ``batch_key`` groups requests of one tuning, but a sample tuned after its request was keyed
    brings its new tuning along, and must not be drawn with its batch-mates' generator. A group is segmented when
    one of its requests wants the mask, and only those get it."""
    by_tuning: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        by_tuning.setdefault(request.session.sample.tuning_sha256, []).append(index)
    results: dict[int, dict] = {}
    for indices in by_tuning.values():
        group = [requests[index] for index in indices]
        vectors, scales = scale_rows([request.vectors for request in group])
        first = group[0].session
        wants_mask = [request.session.params.get("with_mask", True) for request in group]
        applied = apply_vectors(engine_cache.editing_models(first.generator, first.segmentation, first.sample),
                                torch.cat([request.ws for request in group]), vectors, scales,
                                mask_members=engine_cache.mode1_mask_members(), with_mask=any(wants_mask))
        for row, index in enumerate(indices):
            mask = applied.mask[row] if wants_mask[row] else None
            results[index] = store(requests[index].session, applied.image[row], mask, applied.ws[row],
                                   metrics={"batch_size": len(group), "batch_leader": leader.pk})
    return [results[index] for index in range(len(requests))]
