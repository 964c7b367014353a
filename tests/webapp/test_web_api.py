"""REST API behaviour (in-process Django test client): data flows, optimistic versions, validation, exports."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import photo_file, png_bytes
from webapp.datasets.masks import decode_coco_rle

pytestmark = pytest.mark.django_db


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def current_mask(client, sample_id: int) -> np.ndarray:
    response = client.get(f"/api/samples/{sample_id}/annotation/mask.png")
    assert response.status_code == 200
    return np.asarray(Image.open(io.BytesIO(response.content)))


def stored_files(folder: str = "") -> set[str]:
    """Every file name in the studio's storage below ``folder`` (what a refused request must not add to)."""
    from webapp.storage import stored_names

    return set(stored_names(folder))


def raising(error: Exception):
    """A stand-in for a function or method that fails with ``error``, whatever it is called with."""
    def fail(*_args, **_kwargs):
        raise error

    return fail


def test_me_reports_role_and_permissions(shared_studio, client_for):
    body = client_for(shared_studio.users.artist).get("/api/me").json()
    assert body["role"] == "artist"
    assert "editing.run_edit" in body["permissions"] and "datasets.annotate" not in body["permissions"]


def test_schema_creation_validates_classes(shared_studio, client_for):
    admin = client_for(shared_studio.users.admin)
    classes = [{"name": f"part {i}", "colour": f"#{i:02x}{i:02x}{i:02x}"} for i in range(20)]
    created = admin.post("/api/schemas", {"name": "car", "classes": classes}, content_type="application/json")
    assert created.status_code == 201 and len(created.json()["classes"]) == 20
    duplicate = admin.post("/api/schemas", {"name": "dup", "classes": [classes[0], classes[0]]},
                           content_type="application/json")
    assert duplicate.status_code == 400 and "repeated" in duplicate.json()["detail"]
    bad_colour = admin.post("/api/schemas", {"name": "x", "classes": [{"name": "a", "colour": "red"}] * 2},
                            content_type="application/json")
    assert bad_colour.status_code == 422


def test_save_annotation_versions_and_409_on_stale_base(shared_studio, client_for):
    sample = shared_studio.samples[2]  # not annotated yet
    alice, bob = client_for(shared_studio.users.annotator), client_for(shared_studio.users.annotator2)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:10, 4:10] = 1
    first = alice.put(f"/api/samples/{sample.pk}/annotation", {"base_version": 0, "mask_png": b64(png_bytes(mask))},
                      content_type="application/json")
    assert first.status_code == 200 and first.json()["version"] == 1 and first.json()["status"] == "draft"

    bob_mask = mask.copy()
    bob_mask[20:30, 20:30] = 2
    stale = bob.put(f"/api/samples/{sample.pk}/annotation", {"base_version": 0, "mask_png": b64(png_bytes(bob_mask))},
                    content_type="application/json")
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 1  # the client learns what to reload
    assert (current_mask(alice, sample.pk) == mask).all()  # nothing was overwritten

    rebased = bob.put(f"/api/samples/{sample.pk}/annotation",
                      {"base_version": 1, "mask_png": b64(png_bytes(bob_mask))}, content_type="application/json")
    assert rebased.status_code == 200 and rebased.json()["version"] == 2
    revisions = alice.get(f"/api/samples/{sample.pk}/annotation/revisions").json()
    assert [(r["version"], r["author"]) for r in revisions] == [(2, "ann2"), (1, "ann")]
    old = alice.get(f"/api/samples/{sample.pk}/annotation/mask.png?version=1")
    assert (np.asarray(Image.open(io.BytesIO(old.content))) == mask).all()  # history keeps every revision


def test_submit_then_review_workflow(shared_studio, client_for):
    sample = shared_studio.samples[0]  # annotated at version 1 by the fixture
    annotator, admin = client_for(shared_studio.users.annotator), client_for(shared_studio.users.admin)
    submitted = annotator.post(f"/api/samples/{sample.pk}/annotation/submit", {"base_version": 1},
                               content_type="application/json")
    assert submitted.status_code == 200 and submitted.json() == {**submitted.json(), "status": "submitted",
                                                                 "version": 2}
    again = annotator.post(f"/api/samples/{sample.pk}/annotation/submit", {"base_version": 2},
                           content_type="application/json")
    assert again.status_code == 409 and "submitted" in again.json()["detail"]
    rejected = admin.post(f"/api/samples/{sample.pk}/annotation/review",
                          {"base_version": 2, "decision": "rejected", "note": "hair spills onto skin"},
                          content_type="application/json")
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    history = admin.get(f"/api/samples/{sample.pk}/annotation/revisions").json()
    assert [r["reason"] for r in history] == ["review", "submit", "save"]
    assert history[0]["note"] == "hair spills onto skin"


@pytest.mark.parametrize("problem, make, reason", [
    ("wrong size", lambda: png_bytes(np.zeros((16, 32), np.uint8)), "the sample is 32×32"),
    ("unknown class", lambda: png_bytes(np.full((32, 32), 7, np.uint8)), "unknown class indices [7]"),
    ("rgb image", lambda: png_bytes(np.zeros((32, 32, 3), np.uint8), mode="RGB"), "mode RGB"),
    ("not a png", lambda: b"GIF89a not really", "not a readable PNG"),
])
def test_bad_masks_are_refused_with_the_reason(shared_studio, client_for, problem, make, reason):
    sample = shared_studio.samples[0]
    response = client_for(shared_studio.users.annotator).put(
        f"/api/samples/{sample.pk}/annotation", {"base_version": 1, "mask_png": b64(make())},
        content_type="application/json")
    assert response.status_code == 400, problem
    assert reason in response.json()["detail"]
    assert client_for(shared_studio.users.annotator).get(f"/api/samples/{sample.pk}/annotation").json()["version"] == 1


def test_mask_that_is_not_base64_is_a_400(shared_studio, client_for):
    response = client_for(shared_studio.users.annotator).put(
        f"/api/samples/{shared_studio.samples[0].pk}/annotation", {"base_version": 1, "mask_png": "***"},
        content_type="application/json")
    assert response.status_code == 400 and "base64" in response.json()["detail"]


def _image_file(fmt: str, size=(40, 30)) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=fmt)
    buffer.seek(0)
    buffer.name = f"photo.{fmt.lower()}"
    return buffer


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_upload_accepts_png_jpeg_webp_and_fits_the_generator(shared_studio, client_for, fmt):
    response = client_for(shared_studio.users.artist).post(f"/api/datasets/{shared_studio.dataset.pk}/samples/upload",
                                                    {"file": _image_file(fmt)})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["width"], body["height"], body["source"], body["has_latent"]) == (32, 32, "uploaded", False)


