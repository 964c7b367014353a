"""Edit sessions in the engine: their vectors and latents in; previews, results and mode-1 batches out, stored
through ``webapp.editing.services`` (which announces them on the edit's websocket)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from django.conf import settings
from django.core.exceptions import ValidationError

from editor_core.bundle import latents_bytes
from editor_core.editing import apply_vectors
from editor_core.images import fit_within, image_jpeg, image_png, mask_array
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
        editing.publish_preview(session, reporter.job.pk, event.step, event.total, image_jpeg(event.preview_image),
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


@dataclass
class Mode1Item:
    """One mode-1 request as the engine draws it: its sample (whose pivotal tuning picks the generator), networks,
    ``(library id, vector, scale)`` list and latent, and whether it wants the segmentation too."""
    sample: object
    generator: object
    segmentation: object
    vectors: list[tuple[int, EditVector, float]]
    ws: torch.Tensor
    with_mask: bool


def draw_mode1(items: list[Mode1Item]) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, int]]:
    """Mode 1 for several requests, in their order: ``(image, mask or None, edited latent, batch size)`` each, from
    one forward pass per sample tuning. Requests are batched by their tuning when queued, but a sample tuned after
    that brings its new tuning along and must not be drawn with its batch-mates' generator. A group is segmented when
    one of its items wants the mask, and only those get it."""
    by_tuning: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_tuning.setdefault(item.sample.tuning_sha256, []).append(index)
    drawn: list = [None] * len(items)
    for indices in by_tuning.values():
        group = [items[index] for index in indices]
        first = group[0]
        vectors, scales = scale_rows([item.vectors for item in group])
        applied = apply_vectors(engine_cache.editing_models(first.generator, first.segmentation, first.sample),
                                torch.cat([item.ws for item in group]), vectors, scales,
                                mask_members=engine_cache.mode1_mask_members(),
                                with_mask=any(item.with_mask for item in group))
        for row, index in enumerate(indices):
            mask = applied.mask[row] if items[index].with_mask else None
            drawn[index] = (applied.image[row], mask, applied.ws[row], len(group))
    return drawn


def live_apply(requests: list[dict]) -> list[bytes | Exception]:
    """Live-apply positions (``editing.live_apply_request``, several users' sliders): mode 1, the image alone, as
    JPEGs of at most ``STUDIO_LIVE_APPLY_MAX_SIZE`` pixels a side, in request order (``draw_mode1``). A position whose
    rows are gone gets its own error."""
    outcomes: list[bytes | Exception | None] = [None] * len(requests)
    items, placed = [], []
    for index, inputs in enumerate(edit_rows.live_apply_inputs(requests)):
        if isinstance(inputs, ValidationError):
            outcomes[index] = inputs
            continue
        sample, segmentation, vectors = inputs
        items.append(Mode1Item(sample, sample.dataset.generator, segmentation,
                               [(row.pk, engine_cache.vector(row), scale) for row, scale in vectors],
                               samples.latent(sample), with_mask=False))
        placed.append(index)
    preview_side = settings.STUDIO_LIVE_APPLY_MAX_SIZE
    for index, (image, _mask, _ws, _size) in zip(placed, draw_mode1(items)):
        outcomes[index] = image_jpeg(fit_within(image, preview_side) if preview_side else image)
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
    """Apply each request's vectors to its latent and store the results (request order), drawn by ``draw_mode1``."""
    drawn = draw_mode1([Mode1Item(request.session.sample, request.session.generator, request.session.segmentation,
                                  request.vectors, request.ws, request.session.params.get("with_mask", True))
                        for request in requests])
    return [store(request.session, image, mask, ws, metrics={"batch_size": size, "batch_leader": leader.pk})
            for request, (image, mask, ws, size) in zip(requests, drawn)]
