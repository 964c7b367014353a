"""Celery tasks run by a real worker process against Redis: samples, pre-labels, training + ranking, mode-1
batching, mode-3 previews over the websocket, cancel within 2 s (a SIGKILLed worker's job: test_web_jobs.py)."""
from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import photo_file, png_bytes
from test_web_realtime import next_of, open_socket, session_headers

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for_job(job_id: int, statuses=("succeeded", "failed", "cancelled"), timeout: float = 180, worker=None):
    from webapp.jobs.models import Job

    deadline = time.monotonic() + timeout
    while True:
        job = Job.objects.get(pk=job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, (f"job {job_id} still {job.status} ({job.message}) after {timeout} s\n"
                                             + (worker.log() if worker else ""))
        time.sleep(0.1)


def post(client, url, body):
    return client.post(url, body, content_type="application/json")


def test_samples_prelabel_training_and_ranking(studio, celery_worker, client_for):
    from webapp.datasets.models import Annotation
    from webapp.registry.models import Checkpoint

    admin, annotator = client_for(studio.users.admin), client_for(studio.users.annotator)
    generated = post(admin, f"/api/datasets/{studio.dataset.pk}/samples/generate", {"count": 2, "seed": 7}).json()
    job = wait_for_job(generated["id"], worker=celery_worker)
    assert job.status == "succeeded", job.error
    assert job.progress == 1.0 and len(job.result["sample_ids"]) == 2
    new_samples = studio.dataset.samples.filter(pk__in=job.result["sample_ids"])
    assert sorted(new_samples.values_list("seed", flat=True)) == [7, 8]
    assert all(s.uncertainty is not None for s in new_samples)  # ranked at birth by the active branch

    sample = studio.samples[3]
    prelabel = wait_for_job(post(annotator, f"/api/samples/{sample.pk}/prelabel", {}).json()["id"])
    assert prelabel.status == "succeeded", prelabel.error
    annotation = Annotation.objects.get(sample=sample)
    assert annotation.revisions.get().reason == "prelabel" and annotation.status == "draft"

    picked = [studio.samples[0].pk, studio.samples[1].pk, sample.pk]  # drafts: picked by hand, the pre-label too
    training = post(admin, "/api/train/segmentation", {"dataset_id": studio.dataset.pk, "steps": 5,
                                                       "ensemble_size": 2, "hidden": [16], "pixels_per_step": 256,
                                                       "sample_ids": picked}).json()
    trained = wait_for_job(training["id"], worker=celery_worker)
    assert trained.status == "succeeded", trained.error
    assert trained.metrics["loss"] and trained.metrics["loss"][-1][0] >= 5  # the loss curve reached the database
    checkpoint = Checkpoint.objects.get(pk=trained.result["checkpoint_id"])
    assert checkpoint.active and 0.0 <= checkpoint.metrics["mean_iou"] <= 1.0
    # Nothing else is submitted, so one of the three picked is held out to measure the branch.
    assert checkpoint.metrics["evaluated_on"] == "held-out split" and checkpoint.metrics["num_samples"] == 2
    assert sorted(checkpoint.metrics["sample_ids"] + checkpoint.metrics["heldout_ids"]) == sorted(picked)
    assert not Checkpoint.objects.get(pk=studio.segmentation.pk).active
    ranked = studio.dataset.samples.exclude(latent="")
    assert set(ranked.values_list("ranked_with", flat=True)) == {checkpoint.pk}  # the ranking follows retraining


def test_mode1_requests_that_arrive_together_share_one_forward_pass(studio, celery_worker, client_for):
    from django.db import transaction

    from webapp.editing.services import start_edit

    with transaction.atomic():  # the jobs reach the broker together, when this commits
        sessions = [start_edit(studio.users.artist, sample, 1, vectors=[(studio.vector.pk, scale)],
                               with_mask=with_mask, image_format=image_format)
                    for sample, scale, with_mask, image_format in zip(studio.samples, (1.0, -1.0, 2.0, 0.0),
                                                                      (True, False, True, False),
                                                                      ("png", "jpeg", "png", "png"))]
    jobs = [wait_for_job(s.job_id, worker=celery_worker) for s in sessions]
    assert [j.status for j in jobs] == ["succeeded"] * 4, [j.error for j in jobs]
    batches = {(j.result["metrics"]["batch_leader"], j.result["metrics"]["batch_size"]) for j in jobs}
    assert len(batches) == 1 and batches.pop()[1] == 4  # one leader rendered all four
    # Each got what it asked for: a slider's image alone, or the image and its segmentation.
    assert [bool(j.result["mask_url"]) for j in jobs] == [True, False, True, False]
    assert [j.result["image_url"].rsplit(".", 1)[1] for j in jobs] == ["png", "jpg", "png", "png"]

    artist = client_for(studio.users.artist)
    edit = artist.get(f"/api/edits/{sessions[3].pk}").json()
    assert edit["result"]["image_url"] and edit["result"]["has_vector"] is False
    unchanged = artist.get(edit["result"]["image_url"]).getvalue()  # scale 0: the sample itself
    assert unchanged == artist.get(f"/api/samples/{studio.samples[3].pk}/image.png").content
    preview = artist.get(artist.get(f"/api/edits/{sessions[1].pk}").json()["result"]["image_url"])
    assert preview["Content-Type"] == "image/jpeg" and preview.getvalue()[:3] == b"\xff\xd8\xff"


def test_mode1_requests_of_one_slider_coalesce_to_the_newest_position(studio, celery_worker):
    """Quick slider moves on one sample: only the newest position is rendered; the earlier ones, still queued, are
    cancelled as superseded, and only the newest edit gets a result (an image on its websocket and in the DB)."""
    from django.db import transaction

    from webapp.editing.models import EditResult
    from webapp.editing.services import start_edit

    sample = studio.samples[0]
    with transaction.atomic():  # all four reach the broker together, as moves made while the worker was busy
        sessions = [start_edit(studio.users.artist, sample, 1, vectors=[(studio.vector.pk, scale)])
                    for scale in (0.25, 0.5, 0.75, 1.0)]
        other_sample = start_edit(studio.users.artist, studio.samples[1], 1, vectors=[(studio.vector.pk, 1.0)])
    jobs = [wait_for_job(s.job_id, worker=celery_worker) for s in sessions + [other_sample]]
    assert [j.status for j in jobs] == ["cancelled"] * 3 + ["succeeded"] * 2, [(j.status, j.error) for j in jobs]
    # Each was superseded by the position that came next.
    assert [j.message for j in jobs[:3]] == [f"superseded by a newer slider position (job #{s.job_id})"
                                             for s in sessions[1:]]
    assert set(EditResult.objects.filter(session__in=sessions).values_list("session_id", flat=True)) == {
        sessions[3].pk}


def test_cancel_reaches_a_running_job_and_mode3_streams_previews(studio, celery_worker, client_for, daphne_url):
    """A long training job is cancelled within 2 s; the mode-3 edit queued behind it then streams its progress,
    previews (image + segmentation) and result on the edit's websocket, and its vector goes to the library."""
    from webapp.datasets.services import read_mask

    admin, artist = client_for(studio.users.admin), client_for(studio.users.artist)
    blocker = post(admin, "/api/train/segmentation", {
        "dataset_id": studio.dataset.pk, "steps": 200000, "early_stopping": False, "ensemble_size": 1,
        "hidden": [8], "pixels_per_step": 64, "sample_ids": [s.pk for s in studio.samples[:2]]}).json()
    wait_for_job(blocker["id"], statuses=("running",), worker=celery_worker)

    sample = studio.samples[0]
    mask = read_mask(sample)
    mask[8:24, 8:24] = 2  # paint a big square of "hair"
    edit = post(artist, "/api/edits", {"sample_id": sample.pk, "mode": 3, "steps": 6, "edited_classes": [2],
                                       "target_mask_png": base64.b64encode(png_bytes(mask)).decode()})
    assert edit.status_code == 202, edit.content
    edit = edit.json()
    headers = session_headers(client_for, studio.users.artist)

    async def watch():
        async with open_socket(daphne_url, f"/ws/edits/{edit['id']}/", headers) as socket:
            state = await next_of(socket, "edit.state")
            await asyncio.to_thread(cancel_blocker)
            preview = await next_of(socket, "edit.preview", timeout=180)
            progress = await next_of(socket, "job.progress")
            masked = preview  # a CPU worker previews the image every step, the mask every preview_every steps
            while "mask" not in masked:
                masked = await next_of(socket, "edit.preview", timeout=180)
            result = await next_of(socket, "edit.result", timeout=180)
            return state, preview, masked, progress, result

    cancel_timing = {}

    def cancel_blocker():
        from django.db import connection

        started = time.monotonic()
        assert post(admin, f"/api/jobs/{blocker['id']}/cancel", {}).json()["cancel_requested"]
        job = wait_for_job(blocker["id"], timeout=10)
        cancel_timing["seconds"], cancel_timing["status"] = time.monotonic() - started, job.status
        connection.close()

    state, preview, masked, progress, result = asyncio.run(watch())
    assert state["job_status"] == "queued"  # it waited behind the training job
    assert cancel_timing["status"] == "cancelled" and cancel_timing["seconds"] < 2.0, cancel_timing
    assert preview["image"].startswith("data:image/jpeg;base64,") and masked["mask"].startswith("data:image/png")
    assert progress["stage"] == "edit" and 0 < progress["progress"] <= 1
    assert result["has_vector"] and 2 in result["edited_classes"]
    job = wait_for_job(edit["job_id"])
    assert job.status == "succeeded" and len(job.metrics["total"]) == 6  # the loss curve of every step
    stored = artist.get(f"/api/edits/{edit['id']}").json()["result"]
    assert {key: result[key] for key in stored} == stored and "image" not in result  # its URLs, not a picture

    vector = post(artist, "/api/vectors", {"edit_id": edit["id"], "name": "square hair", "tags": ["hair"]})
    assert vector.status_code == 201, vector.content
    assert vector.json()["thumb_before_url"] and vector.json()["edited_classes"] == result["edited_classes"]


def test_mode3_compares_the_painted_mask_with_the_prediction_it_was_painted_on(studio, celery_worker, client_for):
    """The edit view paints on the branch's stored prediction; the worker takes that as the original (no segmentation
    pass before the first step), so the edit is about the painted pixels alone, however the model segments now."""
    import numpy as np

    from webapp.datasets.services import store_prediction
    from webapp.editing.models import EditResult

    sample = studio.samples[0]
    shown = np.zeros((sample.height, sample.width), np.uint8)  # not what the branch says: every pixel background
    store_prediction(sample, studio.segmentation, shown, np.zeros_like(shown), 0.0, 0.0)
    painted = shown.copy()
    painted[8:16, 8:16] = 2
    edit = post(client_for(studio.users.artist), "/api/edits", {
        "sample_id": sample.pk, "mode": 3, "steps": 1, "target_mask_png": base64.b64encode(png_bytes(painted)).decode()})
    assert edit.status_code == 202, edit.content
    job = wait_for_job(edit.json()["job_id"], worker=celery_worker)
    assert job.status == "succeeded", job.error
    assert EditResult.objects.get(session_id=edit.json()["id"]).edited_classes == [0, 2]


def test_upload_embed_then_refine_with_mode2(studio, celery_worker, client_for):
    artist = client_for(studio.users.artist)
    uploaded = artist.post(f"/api/datasets/{studio.dataset.pk}/samples/upload",
                           {"file": photo_file((48, 40), (120, 80, 60), "JPEG")}).json()
    embedded = wait_for_job(post(artist, f"/api/samples/{uploaded['id']}/embed", {"steps": 3}).json()["id"],
                            worker=celery_worker)
    assert embedded.status == "succeeded", embedded.error
    assert embedded.result["used_encoder"] is False and artist.get(f"/api/samples/{uploaded['id']}").json()[
        "has_latent"]

    edit = post(artist, "/api/edits", {"sample_id": uploaded["id"], "mode": 2, "steps": 2,
                                       "vectors": [{"vector_id": studio.vector.pk, "scale": 1.5}]}).json()
    refined = wait_for_job(edit["job_id"], worker=celery_worker)
    assert refined.status == "succeeded", refined.error
    result = artist.get(f"/api/edits/{edit['id']}").json()["result"]
    assert result["has_vector"] and result["edited_classes"] == [2]


def test_an_uploaded_vector_gets_thumbnails_rendered_by_the_worker(studio, tiny_models, celery_worker, client_for,
                                                                   tmp_path):
    """Generator sample 0 of the vector's generator without and with the vector at the default scale (1)."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    from editor_core.images import image_png
    from editor_core.vectors import EditVector, EditVectorInfo

    artist = client_for(studio.users.artist)
    generator = tiny_models.generator
    delta = torch.randn(generator.num_ws, generator.w_dim, generator=torch.Generator().manual_seed(9))
    EditVector(delta, EditVectorInfo(name="uploaded", generator_id=tiny_models.fingerprint, edited_classes=[1])).save(
        tmp_path / "uploaded.safetensors")
    uploaded = artist.post("/api/vectors/upload", {
        "file": io.BytesIO((tmp_path / "uploaded.safetensors").read_bytes()), "generator_id": studio.generator.pk})
    assert uploaded.status_code == 201, uploaded.content
    job = wait_for_job(uploaded.json()["thumbnails_job_id"], worker=celery_worker)
    assert job.status == "succeeded", job.error
    vector = artist.get(f"/api/vectors/{uploaded.json()['id']}").json()
    assert vector["thumbnails_status"] == "ready" and job.result["thumb_after_url"] == vector["thumb_after_url"]

    z = torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = generator.mapping(z, truncation_psi=0.7)
        want = generator.synthesis(torch.cat([ws, ws + delta[None]]), noise_mode="const")
    for url, image in ((vector["thumb_before_url"], want[0]), (vector["thumb_after_url"], want[1])):
        got = np.asarray(Image.open(io.BytesIO(artist.get(url).getvalue())).convert("RGB")).astype(int)
        expected = np.asarray(Image.open(io.BytesIO(image_png(image)))).astype(int)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1
    before, after = (np.asarray(Image.open(io.BytesIO(artist.get(vector[key]).getvalue())), dtype=int)
                     for key in ("thumb_before_url", "thumb_after_url"))
    assert np.abs(before - after).mean() > 1  # the vector changed the picture


def test_a_worker_that_serves_interactive_keeps_the_web_servers_priority(celery_worker):
    """Someone waits for its jobs; only background-only CPU workers run below the web server
    (test_web_studio_processes checks the studio's training worker)."""
    import os

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, celery_worker.process.pid) == ours


def test_a_compiling_worker_compiles_before_it_takes_the_first_edit(studio, celery_worker, client_for):
    """With ``STUDIO_EDIT_COMPILE`` an interactive worker's pool process compiles the active branch's edit passes
    and an embedding before it takes work: the first mode-3 edit, mode-1 edit and photo embedding then trace nothing
    (Dynamo logs every frame it starts to compile). A process that replaces a dead one warms up as well, from the
    graphs the compile cache holds. The cache outlives the test session, as a studio's does its worker: this test
    then spends seconds, not minutes, warming up (tracing still happens, and with it the checks)."""
    from webapp.datasets.services import read_mask

    celery_worker.stop()
    cache = Path(tempfile.gettempdir()) / "editgan-studio-tests-compile-cache"
    compiling = type(celery_worker)({**celery_worker.env, "STUDIO_EDIT_COMPILE": "default", "TORCH_LOGS": "dynamo",
                                     "STUDIO_COMPILE_CACHE_DIR": str(cache)})
    warmed_up = f"warmed up the edit passes of segmentation branch #{studio.segmentation.pk} "
    try:
        compiling.start()
        compiling.process.wait_for_log(warmed_up, timeout=600)
        warmed = compiling.process.log_path.stat().st_size
        assert (f"compiling the edit passes of segmentation branches #{studio.segmentation.pk} before taking work "
                f"(compile cache: {cache})") in compiling.process.log_path.read_text(errors="replace")
        assert any(cache.iterdir())  # not torch's default under /tmp
        artist = client_for(studio.users.artist)
        mask = read_mask(studio.samples[0])
        mask[4:14, 6:20] = 2
        edit = post(artist, "/api/edits", {"sample_id": studio.samples[0].pk, "mode": 3, "steps": 2,
                                           "target_mask_png": base64.b64encode(png_bytes(mask)).decode()}).json()
        applied = post(artist, "/api/edits", {"sample_id": studio.samples[1].pk, "mode": 1,
                                              "vectors": [{"vector_id": studio.vector.pk, "scale": 0.5}]}).json()
        uploaded = artist.post(f"/api/datasets/{studio.dataset.pk}/samples/upload",
                               {"file": photo_file((40, 48), (90, 140, 60), "JPEG")}).json()
        embedded = post(artist, f"/api/samples/{uploaded['id']}/embed", {"steps": 2}).json()
        for job_id in (edit["job_id"], applied["job_id"], embedded["id"]):
            job = wait_for_job(job_id, timeout=300, worker=compiling)
            assert job.status == "succeeded", job.error
        after = compiling.process.log_path.read_bytes()[warmed:].decode(errors="replace")
        assert "start tracing" not in after, after[-3000:]
        # A pool process that dies (a GPU out of memory, say) is replaced, and the replacement warms up too. Celery
        # gives a replacement 4 s to start unless the settings give it the warm-up's time: with 4 s it was killed 48
        # times in 5 minutes.
        children = subprocess.run(["pgrep", "-P", str(compiling.process.pid)], capture_output=True, text=True)
        os.kill(int(children.stdout.split()[0]), signal.SIGKILL)
        compiling.process.wait_for_log(warmed_up, timeout=600)
        compiled, cached = warm_up_graphs(compiling.process.log_path.read_bytes()[warmed:].decode(errors="replace"),
                                          warmed_up)
        assert compiled == 0 and cached > 0
    finally:
        compiling.stop()
        celery_worker.start()


def warm_up_graphs(log: str, warmed_up: str) -> tuple[int, int]:
    """(compiled, loaded from the compile cache) of the last warm-up ``log`` reports."""
    line = [line for line in log.splitlines() if warmed_up in line][-1]
    found = re.search(r"(\d+) graphs compiled, (\d+) loaded from the compile cache", line)
    assert found, line
    return int(found[1]), int(found[2])


def test_a_compile_cache_folder_that_cannot_be_made_is_logged_and_torchs_kept(settings, tmp_path, monkeypatch,
                                                                               caplog):
    """A worker starts with a ``STUDIO_COMPILE_CACHE_DIR`` it cannot make: the log says so, and compiling goes on in
    torch's cache rather than failing every compiled request."""
    from gpu_worker.celery_app import _keep_compiled_graphs

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torch-default"))
    settings.STUDIO_EDIT_COMPILE = "default"
    settings.STUDIO_COMPILE_CACHE_DIR = blocker / "compile-cache"
    _keep_compiled_graphs()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torch-default")
    assert f"STUDIO_COMPILE_CACHE_DIR={blocker / 'compile-cache'} cannot hold the compiled graphs" in caplog.text
    settings.STUDIO_COMPILE_CACHE_DIR = tmp_path / "studio" / "compile-cache"
    _keep_compiled_graphs()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "studio" / "compile-cache")
    assert (tmp_path / "studio" / "compile-cache").is_dir()