def test_upload_refuses_other_formats_bombs_and_oversize(shared_studio, client_for, settings):
    artist = client_for(shared_studio.users.artist)
    url = f"/api/datasets/{shared_studio.dataset.pk}/samples/upload"
    gif = artist.post(url, {"file": _image_file("GIF")})
    assert gif.status_code == 400 and "GIF images are not accepted" in gif.json()["detail"]
    garbage = io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    garbage.name = "broken.png"
    assert artist.post(url, {"file": garbage}).status_code == 400
    settings.STUDIO_MAX_UPLOAD_PIXELS = 1000  # a 4000×4000 PNG of one colour is tiny on disk: a decompression bomb
    bomb = artist.post(url, {"file": _image_file("PNG", size=(4000, 4000))})
    assert bomb.status_code == 400 and "the limit is 1000 pixels" in bomb.json()["detail"]
    settings.STUDIO_MAX_UPLOAD_BYTES = 100
    big = artist.post(url, {"file": _image_file("JPEG")})
    assert big.status_code == 400 and "the limit is 100 bytes" in big.json()["detail"]
    assert shared_studio.dataset.samples.count() == 4


def test_exports_png_coco_rle_and_zip(shared_studio, client_for):
    viewer = client_for(shared_studio.users.artist)
    sample = shared_studio.samples[0]
    mask = current_mask(viewer, sample.pk)
    coco = viewer.get(f"/api/samples/{sample.pk}/annotation/coco").json()
    assert {c["id"] for c in coco["categories"]} == {1, 2}
    rebuilt = np.zeros_like(mask)
    for annotation in coco["annotations"]:
        rebuilt[decode_coco_rle(annotation["segmentation"])] = annotation["category_id"]
        assert annotation["area"] == int((mask == annotation["category_id"]).sum())
    assert (rebuilt == mask).all()

    archive = zipfile.ZipFile(io.BytesIO(viewer.get(f"/api/datasets/{shared_studio.dataset.pk}/export.zip").content))
    names = set(archive.namelist())
    assert {"schema.json", "annotations.coco.json"} <= names
    assert {f"images/{s.pk}.png" for s in shared_studio.samples} <= names
    assert {n for n in names if n.startswith("masks/")} == {f"masks/{s.pk}.png" for s in shared_studio.samples[:2]}
    schema = json.loads(archive.read("schema.json"))
    assert [c["name"] for c in schema["classes"]] == ["background", "skin", "hair"]


def test_vector_library_and_compositions(shared_studio, client_for):
    artist, admin = client_for(shared_studio.users.artist), client_for(shared_studio.users.admin)
    vector = artist.get("/api/vectors?tag=hair").json()
    assert [v["name"] for v in vector] == ["bigger hair"] and vector[0]["edited_classes"] == [2]
    vector_id = vector[0]["id"]
    patched = artist.patch(f"/api/vectors/{vector_id}", {"scale_min": -2, "scale_max": 3, "tags": ["Hair", "long"]},
                           content_type="application/json")
    assert patched.status_code == 200 and patched.json()["tags"] == ["hair", "long"]
    wrong_range = artist.patch(f"/api/vectors/{vector_id}", {"scale_min": 5}, content_type="application/json")
    assert wrong_range.status_code == 400

    downloaded = artist.get(f"/api/vectors/{vector_id}/file").content
    again = artist.post("/api/vectors/upload", {"file": io.BytesIO(downloaded), "generator_id": shared_studio.generator.pk})
    assert again.status_code == 409  # same name on the same generator
    composition = artist.post("/api/compositions", {"name": "look", "generator_id": shared_studio.generator.pk,
                                                    "items": [{"vector_id": vector_id, "scale": 1.5}]},
                              content_type="application/json")
    assert composition.status_code == 201
    in_use = artist.delete(f"/api/vectors/{vector_id}")
    assert in_use.status_code == 409 and "look" in in_use.json()["detail"]
    other_artist_vector = admin.delete(f"/api/compositions/{composition.json()['id']}")
    assert other_artist_vector.status_code == 204  # admins may delete anyone's
    assert artist.delete(f"/api/vectors/{vector_id}").status_code == 204


def test_vector_from_another_generator_is_refused(shared_studio, client_for, tiny_models, tmp_path):
    import torch

    from editor_core.vectors import EditVector, EditVectorInfo

    path = tmp_path / "foreign.safetensors"
    EditVector(torch.zeros(shared_studio.generator.config["num_ws"], 32),
               EditVectorInfo(name="foreign", generator_id="0123456789abcdef", edited_classes=[1])).save(path)
    response = client_for(shared_studio.users.artist).post(
        "/api/vectors/upload", {"file": io.BytesIO(path.read_bytes()), "generator_id": shared_studio.generator.pk})
    assert response.status_code == 400 and "learned on generator 0123456789abcdef" in response.json()["detail"]


def tiny_vector_file(tmp_path, generator_row, name: str, fingerprint: str = "", scale_range=(-4.0, 4.0)) -> bytes:
    """A project-format vector for ``generator_row``'s shape, learned on ``fingerprint`` (default: that generator)."""
    import torch

    from editor_core.vectors import EditVector, EditVectorInfo

    path = tmp_path / f"{name}.safetensors"
    EditVector(torch.full((generator_row.config["num_ws"], generator_row.config["w_dim"]), 0.1),
               EditVectorInfo(name=name, generator_id=fingerprint or generator_row.fingerprint, edited_classes=[1],
                              scale_range=scale_range)).save(path)
    return path.read_bytes()


def test_an_uploaded_vector_gets_its_thumbnails_rendered_by_a_job(shared_studio, client_for, tmp_path):
    from webapp.jobs.models import Job

    artist = client_for(shared_studio.users.artist)
    data = tiny_vector_file(tmp_path, shared_studio.generator, "wider smile", scale_range=(1.5, 3.0))
    uploaded = artist.post("/api/vectors/upload", {"file": io.BytesIO(data), "generator_id": shared_studio.generator.pk,
                                                   "tags": "mouth"})
    assert uploaded.status_code == 201, uploaded.content
    vector = uploaded.json()
    assert vector["thumb_before_url"] is None and vector["thumbnails_status"] == "queued"
    job = Job.objects.get(pk=vector["thumbnails_job_id"])
    assert job.kind == "vector_thumbnails" and job.queue == "interactive" and job.requested_by == \
        shared_studio.users.artist
    # Sample THUMBNAIL_SEED of the vector's generator at the default slider position (1), moved into the range.
    assert job.params == {"vector_id": vector["id"], "seed": 0, "truncation_psi": 0.7, "scale": 1.5}
    listed = {v["id"]: v for v in artist.get("/api/vectors").json()}
    assert listed[vector["id"]]["thumbnails_job_id"] == job.pk
    # The fixture's vector came with no pictures and no job: nothing is coming.
    assert listed[shared_studio.vector.pk]["thumbnails_status"] is None


