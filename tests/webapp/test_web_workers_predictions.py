"""Stored predictions of the segmentation branch: the worker keeps labels + uncertainty map whenever it runs the
branch on a sample (generate, embed, pre-label, rank), and ``GET /samples/{id}/segmentation.png`` /
``uncertainty.png`` serve them; a real Celery worker runs every job here."""
from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import photo_file, tiny_bundle
from test_web_workers import post, wait_for_job

pytestmark = pytest.mark.django_db(transaction=True)


def png_array(response) -> tuple[str, np.ndarray]:
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        return image.mode, np.asarray(image).copy()


def expected_prediction(sample, generator_file: Path, segmentation_file: Path):
    """What a branch file predicts for the sample's stored latent, computed here with the engine."""
    from editor_core.bundle import load_latents
    from editor_core.checkpoints import load_generator
    from editor_core.images import mask_array
    from editor_core.segmentation import image_uncertainty, load_segmentation, uncertainty_map
    from webapp.storage import read_bytes

    generator = load_generator(generator_file)
    ensemble, _schema, _meta = load_segmentation(segmentation_file)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latent.safetensors"
        path.write_bytes(read_bytes(sample.latent.name))
        ws = load_latents(path)
    with torch.no_grad():
        _image, features = generator.synthesis(ws, noise_mode="const", return_features=True)
        prediction = ensemble.predict(features)
    return (mask_array(prediction.labels[0], sample.width), uncertainty_map(prediction.uncertainty[0], sample.width)[0],
            float(image_uncertainty(prediction)[0]))


