import base64
import binascii
from typing import Optional

from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from ninja import File, Form, Query, Router, UploadedFile, Status
from ninja.errors import HttpError

from webapp.accounts import roles
from webapp.accounts.auth import role_auth
from webapp.datasets.models import Sample
from webapp.editing import services
from webapp.editing.models import Composition
from webapp.editing.schemas import (CompositionIn, CompositionOut, EditIn, EditOut, VectorFromEditIn, VectorOut,
                                    VectorPatchIn)
from webapp.registry.models import Checkpoint
from webapp.validation import RowId, text

router = Router(tags=["editing"])
viewer, editor = role_auth(roles.VIEW_VECTORS), role_auth(roles.EDIT_IMAGES)


def _b64(data: str, field: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"{field} must be base64-encoded PNG data") from None


@router.post("/edits", auth=editor, response={202: EditOut})
def start_edit(request, payload: EditIn):
    """Mode 1 applies vectors (real time, batched with other requests), 2 applies and refines, 3 optimises from
    a repainted mask. Progress and previews stream on ws/edits/{id}/; the result is also in GET /edits/{id}."""
    sample = get_object_or_404(Sample, pk=payload.sample_id)
    composition = (get_object_or_404(Composition, pk=payload.composition_id)
                   if payload.composition_id is not None else None)
    session = services.start_edit(
        request.user, sample, payload.mode, vectors=[(v.vector_id, v.scale) for v in payload.vectors],
        composition=composition, edited_classes=payload.edited_classes, steps=payload.steps,
        stop_follow=payload.stop_follow, with_mask=payload.with_mask, image_format=payload.image_format,
        target_mask_png=_b64(payload.target_mask_png, "target_mask_png") if payload.target_mask_png else b"",
        roi_png=_b64(payload.roi_png, "roi_png") if payload.roi_png else b"")
    return Status(202, services.session_out(session))


@router.get("/edits", auth=editor, response=list[EditOut])
def list_edits(request, sample_id: Optional[RowId] = None, limit: int = Query(50, ge=1, le=500)):
    sessions = services.visible_sessions(request.user)
    if sample_id is not None:
        sessions = sessions.filter(sample_id=sample_id)
    return [services.session_out(s) for s in sessions[:limit]]


@router.get("/edits/{edit_id}", auth=editor, response=EditOut)
def get_edit(request, edit_id: int):
    return services.session_out(get_object_or_404(services.visible_sessions(request.user), pk=edit_id))


@router.get("/vectors", auth=viewer, response=list[VectorOut])
def list_vectors(request, generator_id: Optional[RowId] = None, tag: Optional[text(40)] = None,
                 q: Optional[text(100)] = None):
    vectors = services.visible_vectors(request.user).select_related("author", "thumbnails_job")
    if generator_id is not None:
        vectors = vectors.filter(generator_id=generator_id)
    if q:
        vectors = vectors.filter(name__icontains=q)
    rows = [services.vector_out(v) for v in vectors]
    return [r for r in rows if tag.lower() in r["tags"]] if tag else rows


@router.post("/vectors", auth=role_auth("editing.add_editvector"), response={201: VectorOut})
def create_vector(request, payload: VectorFromEditIn):
    """Save the vector an edit (mode 2 or 3) learned into the shared library."""
    session = get_object_or_404(services.visible_sessions(request.user), pk=payload.edit_id)
    vector = services.vector_from_edit(request.user, session, payload.name, payload.description, payload.tags,
                                       payload.scale_min, payload.scale_max)
    return Status(201, services.vector_out(vector))


@router.post("/vectors/upload", auth=role_auth("editing.add_editvector"), response={201: VectorOut})
def upload_vector(request, file: File[UploadedFile], generator_id: Form[RowId], tags: text(2000) = Form("")):
    """Import a project-format vector file for a registered generator; a worker renders its thumbnails (the
    response's ``thumbnails_job_id``)."""
    checkpoint = Checkpoint.objects.filter(pk=generator_id).first()
    if checkpoint is None:
        raise HttpError(404, f"there is no generator #{generator_id} in this studio: GET /api/checkpoints?kind="
                             "generator lists them (import the vector's generator first if it is not there)")
    if checkpoint.kind != Checkpoint.Kind.GENERATOR:
        raise ValidationError(f"checkpoint #{generator_id} is a {checkpoint.kind}, not a generator: give the "
                              "generator_id of the generator the vector was learned on")
    vector = services.upload_vector(request.user, file.read(), file.name or "vector", checkpoint,
                                    tags=tags.split(",") if tags else [])
    return Status(201, services.vector_out(vector))


@router.get("/vectors/{vector_id}", auth=viewer, response=VectorOut)
def get_vector(request, vector_id: int):
    return services.vector_out(get_object_or_404(services.visible_vectors(request.user), pk=vector_id))


@router.patch("/vectors/{vector_id}", auth=role_auth("editing.change_editvector"), response=VectorOut)
def update_vector(request, vector_id: int, payload: VectorPatchIn):
    vector = get_object_or_404(services.visible_vectors(request.user), pk=vector_id)
    return services.vector_out(services.update_vector(request.user, vector, payload.dict(exclude_unset=True)))


@router.delete("/vectors/{vector_id}", auth=role_auth("editing.delete_editvector"), response={204: None})
def delete_vector(request, vector_id: int):
    services.delete_vector(request.user, get_object_or_404(services.visible_vectors(request.user), pk=vector_id))
    return Status(204, None)


@router.get("/vectors/{vector_id}/file", auth=viewer)
def download_vector(request, vector_id: int):
    """The vector as a project-format .safetensors file (usable with ``python -m editor_core apply``)."""
    vector = get_object_or_404(services.visible_vectors(request.user), pk=vector_id)
    response = HttpResponse(services.vector_file(vector), content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="vector-{vector.pk}.safetensors"'
    return response


@router.get("/compositions", auth=viewer, response=list[CompositionOut])
def list_compositions(request, generator_id: Optional[RowId] = None):
    rows = Composition.objects.prefetch_related("items").select_related("author")
    if generator_id is not None:
        rows = rows.filter(generator_id=generator_id)
    return [services.composition_out(c) for c in rows]


@router.post("/compositions", auth=role_auth("editing.add_composition"), response={201: CompositionOut})
def create_composition(request, payload: CompositionIn):
    generator = get_object_or_404(Checkpoint, pk=payload.generator_id, kind=Checkpoint.Kind.GENERATOR)
    composition = services.create_composition(request.user, payload.name, generator,
                                              [(i.vector_id, i.scale) for i in payload.items])
    return Status(201, services.composition_out(composition))


@router.get("/compositions/{composition_id}", auth=viewer, response=CompositionOut)
def get_composition(request, composition_id: int):
    return services.composition_out(get_object_or_404(Composition, pk=composition_id))


@router.delete("/compositions/{composition_id}", auth=role_auth("editing.delete_composition"), response={204: None})
def delete_composition(request, composition_id: int):
    services.delete_composition(request.user, get_object_or_404(Composition, pk=composition_id))
    return Status(204, None)