def test_an_uploaded_vector_for_an_unknown_generator_is_a_clear_4xx(shared_studio, client_for, tmp_path):
    from webapp.editing.models import EditVector
    from webapp.jobs.models import Job

    artist = client_for(shared_studio.users.artist)
    data = tiny_vector_file(tmp_path, shared_studio.generator, "lost")
    before = (EditVector.objects.count(), Job.objects.count())

    unknown = artist.post("/api/vectors/upload", {"file": io.BytesIO(data), "generator_id": 99999})
    assert unknown.status_code == 404
    assert "no generator #99999" in unknown.json()["detail"] and "kind=generator" in unknown.json()["detail"]
    branch = artist.post("/api/vectors/upload", {"file": io.BytesIO(data),
                                                 "generator_id": shared_studio.segmentation.pk})
    assert branch.status_code == 400 and "is a segmentation, not a generator" in branch.json()["detail"]
    foreign = tiny_vector_file(tmp_path, shared_studio.generator, "foreign", "feedfacefeedface")
    unregistered = artist.post("/api/vectors/upload", {"file": io.BytesIO(foreign),
                                                       "generator_id": shared_studio.generator.pk})
    assert unregistered.status_code == 400
    assert "generator feedfacefeedface is not registered in this studio" in unregistered.json()["detail"]
    assert artist.post("/api/vectors/upload", {"file": io.BytesIO(data)}).status_code == 422  # no generator_id
    assert (EditVector.objects.count(), Job.objects.count()) == before  # nothing stored, no job queued


def test_a_refused_or_failed_vector_upload_leaves_no_file_in_storage(shared_studio, client_for, tmp_path,
                                                                     monkeypatch):
    from webapp.editing import services as editing
    from webapp.editing.models import EditVector

    artist = client_for(shared_studio.users.artist)
    generator = shared_studio.generator
    downloaded = artist.get(f"/api/vectors/{shared_studio.vector.pk}/file").content
    before = (stored_files(), EditVector.objects.count())
    taken = artist.post("/api/vectors/upload", {"file": io.BytesIO(downloaded), "generator_id": generator.pk})
    assert taken.status_code == 409
    assert taken.json()["detail"] == f"generator #{generator.pk} already has a vector named 'bigger hair'"
    assert (stored_files(), EditVector.objects.count()) == before

    # Any failure after the file is stored, here queueing its thumbnails.
    monkeypatch.setattr(editing, "enqueue_thumbnails", raising(ConnectionError("the broker is unreachable")))
    with pytest.raises(ConnectionError):
        artist.post("/api/vectors/upload", {"file": io.BytesIO(tiny_vector_file(tmp_path, generator, "new look")),
                                            "generator_id": generator.pk})
    assert (stored_files(), EditVector.objects.count()) == before


def test_a_vector_from_an_edit_under_a_taken_name_leaves_no_thumbnails(shared_studio, client_for):
    from webapp.editing import services as editing
    from webapp.editing.models import EditSession

    sample, artist = shared_studio.samples[0], shared_studio.users.artist
    session = EditSession.objects.create(sample=sample, generator=shared_studio.generator,
                                         segmentation=shared_studio.segmentation, mode=EditSession.Mode.OPTIMIZE,
                                         user=artist)
    picture = png_bytes(np.zeros((32, 32, 3), np.uint8), mode="RGB")
    editing.store_result(session, image=picture, mask_png=picture, latent=b"latent", delta=b"delta")
    before = stored_files()
    taken = client_for(artist).post("/api/vectors", {"edit_id": session.pk, "name": "bigger hair"},
                                    content_type="application/json")
    assert taken.status_code == 409 and "already has a vector named 'bigger hair'" in taken.json()["detail"]
    assert stored_files() == before


def test_a_slider_jpeg_travels_in_its_result_message(shared_studio):
    """A JPEG result (a slider's preview) is in the edit.result message as a data URL, the very bytes stored; a PNG
    result is only linked."""
    from asgiref.sync import async_to_sync, sync_to_async
    from channels.layers import get_channel_layer

    from webapp.editing import services as editing
    from webapp.editing.models import EditSession
    from webapp.realtime.groups import edit_group
    from webapp.storage import read_bytes

    sample, artist = shared_studio.samples[0], shared_studio.users.artist
    layer = get_channel_layer()

    async def result_message(image_format: str, picture: bytes) -> tuple[dict, object]:
        # The ORM runs in this test's thread (sync_to_async hands it back here), the layer on the loop.
        session = await sync_to_async(EditSession.objects.create)(
            sample=sample, generator=shared_studio.generator, segmentation=shared_studio.segmentation,
            mode=EditSession.Mode.APPLY, user=artist)
        channel = await layer.new_channel()
        await layer.group_add(edit_group(session.pk), channel)
        result = await sync_to_async(editing.store_result)(session, image=picture, image_format=image_format,
                                                           mask_png=None, latent=b"latent")
        return await asyncio.wait_for(layer.receive(channel), 10), result

    jpeg = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(jpeg, format="JPEG")
    message, result = async_to_sync(result_message)("jpeg", jpeg.getvalue())
    assert message["type"] == "edit.result" and message["image_url"].endswith(".jpg")
    prefix = "data:image/jpeg;base64,"
    assert message["image"].startswith(prefix)
    assert base64.b64decode(message["image"][len(prefix):]) == read_bytes(result.image.name) == jpeg.getvalue()
    message, _ = async_to_sync(result_message)("png", png_bytes(np.zeros((32, 32, 3), np.uint8), mode="RGB"))
    assert message["image_url"].endswith(".png") and "image" not in message


def test_replaced_results_and_thumbnails_leave_no_files_but_those_the_library_uses(
        shared_studio, client_for, django_capture_on_commit_callbacks):
    """A retried edit's earlier result and a vector's re-rendered thumbnails: the files they replace are deleted once
    the new rows commit, except the vector file that the library took from the earlier result."""
    from webapp.editing import services as editing
    from webapp.editing.models import EditSession, EditVector
    from webapp.storage import read_bytes

    sample, artist = shared_studio.samples[0], shared_studio.users.artist
    session = EditSession.objects.create(sample=sample, generator=shared_studio.generator,
                                         segmentation=shared_studio.segmentation, mode=EditSession.Mode.OPTIMIZE,
                                         user=artist)
    picture = png_bytes(np.zeros((32, 32, 3), np.uint8), mode="RGB")
    first = editing.store_result(session, image=picture, mask_png=picture, latent=b"latent", delta=b"delta")
    saved = client_for(artist).post("/api/vectors", {"edit_id": session.pk, "name": "first try"},
                                    content_type="application/json")
    assert saved.status_code == 201, saved.content
    vector = EditVector.objects.get(pk=saved.json()["id"])
    assert vector.file.name == first.delta.name

    with django_capture_on_commit_callbacks(execute=True):
        second = editing.store_result(session, image=picture, mask_png=picture, latent=b"latent 2",
                                      delta=b"delta 2")
    files = stored_files()
    assert not {first.image.name, first.mask.name, first.latent.name} & files
    assert {first.delta.name, second.image.name, second.mask.name, second.latent.name, second.delta.name} <= files
    vector.refresh_from_db()
    assert vector.source is None and read_bytes(vector.file.name) == b"delta"

    earlier_thumbnails = {vector.thumb_before.name, vector.thumb_after.name}
    with django_capture_on_commit_callbacks(execute=True):
        rerendered = editing.store_thumbnails(vector.pk, picture, picture)
    files = stored_files()
    assert not earlier_thumbnails & files
    assert {rerendered.thumb_before.name, rerendered.thumb_after.name} <= files