def test_generated_samples_come_with_the_active_branchs_prediction(studio, tiny_models, celery_worker, client_for):
    from webapp.datasets.models import Sample

    artist, annotator = client_for(studio.users.artist), client_for(studio.users.annotator)
    job = wait_for_job(post(artist, f"/api/datasets/{studio.dataset.pk}/samples/generate",
                            {"count": 1, "seed": 11}).json()["id"], worker=celery_worker)
    assert job.status == "succeeded", job.error
    sample = Sample.objects.get(pk=job.result["sample_ids"][0])

    response = annotator.get(f"/api/samples/{sample.pk}/segmentation.png")
    assert response["X-Segmentation-Id"] == str(studio.segmentation.pk)
    mode, labels = png_array(response)
    assert mode == "P" and labels.shape == (sample.height, sample.width)  # the annotation mask.png encoding
    response = annotator.get(f"/api/samples/{sample.pk}/uncertainty.png")
    mode, unsure = png_array(response)
    assert mode == "L" and unsure.shape == (sample.height, sample.width)
    peak = float(response["X-Uncertainty-Peak"])

    want_labels, want_unsure, want_score = expected_prediction(sample, tiny_models.folder / "generator.safetensors",
                                                               tiny_models.folder / "segmentation.safetensors")
    assert (labels == want_labels).mean() > 0.99  # float noise may flip a near-tie, nothing more
    assert np.abs(unsure.astype(int) - want_unsure.astype(int)).max() <= 1
    assert unsure.max() == 255 and 0 < peak <= math.log(2)  # 255 = the image's peak; two members: ≤ log 2 nats
    assert sample.uncertainty == pytest.approx(want_score, rel=1e-4)  # the ranking is the same prediction's score
    # value / 255 * peak gives the nats back: the top 10 % of the map averages to the image's score.
    top = np.sort(unsure.ravel())[::-1][:unsure.size // 10] / 255 * peak
    assert top.mean() == pytest.approx(sample.uncertainty, abs=peak / 255)


def test_prelabel_result_names_the_uncertainty_map_of_the_mask_it_wrote(studio, celery_worker, client_for):
    annotator = client_for(studio.users.annotator)
    sample = studio.samples[3]  # a fixture sample: no prediction stored yet
    missing = annotator.get(f"/api/samples/{sample.pk}/segmentation.png")
    assert missing.status_code == 404
    assert "no prediction for sample" in missing.json()["detail"] and "/rank" in missing.json()["detail"]
    assert annotator.get(f"/api/samples/{sample.pk}/uncertainty.png").status_code == 404

    job = wait_for_job(post(annotator, f"/api/samples/{sample.pk}/prelabel", {}).json()["id"], worker=celery_worker)
    assert job.status == "succeeded", job.error
    result = job.result
    assert result["segmentation_id"] == studio.segmentation.pk
    assert result["uncertainty_url"] == (f"/api/samples/{sample.pk}/uncertainty.png"
                                         f"?segmentation_id={studio.segmentation.pk}")
    mode, unsure = png_array(annotator.get(result["uncertainty_url"]))
    assert mode == "L" and unsure.shape == (32, 32) and unsure.max() == 255 and unsure.min() < 128
    assert result["uncertainty_peak"] > 0
    _mode, predicted = png_array(annotator.get(result["prediction_url"]))
    _mode, drafted = png_array(annotator.get(f"/api/samples/{sample.pk}/annotation/mask.png"
                                             f"?version={result['version']}"))
    assert (predicted == drafted).all()  # the map describes exactly the mask the annotator now corrects
    assert result["uncertainty"] == pytest.approx(studio.dataset.samples.get(pk=sample.pk).uncertainty)
    # The default (active branch) is the same file.
    assert annotator.get(f"/api/samples/{sample.pk}/uncertainty.png").content == \
        annotator.get(result["uncertainty_url"]).content


def test_ranking_with_a_new_branch_recomputes_every_prediction(studio, tiny_models, celery_worker, client_for,
                                                             tmp_path):
    from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, save_segmentation
    from conftest import TINY_SCHEMA
    from webapp.datasets.models import SamplePrediction
    from webapp.registry import services as registry

    torch.manual_seed(5)
    other = SegmentationEnsemble(SegmentationConfig.from_generator(tiny_models.generator, TINY_SCHEMA.num_classes,
                                                                   hidden=(16,), ensemble_size=3), seed=5)
    save_segmentation(tmp_path / "other.safetensors", other, TINY_SCHEMA,
                      meta={"generator_id": tiny_models.fingerprint})
    second = registry.import_checkpoint(studio.users.admin, kind="segmentation", name="second seg",
                                        data=(tmp_path / "other.safetensors").read_bytes(),
                                        filename="other.safetensors", generator=studio.generator)
    assert second.schema_id == studio.schema.pk
    registry.activate(second)
    admin, viewer = client_for(studio.users.admin), client_for(studio.users.artist)
    sample = studio.samples[0]
    assert viewer.get(f"/api/samples/{sample.pk}/segmentation.png").status_code == 404  # not ranked yet

    ranking = wait_for_job(post(admin, f"/api/datasets/{studio.dataset.pk}/rank", {}).json()["id"],
                           worker=celery_worker)
    assert ranking.status == "succeeded", ranking.error
    assert SamplePrediction.objects.filter(segmentation=second).count() == len(studio.samples)
    response = viewer.get(f"/api/samples/{sample.pk}/segmentation.png")
    assert response["X-Segmentation-Id"] == str(second.pk)
    _mode, labels = png_array(response)
    _mode, unsure = png_array(viewer.get(f"/api/samples/{sample.pk}/uncertainty.png"))
    want_labels, want_unsure, want_score = expected_prediction(sample, tiny_models.folder / "generator.safetensors",
                                                               tmp_path / "other.safetensors")
    assert (labels == want_labels).mean() > 0.99
    assert np.abs(unsure.astype(int) - want_unsure.astype(int)).max() <= 1
    sample.refresh_from_db()
    assert sample.ranked_with_id == second.pk and sample.uncertainty == pytest.approx(want_score, rel=1e-4)
    # The first branch has none for this sample, and asking for a checkpoint that is no branch is a 400.
    assert viewer.get(f"/api/samples/{sample.pk}/segmentation.png"
                      f"?segmentation_id={studio.segmentation.pk}").status_code == 404
    wrong = viewer.get(f"/api/samples/{sample.pk}/segmentation.png?segmentation_id={studio.generator.pk}")
    assert wrong.status_code == 400 and "not a segmentation branch" in wrong.json()["detail"]


def test_embedding_an_upload_stores_its_prediction(studio, celery_worker, client_for):
    artist = client_for(studio.users.artist)
    uploaded = artist.post(f"/api/datasets/{studio.dataset.pk}/samples/upload",
                           {"file": photo_file((40, 40), (90, 140, 60))}).json()
    before = artist.get(f"/api/samples/{uploaded['id']}/segmentation.png")
    assert before.status_code == 404 and "embed it" in before.json()["detail"]

    for _round in range(2):  # embedding again replaces the prediction of the old latent
        embedded = wait_for_job(post(artist, f"/api/samples/{uploaded['id']}/embed", {"steps": 2}).json()["id"],
                                worker=celery_worker)
        assert embedded.status == "succeeded", embedded.error
        assert embedded.result["segmentation_id"] == studio.segmentation.pk
        mode, labels = png_array(artist.get(f"/api/samples/{uploaded['id']}/segmentation.png"))
        assert mode == "P" and labels.shape == (32, 32)
    from webapp.datasets.models import SamplePrediction
    from webapp.storage import read_bytes

    prediction = SamplePrediction.objects.get(sample_id=uploaded["id"])
    assert read_bytes(prediction.uncertainty.name)
    folder = Path(prediction.mask.path).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(  # the replaced files are gone
        Path(name).name for name in (prediction.mask.name, prediction.uncertainty.name))


def test_segmenting_a_sample_stores_the_active_branchs_prediction(studio, tiny_models, celery_worker, client_for):
    """The edit studio asks for a sample's prediction when ``segmentation.png`` has none of the active branch: a
    ``segment`` job stores it (no edit session, no edit files) and its result names it."""
    from webapp.datasets.models import Sample, SamplePrediction
    from webapp.editing.models import EditSession

    artist = client_for(studio.users.artist)
    sample = studio.samples[0]
    SamplePrediction.objects.filter(sample=sample).delete()
    assert artist.get(f"/api/samples/{sample.pk}/segmentation.png").status_code == 404
    sessions = EditSession.objects.count()
    asked = post(artist, f"/api/samples/{sample.pk}/segment", {})
    assert asked.status_code == 202 and asked.json()["kind"] == "segment", asked.content
    job = wait_for_job(asked.json()["id"], worker=celery_worker)
    assert job.status == "succeeded", job.error
    assert job.result["prediction_url"] == (f"/api/samples/{sample.pk}/segmentation.png"
                                            f"?segmentation_id={studio.segmentation.pk}")
    _mode, labels = png_array(artist.get(job.result["prediction_url"]))
    want_labels, _unsure, _score = expected_prediction(sample, tiny_models.folder / "generator.safetensors",
                                                       tiny_models.folder / "segmentation.safetensors")
    assert (labels == want_labels).mean() > 0.99
    assert EditSession.objects.count() == sessions

    Sample.objects.filter(pk=studio.samples[1].pk).update(latent="")
    refused = post(artist, f"/api/samples/{studio.samples[1].pk}/segment", {})
    assert refused.status_code == 400 and "embed the uploaded image first" in refused.json()["detail"]


def test_prediction_routes_explain_what_is_missing(studio, client_for):
    annotator = client_for(studio.users.annotator)
    assert annotator.get("/api/samples/99999/segmentation.png").status_code == 404
    studio.segmentation.active = False
    studio.segmentation.save(update_fields=["active"])
    response = annotator.get(f"/api/samples/{studio.samples[0].pk}/uncertainty.png")
    assert response.status_code == 404 and "no active segmentation branch" in response.json()["detail"]
    assert annotator.get(f"/api/samples/{studio.samples[0].pk}/segmentation.png?segmentation_id=x").status_code \
        == 422
    assert client_for(None).get(f"/api/samples/{studio.samples[0].pk}/segmentation.png").status_code == 401


def test_activating_a_branch_ranks_its_datasets_with_it(studio, tiny_models, celery_worker, client_for, tmp_path):
    """``POST /checkpoints/{id}/activate`` queues the rankings: stored predictions and "label next" follow."""
    from test_web_api import second_branch
    from webapp.datasets.models import SamplePrediction

    admin, viewer = client_for(studio.users.admin), client_for(studio.users.annotator)
    second, path = second_branch(studio, tiny_models, tmp_path)
    sample = studio.samples[2]
    assert viewer.get(f"/api/samples/{sample.pk}/segmentation.png?segmentation_id={second.pk}").status_code == 404

    activated = post(admin, f"/api/checkpoints/{second.pk}/activate", {}).json()
    assert activated["active"] and len(activated["ranking_job_ids"]) == 1
    ranking = wait_for_job(activated["ranking_job_ids"][0], worker=celery_worker)
    assert ranking.status == "succeeded", ranking.error
    assert ranking.result["ranked"] == len(studio.samples)

    response = viewer.get(f"/api/samples/{sample.pk}/segmentation.png")
    assert response["X-Segmentation-Id"] == str(second.pk)
    _mode, labels = png_array(response)
    want_labels, _unsure, want_score = expected_prediction(sample, tiny_models.folder / "generator.safetensors", path)
    assert (labels == want_labels).mean() > 0.99
    scores = dict(SamplePrediction.objects.filter(segmentation=second).values_list("sample_id", "score"))
    assert scores[sample.pk] == pytest.approx(want_score, rel=1e-4)
    unlabelled = [s.pk for s in studio.samples[2:]]  # the first two are annotated
    next_up = viewer.get(f"/api/datasets/{studio.dataset.pk}/next-to-label").json()
    assert [s["id"] for s in next_up] == sorted(unlabelled, key=lambda pk: -scores[pk])
    assert [s["uncertainty"] for s in next_up] == pytest.approx([scores[s["id"]] for s in next_up])


def test_the_demo_bundle_is_ranked_and_its_vectors_get_pictures_when_loaded(users, tiny_models, celery_worker,
                                                                            client_for, tmp_path):
    """``manage.py studio`` loading a bundle for the first time: the demo dataset has predictions from the start
    (a ranking job by the bundle's branch), and a vector without the bundle's thumbnails gets rendered ones."""
    from webapp.jobs.models import Job
    from webapp.registry.models import Checkpoint
    from webapp.studio.services import load_bundle

    bundle = tiny_bundle(tmp_path / "bundle", tiny_models)
    said = []
    dataset = load_bundle(bundle, users.admin, said.append, unlabelled=3)
    assert any("ranking the samples" in line for line in said)
    ranking = Job.objects.get(kind="rank")
    thumbnails = Job.objects.get(kind="vector_thumbnails")
    for job in (ranking, thumbnails):
        finished = wait_for_job(job.pk, worker=celery_worker)
        assert finished.status == "succeeded", finished.error

    branch = Checkpoint.objects.get(kind="segmentation", generator=dataset.generator, active=True)
    assert ranking.params == {"dataset_id": dataset.pk, "segmentation_id": branch.pk}
    viewer = client_for(users.annotator)
    for sample in dataset.samples.all():
        response = viewer.get(f"/api/samples/{sample.pk}/segmentation.png")
        assert response.status_code == 200 and response["X-Segmentation-Id"] == str(branch.pk)
    next_up = viewer.get(f"/api/datasets/{dataset.pk}/next-to-label").json()
    assert len(next_up) == 3 and all(s["uncertainty"] is not None for s in next_up)
    assert [s["uncertainty"] for s in next_up] == sorted((s["uncertainty"] for s in next_up), reverse=True)
    vector = viewer.get("/api/vectors").json()[0]
    assert vector["thumbnails_status"] == "ready" and vector["thumb_after_url"]


def test_a_bundles_segmentation_branch_carries_the_bundles_evaluation(users, tiny_models, celery_worker, tmp_path):
    """The shipped branch's file has no training metrics: the studio shows what the bundle measured instead."""
    import json

    from webapp.jobs.models import Job
    from webapp.registry.models import Checkpoint
    from webapp.studio.services import load_bundle

    bundle = tiny_bundle(tmp_path / "bundle", tiny_models)
    per_class = {"background": 0.9, "skin": 0.7, "hair": 0.5}
    (bundle / "evaluation.json").write_text(json.dumps({
        "created": "2026-12-03T01:17:09+00:00", "config": {"annotated_samples": 16},
        "segmentation": {"optimised": {"miou": 0.7, "per_class": per_class},
                         "encoder_only": {"miou": 0.5, "per_class": per_class}, "renders": 200}}))
    dataset = load_bundle(bundle, users.admin, lambda line: None, unlabelled=0)
    branch = Checkpoint.objects.get(kind="segmentation", generator=dataset.generator)
    assert branch.metrics == {"mean_iou": 0.7, "per_class_iou": per_class, "evaluated_on": "bundle evaluation",
                              "num_heldout": 200, "num_samples": 16, "measured": "2026-12-03T01:17:09+00:00",
                              "mean_iou_encoder_only": 0.5}
    # The jobs the load queued (ranking, thumbnails) end before the test database is flushed: on PostgreSQL a job's
    # transaction beside the flush's TRUNCATE deadlocked it once (CI, 2026-12-05).
    for job in Job.objects.all():
        wait_for_job(job.pk, worker=celery_worker)
