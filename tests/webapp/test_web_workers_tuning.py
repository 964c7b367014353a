"""Pivotal tuning per sample (issue #21): ``POST /samples/{id}/tune`` runs a ``tune`` job on a real worker that stores
a weight delta; the sample's edits then run on the tuned generator; embedding again drops the tuning."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import photo_file
from test_web_workers import post, wait_for_job
from test_web_workers_predictions import png_array

pytestmark = pytest.mark.django_db(transaction=True)


def pixels(response) -> np.ndarray:
    with Image.open(io.BytesIO(response.getvalue() if hasattr(response, "getvalue") else response.content)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def unchanged_render_psnr(artist, sample_id: int, vector_id: int, worker) -> float:
    """PSNR (dB) of a mode-1 edit at scale 0 (the sample as its generator renders it) against the sample's image."""
    edit = post(artist, "/api/edits", {"sample_id": sample_id, "mode": 1,
                                       "vectors": [{"vector_id": vector_id, "scale": 0.0}]}).json()
    job = wait_for_job(edit["job_id"], worker=worker)
    assert job.status == "succeeded", job.error
    rendered = pixels(artist.get(artist.get(f"/api/edits/{edit['id']}").json()["result"]["image_url"]))
    photo = pixels(artist.get(f"/api/samples/{sample_id}/image.png"))
    return float(10 * np.log10(255.0 ** 2 / np.square(rendered - photo).mean()))


def test_tuning_stores_a_delta_that_edits_use_until_the_sample_is_embedded_again(studio, celery_worker, client_for):
    from webapp.datasets.models import Sample
    from webapp.storage import default_storage

    artist = client_for(studio.users.artist)
    uploaded = artist.post(f"/api/datasets/{studio.dataset.pk}/samples/upload",
                           {"file": photo_file((40, 40), (200, 60, 90))}).json()
    sample_url = f"/api/samples/{uploaded['id']}"
    embedded = wait_for_job(post(artist, f"{sample_url}/embed", {"steps": 2}).json()["id"], worker=celery_worker)
    assert embedded.status == "succeeded", embedded.error
    assert artist.get(sample_url).json()["tuned"] is False
    _mode, untuned_uncertainty = png_array(artist.get(f"{sample_url}/uncertainty.png"))
    untuned = unchanged_render_psnr(artist, uploaded["id"], studio.vector.pk, celery_worker)

    asked = post(artist, f"{sample_url}/tune", {"steps": 20})
    assert asked.status_code == 202 and asked.json()["kind"] == "tune", asked.content
    tuned_job = wait_for_job(asked.json()["id"], worker=celery_worker)
    assert tuned_job.status == "succeeded", tuned_job.error
    shown = artist.get(sample_url).json()
    assert shown["tuned"] is True and shown["tuning"]["steps"] == 20
    assert shown["tuning"]["psnr_after"] > shown["tuning"]["psnr_before"]
    assert tuned_job.result["segmentation_id"] == studio.segmentation.pk  # a fresh prediction, by the tuned generator
    row = Sample.objects.get(pk=uploaded["id"])
    assert default_storage.exists(row.tuning.name) and len(row.tuning_sha256) == 64
    _mode, tuned_uncertainty = png_array(artist.get(f"{sample_url}/uncertainty.png"))
    assert not np.array_equal(tuned_uncertainty, untuned_uncertainty)
    ranking = wait_for_job(post(client_for(studio.users.admin), f"/api/datasets/{studio.dataset.pk}/rank", {}).json()[
        "id"], worker=celery_worker)
    assert ranking.status == "succeeded", ranking.error
    _mode, ranked_uncertainty = png_array(artist.get(f"{sample_url}/uncertainty.png"))
    assert np.array_equal(ranked_uncertainty, tuned_uncertainty)  # a ranking segments it with its tuned generator

    tuned = unchanged_render_psnr(artist, uploaded["id"], studio.vector.pk, celery_worker)
    assert tuned > untuned + 1.0, (untuned, tuned)
    assert tuned == pytest.approx(shown["tuning"]["psnr_after"], abs=1.0)  # the edit rendered the stored tuning

    # A sample tuned after its slider request was keyed can share a mode-1 batch with an untuned leader: each
    # tuning renders in its own pass, so the tuned sample is still drawn by its tuned generator.
    from gpu_worker import edits
    from webapp.jobs.models import Job

    sessions = [post(artist, "/api/edits", {"sample_id": sample_id, "mode": 1, "vectors": [
        {"vector_id": studio.vector.pk, "scale": 0.0}]}).json() for sample_id in (studio.samples[0].pk, uploaded["id"])]
    batch = [wait_for_job(edit["job_id"], worker=celery_worker) for edit in sessions]
    assert [job.status for job in batch] == ["succeeded", "succeeded"], [job.error for job in batch]
    results = edits.render_mode1(batch[0], [edits.mode1_request(Job.objects.get(pk=job.pk)) for job in batch])
    assert [result["metrics"]["batch_size"] for result in results] == [1, 1]
    rendered = pixels(artist.get(results[1]["image_url"]))
    photo = pixels(artist.get(f"{sample_url}/image.png"))
    batched = float(10 * np.log10(255.0 ** 2 / np.square(rendered - photo).mean()))
    assert batched == pytest.approx(tuned, abs=0.1), (batched, tuned, untuned)

    again = wait_for_job(post(artist, f"{sample_url}/embed", {"steps": 2}).json()["id"], worker=celery_worker)
    assert again.status == "succeeded", again.error
    shown = artist.get(sample_url).json()
    assert shown["tuned"] is False and shown["tuning"] is None  # a new latent is a new pivot
    assert not default_storage.exists(row.tuning.name)