def test_uploads_that_fail_after_storing_leave_no_file(shared_studio, client_for, tiny_models, tmp_path, settings,
                                                       monkeypatch):
    """A photo, a checkpoint, a mask and a mode-3 target mask: each is stored before its row is written or its job
    queued; when that fails, the request answers the error and its files are gone with its rows."""
    from django.db import DatabaseError, IntegrityError

    from webapp.datasets.models import AnnotationRevision, Sample
    from webapp.editing.models import EditSession
    from webapp.jobs import services as jobs
    from webapp.registry.models import Checkpoint

    admin, annotator = client_for(shared_studio.users.admin), client_for(shared_studio.users.annotator)
    artist = client_for(shared_studio.users.artist)
    sample = shared_studio.samples[2]
    branch, path = second_branch(shared_studio, tiny_models, tmp_path, seed=7)
    branch.delete()  # a branch file the studio does not know (the deleted row's stored file is in 'before')
    before = stored_files()

    def rows():
        return [model.objects.count() for model in (Sample, Checkpoint, AnnotationRevision, EditSession)]

    rows_before = rows()

    with monkeypatch.context() as patch:
        patch.setattr(Sample, "save", raising(DatabaseError("disk full")))
        with pytest.raises(DatabaseError):
            artist.post(f"/api/datasets/{shared_studio.dataset.pk}/samples/upload",
                        {"file": photo_file((40, 40), (90, 140, 60))})
    with monkeypatch.context() as patch:  # the upload is stored for its import job, which cannot be queued
        patch.setattr(jobs, "enqueue", raising(ConnectionError("the database went away")))
        with pytest.raises(ConnectionError):
            admin.post("/api/checkpoints/upload", {"file": io.BytesIO(path.read_bytes()), "kind": "segmentation",
                                                   "name": "again", "generator_id": shared_studio.generator.pk})
    with monkeypatch.context() as patch:  # two first saves of the sample raced: the revision's version is taken
        patch.setattr(AnnotationRevision.objects, "create", raising(IntegrityError("UNIQUE constraint failed")))
        mask = b64(png_bytes(np.ones((32, 32), np.uint8)))
        lost_race = annotator.put(f"/api/samples/{sample.pk}/annotation", {"base_version": 0, "mask_png": mask},
                                  content_type="application/json")
        assert lost_race.status_code == 409 and lost_race.json()["current_version"] == 0
    settings.STUDIO_MAX_QUEUED_JOBS_PER_USER = 0
    refused = artist.post("/api/edits", {"sample_id": sample.pk, "mode": 3, "target_mask_png": mask,
                                         "edited_classes": [1]}, content_type="application/json")
    assert refused.status_code == 429
    assert stored_files() == before and rows() == rows_before


def test_worker_results_that_fail_after_storing_leave_no_file(shared_studio, tiny_models, tmp_path, monkeypatch):
    """A prediction, a new latent and an edit's result: a worker stores their files before it writes their rows;
    when a row write fails, the rows roll back (the earlier ones stay as they were) and the new files are gone."""
    from django.db import DatabaseError, IntegrityError
    from django.db.models import QuerySet

    from webapp.datasets import services as datasets
    from webapp.datasets.models import Sample, SamplePrediction
    from webapp.editing import services as editing
    from webapp.editing.models import EditResult, EditSession

    sample = shared_studio.samples[0]
    labels = np.zeros((sample.height, sample.width), np.uint8)
    branch, _path = second_branch(shared_studio, tiny_models, tmp_path, seed=9)
    for segmentation in (shared_studio.segmentation, branch):  # two predictions: set_sample_latent drops both
        datasets.store_prediction(sample, segmentation, labels, labels, uncertainty_peak=1.0, score=0.5)
    session = EditSession.objects.create(sample=sample, generator=shared_studio.generator,
                                         segmentation=shared_studio.segmentation, mode=EditSession.Mode.OPTIMIZE,
                                         user=shared_studio.users.artist)
    picture = png_bytes(np.zeros((32, 32, 3), np.uint8), mode="RGB")
    editing.store_result(session, image=picture, mask_png=picture, latent=b"latent")
    before = stored_files()

    def rows():
        return (list(Sample.objects.filter(pk=sample.pk).values_list("latent", "uncertainty", "ranked_with")),
                list(SamplePrediction.objects.order_by("pk").values_list("pk", "mask", "uncertainty", "score")),
                list(EditResult.objects.values_list("pk", "image", "mask", "latent")))

    rows_before = rows()

    with monkeypatch.context() as patch:  # the sample's ranking, written after the prediction's row
        patch.setattr(QuerySet, "update", raising(DatabaseError("disk full")))
        with pytest.raises(DatabaseError):
            datasets.store_prediction(Sample.objects.get(pk=sample.pk), shared_studio.segmentation, labels + 1,
                                      labels, uncertainty_peak=2.0, score=0.9)
    assert stored_files() == before and rows() == rows_before

    deleted = []
    real_delete = SamplePrediction.delete

    def second_delete_fails(prediction, *args, **kwargs):  # the first prediction (and its files) is gone by then
        if deleted:
            raise DatabaseError("connection lost")
        deleted.append(prediction.pk)
        return real_delete(prediction, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(SamplePrediction, "delete", second_delete_fails)
        with pytest.raises(DatabaseError):
            datasets.set_sample_latent(Sample.objects.get(pk=sample.pk), b"new latent")
    assert deleted and stored_files() == before and rows() == rows_before

    with monkeypatch.context() as patch:  # a retried job's result, after the earlier one's row was deleted
        patch.setattr(EditResult, "save", raising(IntegrityError("UNIQUE constraint failed")))
        with pytest.raises(IntegrityError):
            editing.store_result(session, image=picture, mask_png=picture, latent=b"latent", delta=b"delta")
    assert stored_files() == before and rows() == rows_before


def test_a_bundle_vectors_thumbnails_come_from_the_bundle(shared_studio, tmp_path):
    from webapp.editing.services import THUMB_SIZE
    from webapp.jobs.models import Job
    from webapp.storage import read_bytes
    from webapp.studio.services import import_bundle_vector

    (tmp_path / "vectors").mkdir()
    (tmp_path / "thumbnails").mkdir()
    for name in ("with pictures", "without pictures"):
        (tmp_path / "vectors" / f"{name}.safetensors").write_bytes(
            tiny_vector_file(tmp_path, shared_studio.generator, name))
    pictures = {part: np.random.default_rng(index).integers(0, 255, (200, 200, 3), dtype=np.uint8)
                for index, part in enumerate(("before", "after"))}
    for part, array in pictures.items():
        Image.fromarray(array).save(tmp_path / "thumbnails" / f"with pictures_{part}.png")
    Image.fromarray(pictures["before"]).save(tmp_path / "thumbnails" / "without pictures_before.png")  # one only
    admin, said = shared_studio.users.admin, []

    with_pictures = import_bundle_vector(tmp_path, tmp_path / "vectors" / "with pictures.safetensors",
                                         shared_studio.generator, admin, said.append)
    assert with_pictures.thumbnails_job is None
    for part, field in (("before", with_pictures.thumb_before), ("after", with_pictures.thumb_after)):
        with Image.open(io.BytesIO(read_bytes(field.name))) as stored:
            want = Image.fromarray(pictures[part])
            want.thumbnail((THUMB_SIZE, THUMB_SIZE))
            assert stored.size == (THUMB_SIZE, THUMB_SIZE) and (np.asarray(stored) == np.asarray(want)).all()

    without = import_bundle_vector(tmp_path, tmp_path / "vectors" / "without pictures.safetensors",
                                   shared_studio.generator, admin, said.append)
    assert not without.thumb_before and without.thumbnails_job.kind == Job.Kind.VECTOR_THUMBNAILS
    assert said == ["  vector with pictures", "  vector without pictures (its thumbnails are rendered by the worker)"]


def test_checkpoint_import_checks_format_and_paths(shared_studio, client_for, tiny_models, settings):
    """What an import request can tell without loading the file is refused at once (400), before a job exists."""
    from webapp.jobs.models import Job

    admin = client_for(shared_studio.users.admin)
    jobs_before = Job.objects.count()
    junk = io.BytesIO(b"this is not a checkpoint at all")
    junk.name = "model.pkl"
    refused = admin.post("/api/checkpoints/upload", {"file": junk, "kind": "generator", "name": "junk"})
    assert refused.status_code == 400 and "supported formats" in refused.json()["detail"]
    pickled = io.BytesIO(b"\x80\x04 a pickle")
    pickled.name = "branch.pkl"
    branch_from_pickle = admin.post("/api/checkpoints/upload", {
        "file": pickled, "kind": "segmentation", "name": "x", "generator_id": shared_studio.generator.pk})
    assert branch_from_pickle.status_code == 400
    assert "project .safetensors files only" in branch_from_pickle.json()["detail"]
    orphan = admin.post("/api/checkpoints/upload", {
        "file": io.BytesIO((tiny_models.folder / "segmentation.safetensors").read_bytes()), "kind": "segmentation",
        "name": "orphan"})
    assert orphan.status_code == 400 and "must name the generator" in orphan.json()["detail"]
    outside = admin.post("/api/checkpoints/import", {"kind": "generator", "name": "x", "server_path": "/etc/passwd"},
                         content_type="application/json")
    assert outside.status_code == 400 and "outside the import folders" in outside.json()["detail"]
    settings.STUDIO_MAX_CHECKPOINT_BYTES = 100
    large = admin.post("/api/checkpoints/upload", {
        "file": io.BytesIO((tiny_models.folder / "generator.safetensors").read_bytes()), "kind": "generator",
        "name": "large"})
    assert large.status_code == 400 and "larger than 100 bytes" in large.json()["detail"]
    assert Job.objects.count() == jobs_before
    active = admin.post(f"/api/checkpoints/{shared_studio.segmentation.pk}/activate").json()
    assert active["active"] is True
    used = admin.delete(f"/api/checkpoints/{shared_studio.generator.pk}")
    assert used.status_code == 409 and "still used" in used.json()["detail"]


def second_branch(studio, tiny_models, tmp_path, seed: int = 5, schema=None):
    """Another segmentation branch of the studio's generator and schema (registered, not active); with an engine
    ``schema``, a branch of the studio's generator that predicts that schema's classes instead (active: the first)."""
    import torch

    from conftest import TINY_SCHEMA
    from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, save_segmentation
    from webapp.registry import services as registry

    schema = schema or TINY_SCHEMA
    torch.manual_seed(seed)
    ensemble = SegmentationEnsemble(SegmentationConfig.from_generator(tiny_models.generator, schema.num_classes,
                                                                      hidden=(16,), ensemble_size=3), seed=seed)
    path = tmp_path / f"branch{seed}.safetensors"
    save_segmentation(path, ensemble, schema, meta={"generator_id": tiny_models.fingerprint})
    return registry.import_checkpoint(studio.users.admin, kind="segmentation", name=f"branch {seed}",
                                      data=path.read_bytes(), filename=path.name, generator=studio.generator), path


def test_activating_a_branch_queues_the_ranking_of_its_datasets(shared_studio, tiny_models, client_for, settings,
                                                                tmp_path):
    from webapp.datasets import services as datasets
    from webapp.jobs.models import Job
    from webapp.registry import services as registry

    settings.STUDIO_MAX_QUEUED_JOBS_PER_USER = 0  # the ranking that follows an activation is not the admin's choice
    admin = client_for(shared_studio.users.admin)
    second, _path = second_branch(shared_studio, tiny_models, tmp_path)
    assert not second.active
    same = datasets.create_dataset(shared_studio.users.admin, "same models", shared_studio.schema,
                                   shared_studio.generator)
    other_schema = datasets.create_schema("other parts", [("background", "#000000"), ("thing", "#ff0000")])
    datasets.create_dataset(shared_studio.users.admin, "other schema", other_schema, shared_studio.generator)

    activated = admin.post(f"/api/checkpoints/{second.pk}/activate")
    assert activated.status_code == 200 and activated.json()["active"] is True
    rankings = Job.objects.filter(pk__in=activated.json()["ranking_job_ids"]).order_by("pk")
    assert [(j.kind, j.queue, j.params, j.requested_by) for j in rankings] == [
        ("rank", "training", {"dataset_id": dataset.pk, "segmentation_id": second.pk}, shared_studio.users.admin)
        for dataset in (shared_studio.dataset, same)]  # the datasets of its generator and schema, no other
    again = admin.post(f"/api/checkpoints/{second.pk}/activate").json()
    assert again["ranking_job_ids"] == activated.json()["ranking_job_ids"]  # still waiting: not queued twice

    back = admin.post(f"/api/checkpoints/{shared_studio.segmentation.pk}/activate").json()
    assert len(back["ranking_job_ids"]) == 2 and not set(back["ranking_job_ids"]) & {j.pk for j in rankings}
    assert Job.objects.get(pk=back["ranking_job_ids"][0]).params["segmentation_id"] == shared_studio.segmentation.pk
    # A branch that is not the first of its generator and schema is imported inactive: nothing to rank.
    third, path = second_branch(shared_studio, tiny_models, tmp_path, seed=6)
    third.delete()
    queued = []
    imported = registry.import_and_rank(shared_studio.users.admin, kind="segmentation", name="third",
                                        data=path.read_bytes(), filename=path.name, generator=shared_studio.generator,
                                        then=lambda row, rankings: queued.append(rankings))
    assert imported.active is False and queued == [[]]


def test_ranking_refuses_a_branch_of_another_label_schema_up_front(shared_studio, tiny_models, client_for, tmp_path):
    """A chosen branch must be one of the dataset's generator *and* label schema: a branch that predicts other
    classes is refused with the reason before a job exists (it would only fail in the worker)."""
    from editor_core.schema import LabelSchema as EngineSchema
    from webapp.jobs.models import Job

    admin = client_for(shared_studio.users.admin)
    dataset, sample = shared_studio.dataset, shared_studio.samples[0]
    other, _path = second_branch(shared_studio, tiny_models, tmp_path,
                                 schema=EngineSchema.from_names("other parts", ["background", "thing"]))
    assert other.generator_id == dataset.generator_id and other.schema_id != dataset.schema_id
    jobs_before = Job.objects.count()

    def rank(segmentation_id):
        return admin.post(f"/api/datasets/{dataset.pk}/rank", {"segmentation_id": segmentation_id},
                          content_type="application/json")

    mismatched = rank(other.pk)
    assert mismatched.status_code == 400
    assert mismatched.json()["detail"] == (f"segmentation branch #{other.pk} predicts the classes of label schema "
                                           "'other parts', not those of label schema 'tiny parts' of dataset "
                                           "'tiny set'")
    # The stored predictions are asked for through the same check.
    prediction = admin.get(f"/api/samples/{sample.pk}/segmentation.png?segmentation_id={other.pk}")
    assert prediction.status_code == 400 and prediction.json()["detail"] == mismatched.json()["detail"]
    for wrong, reason in ((shared_studio.generator.pk, "is a generator, not a segmentation branch"),
                          (99999, "does not exist, not a segmentation branch")):
        refused = rank(wrong)
        assert refused.status_code == 400 and reason in refused.json()["detail"]
    assert Job.objects.count() == jobs_before

    accepted = rank(shared_studio.segmentation.pk)
    assert accepted.status_code == 202
    assert Job.objects.get(pk=accepted.json()["id"]).params == {"dataset_id": dataset.pk,
                                                                 "segmentation_id": shared_studio.segmentation.pk}


def test_job_cancel_retry_and_per_user_limit(shared_studio, client_for, settings):
    from webapp.jobs import services as jobs
    from webapp.jobs.models import Job

    settings.STUDIO_MAX_QUEUED_JOBS_PER_USER = 2
    admin = client_for(shared_studio.users.admin)
    first = admin.post(f"/api/datasets/{shared_studio.dataset.pk}/samples/generate", {"count": 2},
                       content_type="application/json")
    second = admin.post(f"/api/datasets/{shared_studio.dataset.pk}/samples/generate", {"count": 2},
                        content_type="application/json")
    assert first.status_code == second.status_code == 202
    third = admin.post(f"/api/datasets/{shared_studio.dataset.pk}/samples/generate", {"count": 2},
                       content_type="application/json")
    assert third.status_code == 429 and "limit 2" in third.json()["detail"]
    # Mode-1-like cheap jobs are not limited: a pre-label still goes through.
    assert client_for(shared_studio.users.annotator).post(f"/api/samples/{shared_studio.samples[3].pk}/prelabel").status_code == 202

    cancelled = admin.post(f"/api/jobs/{first.json()['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert admin.post(f"/api/jobs/{first.json()['id']}/cancel").status_code == 409
    retried = admin.post(f"/api/jobs/{first.json()['id']}/retry")
    assert retried.status_code == 202 and retried.json()["retry_of_id"] == first.json()["id"]
    assert retried.json()["params"] == first.json()["params"]
    others_job = client_for(shared_studio.users.annotator).post(f"/api/jobs/{second.json()['id']}/cancel")
    assert others_job.status_code == 404  # annotators do not even see the admin's jobs
    running = Job.objects.get(pk=second.json()["id"])
    Job.objects.filter(pk=running.pk).update(status=Job.Status.RUNNING)
    assert jobs.cancel(running, shared_studio.users.admin).cancel_requested  # a running job is told to stop


def test_token_auth_for_scripts_and_csrf_for_browsers(shared_studio, client_for):
    from django.test import Client

    browser = client_for(shared_studio.users.annotator)
    token = browser.post("/api/tokens", {"name": "my script"}, content_type="application/json").json()
    assert token["key"].startswith("egs_")
    script = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token['key']}"}
    assert script.get("/api/me", **headers).json()["username"] == "ann"
    assert script.get("/api/me", HTTP_AUTHORIZATION="Bearer egs_wrong").status_code == 401
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(shared_studio.users.annotator)
    url = f"/api/samples/{shared_studio.samples[0].pk}/annotation/submit"
    no_csrf = strict.post(url, {"base_version": 1}, content_type="application/json")
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["detail"]
    csrf = strict.get("/api/auth/csrf").json()["csrftoken"]
    with_csrf = strict.post(url, {"base_version": 1}, content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert with_csrf.status_code == 200
    assert script.post(url, {"base_version": 2}, content_type="application/json", **headers).status_code == 409


def test_login_and_active_learning_order(shared_studio, client_for):
    from django.test import Client

    from webapp.datasets.models import Sample

    client = Client()
    assert client.post("/api/auth/login", {"username": "ann", "password": "nope"},
                       content_type="application/json").status_code == 401
    assert client.post("/api/auth/login", {"username": "ann", "password": "correct horse battery staple"},
                       content_type="application/json").json()["role"] == "annotator"
    Sample.objects.filter(pk=shared_studio.samples[2].pk).update(uncertainty=0.1)
    Sample.objects.filter(pk=shared_studio.samples[3].pk).update(uncertainty=0.9)
    order = [s["id"] for s in client.get(f"/api/datasets/{shared_studio.dataset.pk}/next-to-label").json()]
    assert order == [shared_studio.samples[3].pk, shared_studio.samples[2].pk]  # labelled samples 0, 1 are not offered


def test_django_admin_lists_every_studio_model(shared_studio, client_for):
    from django.contrib import admin

    client = client_for(shared_studio.users.admin)
    studio_models = [m for m in admin.site._registry if m._meta.app_label in
                     ("accounts", "datasets", "registry", "editing", "jobs")]
    assert {m.__name__ for m in studio_models} >= {"ApiToken", "LabelSchema", "Dataset", "Sample", "Annotation",
                                                    "AnnotationRevision", "Checkpoint", "EditSession", "EditResult",
                                                    "EditVector", "Composition", "Job"}
    for model in studio_models:
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        assert client.get(url).status_code == 200, url
    assert client_for(shared_studio.users.annotator).get("/admin/datasets/sample/").status_code == 302  # to login


def transaction_depths(monkeypatch, functions: dict) -> dict:
    """Wrap each ``(owner, attribute)`` of ``functions`` (by name) to record how many transactions or savepoints
    beyond the test's own were open when it first ran; returns the dict they record into."""
    from django.db import connection

    def depth() -> int:  # the outermost transaction has no savepoint
        return len(connection.savepoint_ids) + connection.in_atomic_block

    depth_here = depth()
    depths = {}

    def recording(name, function):
        def record(*args, **kwargs):
            depths.setdefault(name, depth() - depth_here)
            return function(*args, **kwargs)
        return record

    for name, (owner, attribute) in functions.items():
        monkeypatch.setattr(owner, attribute, recording(name, getattr(owner, attribute)))
    return depths


def test_vector_uploads_store_before_their_transaction_opens(shared_studio, client_for, tmp_path, monkeypatch):
    """A vector upload stores its file with no transaction of its own open, and writes its rows (and queues its
    thumbnail job) in one."""
    from webapp.editing import services as editing
    from webapp.editing.models import EditVector

    depths = transaction_depths(monkeypatch, {"store vector": (editing, "save_bytes"),
                                              "vector row": (EditVector, "save")})
    data = tiny_vector_file(tmp_path, shared_studio.generator, "wider nose")
    response = client_for(shared_studio.users.artist).post(
        "/api/vectors/upload", {"file": io.BytesIO(data), "generator_id": shared_studio.generator.pk})
    assert response.status_code == 201, response.content
    # The vector's transaction (its row and thumbnail job) holds the savepoint that turns a taken name into a 409.
    assert depths == {"store vector": 0, "vector row": 2}


def test_an_imported_schema_is_matched_by_name_else_by_its_classes(shared_studio):
    """A branch or annotations whose schema has the classes of a known schema under another name use that schema (so
    they work with its data sets); the same name with other classes is refused; new classes make a new schema."""
    import dataclasses

    from django.core.exceptions import ValidationError

    from editor_core.schema import LabelSchema as EngineSchema
    from webapp.datasets.models import LabelSchema
    from webapp.registry.services import engine_schema, schema_for

    ours = shared_studio.schema
    known = engine_schema(ours)
    assert schema_for(known) == ours
    assert schema_for(dataclasses.replace(known, name="renamed by its trainer")) == ours
    with pytest.raises(ValidationError, match=f"a schema named '{ours.name}' exists with other classes"):
        schema_for(dataclasses.replace(known, class_names=tuple(reversed(known.class_names))))
    count = LabelSchema.objects.count()
    fresh = schema_for(EngineSchema(name="two parts", class_names=("background", "part"),
                                    colours=((0, 0, 0), (255, 128, 0))))
    assert fresh != ours and LabelSchema.objects.count() == count + 1
    assert engine_schema(fresh).class_names == ("background", "part")
    assert list(fresh.classes.order_by("index").values_list("colour", flat=True)) == ["#000000", "#ff8000"]


def test_an_explicit_roi_must_be_a_mode_3_mask_of_zeros_and_ones_marking_something(shared_studio, client_for):
    """mode 3 takes roi_png (1 inside, 0 outside, the sample's size); refused with the reason otherwise, before any
    job is queued."""
    from webapp.editing.models import EditSession

    artist = client_for(shared_studio.users.artist)
    sample = shared_studio.samples[0]
    target = b64(png_bytes(np.ones((sample.height, sample.width), np.uint8)))
    sessions = EditSession.objects.count()

    def post(roi: np.ndarray, mode: int = 3):
        body = {"sample_id": sample.pk, "mode": mode, "roi_png": b64(png_bytes(roi))}
        body.update({"target_mask_png": target} if mode == 3 else {"vectors": []})
        return artist.post("/api/edits", body, content_type="application/json")

    empty = post(np.zeros((sample.height, sample.width), np.uint8))
    assert empty.status_code == 400 and "marks no pixel" in empty.json()["detail"]
    not_binary = post(np.full((sample.height, sample.width), 255, np.uint8))
    assert not_binary.status_code == 400
    wrong_size = post(np.ones((sample.height + 1, sample.width), np.uint8))
    assert wrong_size.status_code == 400 and "but the sample is" in wrong_size.json()["detail"]
    mode1 = post(np.ones((sample.height, sample.width), np.uint8), mode=1)
    assert mode1.status_code == 400 and "roi_png and stop_follow are for mode 3" in mode1.json()["detail"]
    assert EditSession.objects.count() == sessions


def test_a_follow_target_is_a_share_for_mode_3(shared_studio, client_for):
    artist = client_for(shared_studio.users.artist)
    sample = shared_studio.samples[0]
    target = b64(png_bytes(np.ones((sample.height, sample.width), np.uint8)))
    for share in (0, 1.5):
        refused = artist.post("/api/edits", {"sample_id": sample.pk, "mode": 3, "target_mask_png": target,
                                             "stop_follow": share}, content_type="application/json")
        assert refused.status_code in (400, 422)
    mode1 = artist.post("/api/edits", {"sample_id": sample.pk, "mode": 1, "vectors": [], "stop_follow": 0.9},
                        content_type="application/json")
    assert mode1.status_code == 400 and "are for mode 3" in mode1.json()["detail"]


def test_only_mode_1_may_leave_out_the_mask(shared_studio, client_for):
    from webapp.editing.models import EditSession

    artist = client_for(shared_studio.users.artist)
    sample = shared_studio.samples[0]
    target = b64(png_bytes(np.ones((sample.height, sample.width), np.uint8)))
    sessions = EditSession.objects.count()
    for body in ({"mode": 3, "target_mask_png": target}, {"mode": 2, "vectors": []}):
        refused = artist.post("/api/edits", {"sample_id": sample.pk, "with_mask": False, **body},
                              content_type="application/json")
        assert refused.status_code == 400 and "with_mask=false is for mode 1" in refused.json()["detail"]
    not_a_flag = artist.post("/api/edits", {"sample_id": sample.pk, "mode": 1, "vectors": [], "with_mask": "soon"},
                             content_type="application/json")
    assert not_a_flag.status_code == 422
    assert EditSession.objects.count() == sessions
    slider = artist.post("/api/edits", {"sample_id": sample.pk, "mode": 1, "with_mask": False, "vectors": [
        {"vector_id": shared_studio.vector.pk, "scale": 0.5}]}, content_type="application/json")
    assert slider.status_code == 202 and EditSession.objects.get(pk=slider.json()["id"]).params["with_mask"] is False


def test_only_mode_1_may_ask_for_a_jpeg(shared_studio, client_for):
    from webapp.editing.models import EditSession

    artist = client_for(shared_studio.users.artist)
    sample = shared_studio.samples[0]
    target = b64(png_bytes(np.ones((sample.height, sample.width), np.uint8)))
    sessions = EditSession.objects.count()
    for body in ({"mode": 3, "target_mask_png": target}, {"mode": 2, "vectors": [
            {"vector_id": shared_studio.vector.pk, "scale": 0.5}]}):
        refused = artist.post("/api/edits", {"sample_id": sample.pk, "image_format": "jpeg", **body},
                              content_type="application/json")
        assert refused.status_code == 400 and "image_format is for mode 1" in refused.json()["detail"]
    for wrong in ("gif", "", 5):
        unknown = artist.post("/api/edits", {"sample_id": sample.pk, "mode": 1, "image_format": wrong, "vectors": [
            {"vector_id": shared_studio.vector.pk, "scale": 0.5}]}, content_type="application/json")
        assert unknown.status_code == 422, wrong
    assert EditSession.objects.count() == sessions
    slider = artist.post("/api/edits", {"sample_id": sample.pk, "mode": 1, "image_format": "jpeg", "vectors": [
        {"vector_id": shared_studio.vector.pk, "scale": 0.5}]}, content_type="application/json")
    assert slider.status_code == 202
    assert EditSession.objects.get(pk=slider.json()["id"]).params["image_format"] == "jpeg"


def test_a_queued_job_says_how_many_jobs_of_its_queue_are_ahead(shared_studio, client_for):
    from webapp.jobs import services as jobs
    from webapp.jobs.models import Job

    admin, annotator = shared_studio.users.admin, shared_studio.users.annotator
    dataset_id, sample = shared_studio.dataset.pk, shared_studio.samples[3]
    running = jobs.enqueue("sample", admin, {"dataset_id": dataset_id, "count": 1})
    Job.objects.filter(pk=running.pk).update(status=Job.Status.RUNNING)
    jobs.enqueue("rank", admin, {"dataset_id": dataset_id})  # another queue: it does not hold this one up
    waiting = jobs.enqueue("embed", admin, {"sample_id": sample.pk, "steps": 1})
    mine = client_for(annotator).post(f"/api/samples/{sample.pk}/prelabel").json()
    assert mine["jobs_ahead"] == 2
    client = client_for(annotator)
    assert client.get(f"/api/jobs/{mine['id']}").json()["jobs_ahead"] == 2
    Job.objects.filter(pk=running.pk).update(status=Job.Status.SUCCEEDED)
    jobs.cancel(waiting, admin)
    assert client.get(f"/api/jobs/{mine['id']}").json()["jobs_ahead"] == 0
    Job.objects.filter(pk=mine["id"]).update(status=Job.Status.RUNNING)
    detail = client.get(f"/api/jobs/{mine['id']}").json()
    assert detail["jobs_ahead"] is None
    assert jobs.job_payload(Job.objects.get(pk=mine["id"]))["jobs_ahead"] is None


def test_restoring_a_revision_adds_a_new_version_and_loses_nothing(shared_studio, client_for):
    sample = shared_studio.samples[0]  # annotated at version 1 by the fixture
    annotator = client_for(shared_studio.users.annotator)
    first = current_mask(annotator, sample.pk)
    painted = np.full_like(first, 2)
    assert annotator.put(f"/api/samples/{sample.pk}/annotation", {"base_version": 1, "mask_png": b64(png_bytes(painted))},
                         content_type="application/json").status_code == 200
    restored = annotator.post(f"/api/samples/{sample.pk}/annotation/restore", {"base_version": 2, "version": 1},
                              content_type="application/json")
    assert restored.status_code == 200 and restored.json()["version"] == 3 and restored.json()["status"] == "draft"
    assert (current_mask(annotator, sample.pk) == first).all()
    history = annotator.get(f"/api/samples/{sample.pk}/annotation/revisions").json()
    assert [(r["version"], r["reason"], r["author"]) for r in history] == [
        (3, "restore", "ann"), (2, "save", "ann"), (1, "save", "ann")]
    assert history[0]["note"] == "restored version 1"
    version_2 = annotator.get(f"/api/samples/{sample.pk}/annotation/mask.png?version=2")
    assert (np.asarray(Image.open(io.BytesIO(version_2.content))) == painted).all()  # the undone work is still there
    stale = annotator.post(f"/api/samples/{sample.pk}/annotation/restore", {"base_version": 2, "version": 1},
                           content_type="application/json")
    assert stale.status_code == 409
    unknown = annotator.post(f"/api/samples/{sample.pk}/annotation/restore", {"base_version": 3, "version": 9},
                             content_type="application/json")
    assert unknown.status_code == 400 and "no annotation revision 9" in unknown.json()["detail"]
    artist = client_for(shared_studio.users.artist).post(f"/api/samples/{sample.pk}/annotation/restore",
                                                         {"base_version": 3, "version": 1},
                                                         content_type="application/json")
    assert artist.status_code == 403


def test_a_user_without_a_role_may_see_who_they_are_and_sign_out(shared_studio, client_for):
    nobody = client_for(shared_studio.users.nobody)
    me = nobody.get("/api/me")
    assert me.status_code == 200, me.content
    assert me.json()["username"] == "newcomer" and me.json()["role"] is None and me.json()["permissions"] == []
    assert nobody.get(f"/api/datasets/{shared_studio.dataset.pk}").status_code == 403  # still nothing else
    assert nobody.post("/api/auth/logout").status_code == 200
    assert nobody.get("/api/me").status_code == 401



def test_tuning_a_sample_queues_a_tune_job_and_its_delta_goes_with_the_sample(
        shared_studio, client_for, django_capture_on_commit_callbacks):
    from django.core.exceptions import ValidationError

    from webapp.datasets import services as datasets
    from webapp.datasets.models import Sample
    from webapp.editing.services import start_edit
    from webapp.jobs.models import Job
    from webapp.storage import default_storage

    artist = client_for(shared_studio.users.artist)
    sample, other = shared_studio.samples[2], shared_studio.samples[3]
    asked = artist.post(f"/api/samples/{sample.pk}/tune", {}, content_type="application/json")
    assert asked.status_code == 202, asked.content
    job = Job.objects.get(pk=asked.json()["id"])
    assert (job.kind, job.queue) == ("tune", "interactive")
    assert job.params == {"sample_id": sample.pk, "pivot": sample.latent.name, "steps": None}

    metrics = {"psnr_before": 20.0, "psnr_after": 30.0, "lpips_before": 0.2, "lpips_after": 0.1, "steps": 50,
               "seconds": 9.5}
    with pytest.raises(ValidationError, match="embedded again"):  # a tuning of a pivot the sample no longer has
        datasets.store_tuning(sample, "latents/elsewhere.safetensors", b"delta", metrics)
    with django_capture_on_commit_callbacks(execute=True):
        first = datasets.store_tuning(sample, sample.latent.name, b"delta one", metrics)
        tuned = datasets.store_tuning(sample, sample.latent.name, b"delta two", metrics)
    assert not default_storage.exists(first.tuning.name)  # the older tuning's file went
    assert artist.get(f"/api/samples/{sample.pk}").json()["tuning"] == metrics

    # Mode-1 requests batch only with requests on the same networks: a tuned sample rides alone.
    keys = [start_edit(shared_studio.users.artist, row, 1, vectors=[(shared_studio.vector.pk, 1.0)]).job.batch_key
            for row in (Sample.objects.get(pk=sample.pk), other)]
    assert keys[0] != keys[1] and keys[0].endswith(tuned.tuning_sha256[:16])

    Sample.objects.filter(pk=other.pk).update(latent="")
    refused = artist.post(f"/api/samples/{other.pk}/tune", {}, content_type="application/json")
    assert refused.status_code == 400 and "no latent yet" in refused.json()["detail"]

    admin = client_for(shared_studio.users.admin)
    with django_capture_on_commit_callbacks(execute=True):
        assert admin.delete(f"/api/samples/{sample.pk}").status_code == 204
    assert not default_storage.exists(tuned.tuning.name)
