"""Retraining from the admin side: which annotated samples a segmentation branch trains on (picked, default,
refused), the held-out per-class IoU that a real worker measures and stores with the checkpoint, and encoder
training with its settings and metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import luminance_mask, png_bytes
from test_web_workers import post, wait_for_job


def submit(sample, user, mask: np.ndarray | None = None):
    """Save ``mask`` (if given) as the next version and submit the sample's annotation."""
    from webapp.datasets import services as datasets

    annotation = datasets.annotation_of(sample)
    version = annotation.version if annotation else 0
    if mask is not None:
        version = datasets.save_mask(sample, user, mask, base_version=version).version
    return datasets.submit(sample, user, version)


def train(client, dataset, **settings):
    return post(client, "/api/train/segmentation", {"dataset_id": dataset.pk, "steps": 5, "ensemble_size": 2,
                                                    "hidden": [16], "pixels_per_step": 256, **settings})


# --- which samples (in-process: the job is queued, no worker needed) -------------------------------------------------
@pytest.mark.django_db
def test_default_trains_on_submitted_and_reviewed_annotations_only(studio, client_for):
    admin = client_for(studio.users.admin)
    drafts_only = train(admin, studio.dataset)  # the fixture's two annotations are drafts
    assert drafts_only.status_code == 400
    assert "0 submitted or reviewed annotations" in drafts_only.json()["detail"]

    for sample in studio.samples[:3]:
        submit(sample, studio.users.annotator,
               None if sample in studio.samples[:2] else np.ones((32, 32), np.uint8))
    queued = train(admin, studio.dataset)
    assert queued.status_code == 202, queued.content
    params = queued.json()["params"]
    # Every submitted sample was picked, so one of the three is held out (seeded, so a retry holds out the same).
    ids = sorted(s.pk for s in studio.samples[:3])
    assert params["evaluated_on"] == "held-out split" and len(params["heldout_ids"]) == 1
    assert sorted(params["sample_ids"] + params["heldout_ids"]) == ids
    assert train(admin, studio.dataset).json()["params"]["heldout_ids"] == params["heldout_ids"]

    everything = train(admin, studio.dataset, holdout_fraction=0).json()["params"]
    assert everything["sample_ids"] == ids and everything["heldout_ids"] == []
    assert everything["evaluated_on"] == "training"


@pytest.mark.django_db
def test_a_cpu_worker_retrains_with_its_own_sampling_unless_the_request_names_one(studio, client_for, monkeypatch):
    """The admin page leaves pixels per step to the worker: on a CPU (the test's device) the engine gets
    ``CPU_RETRAIN``'s few class-balanced pixels and cosine schedule; a request's own count is used as asked."""
    from editor_core.segmentation import SegTrainConfig
    from gpu_worker import engine_cache, training
    from webapp.jobs.models import Job

    class EngineReached(Exception):
        pass

    def engine(generator, ensemble, latents, masks, config, progress=None):
        raise EngineReached(config)

    monkeypatch.setattr(training, "train_segmentation", engine)
    for sample in studio.samples[:2]:
        submit(sample, studio.users.annotator)
    admin = client_for(studio.users.admin)
    configs = []
    for settings in ({}, {"pixels_per_step": 2048}):
        queued = post(admin, "/api/train/segmentation", {"dataset_id": studio.dataset.pk, "steps": 300, **settings})
        assert queued.status_code == 202, queued.content
        job = Job.objects.get(pk=queued.json()["id"])
        with pytest.raises(EngineReached) as reached:
            training.segmentation_branch(job, None, studio.dataset)
        configs.append(reached.value.args[0])
    default, asked = configs
    assert {key: getattr(default, key) for key in engine_cache.CPU_RETRAIN} == engine_cache.CPU_RETRAIN
    assert default.pixels_per_step < engine_cache.RETRAIN_PIXELS_PER_STEP and default.max_steps == 300
    assert (asked.pixels_per_step, asked.class_balance, asked.lr_schedule, asked.lr) == (
        2048, 0.0, "constant", SegTrainConfig.lr)


@pytest.mark.django_db
def test_the_submitted_samples_left_out_are_held_out(studio, client_for):
    admin = client_for(studio.users.admin)
    first, second, third, fourth = studio.samples
    submit(third, studio.users.annotator, np.ones((32, 32), np.uint8))
    submit(fourth, studio.users.annotator, np.full((32, 32), 2, np.uint8))
    queued = train(admin, studio.dataset, sample_ids=[second.pk, first.pk, first.pk])  # drafts, a duplicate
    assert queued.status_code == 202, queued.content
    params = queued.json()["params"]
    assert params["sample_ids"] == sorted([first.pk, second.pk])
    assert params["heldout_ids"] == [third.pk, fourth.pk] and params["evaluated_on"] == "held-out"

    two_of_three = train(admin, studio.dataset, sample_ids=[first.pk, third.pk]).json()["params"]
    assert two_of_three["heldout_ids"] == [fourth.pk]


@pytest.mark.django_db
def test_picked_samples_that_cannot_be_trained_on_are_refused(studio, client_for):
    from webapp.datasets import services as datasets

    admin = client_for(studio.users.admin)
    first, second, unannotated, _fourth = studio.samples
    cases = {
        "do not exist": [first.pk, 987654],
        "have no saved annotation": [first.pk, unannotated.pk],
        "at least 2": [first.pk],
    }
    for reason, ids in cases.items():
        refused = train(admin, studio.dataset, sample_ids=ids)
        assert refused.status_code == 400 and reason in refused.json()["detail"], (reason, refused.content)
    assert str(987654) in train(admin, studio.dataset, sample_ids=[first.pk, 987654]).json()["detail"]

    submit(second, studio.users.annotator)
    datasets.review(second, studio.users.admin, datasets.annotation_of(second).version, "rejected", "sloppy")
    rejected = train(admin, studio.dataset, sample_ids=[first.pk, second.pk])
    assert rejected.status_code == 400 and f"samples [{second.pk}] were rejected" in rejected.json()["detail"]

    uploaded = datasets.upload_sample(studio.dataset, studio.users.artist,
                                      png_bytes(np.zeros((32, 32, 3), np.uint8), mode="RGB"), "photo.png")
    datasets.save_mask(uploaded, studio.users.annotator, np.ones((32, 32), np.uint8), base_version=0)
    latent_less = train(admin, studio.dataset, sample_ids=[first.pk, uploaded.pk])
    assert latent_less.status_code == 400 and "without a latent" in latent_less.json()["detail"]

    bad_fraction = train(admin, studio.dataset, sample_ids=[first.pk], holdout_fraction=0.9)
    assert bad_fraction.status_code == 422


@pytest.mark.django_db
def test_samples_of_another_dataset_are_refused(studio, client_for):
    from webapp.datasets import services as datasets

    other = datasets.create_dataset(studio.users.admin, "other set", studio.schema, studio.generator)
    admin = client_for(studio.users.admin)
    refused = train(admin, other, sample_ids=[s.pk for s in studio.samples[:2]])
    assert refused.status_code == 400 and "belong to other datasets than 'other set'" in refused.json()["detail"]


# --- a real worker trains and measures --------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_retraining_on_picked_samples_reports_held_out_per_class_iou(studio, celery_worker, client_for,
                                                                     tiny_models):
    from editor_core.bundle import load_latents
    from editor_core.metrics import class_iou
    from editor_core.segmentation import load_segmentation
    from webapp.datasets.services import read_mask
    from webapp.registry.models import Checkpoint
    from webapp.storage import local_path, read_bytes

    generator = tiny_models.generator
    heldout = studio.samples[2]
    with torch.no_grad():
        image = generator.synthesis(load_sample_latent(heldout, studio, load_latents, read_bytes), noise_mode="const")
    submit(heldout, studio.users.annotator, luminance_mask(image[0]))
    admin = client_for(studio.users.admin)
    picked = [s.pk for s in studio.samples[:2]]
    queued = train(admin, studio.dataset, sample_ids=picked, activate=False, name="picked two")
    assert queued.status_code == 202, queued.content
    job = wait_for_job(queued.json()["id"], worker=celery_worker)
    assert job.status == "succeeded", job.error

    checkpoint = Checkpoint.objects.get(pk=job.result["checkpoint_id"])
    metrics = checkpoint.metrics
    assert not checkpoint.active and job.result["metrics"] == metrics  # the job reports what the checkpoint keeps
    assert metrics["evaluated_on"] == "held-out" and metrics["heldout_ids"] == [heldout.pk]
    assert metrics["sample_ids"] == picked and metrics["num_samples"] == 2 and metrics["num_heldout"] == 1
    assert metrics["cached_features"]  # two tiny samples' features fit STUDIO_SEG_FEATURE_CACHE_MB
    classes = list(studio.schema.classes.order_by("index").values_list("name", "colour"))
    assert [(c["class"], c["name"], c["colour"]) for c in metrics["per_class_iou"]] == [
        (k, name, colour) for k, (name, colour) in enumerate(classes)]

    # The same figures, measured here from the stored checkpoint and the held-out sample's stored mask.
    ensemble, _schema, _meta = load_segmentation(local_path(checkpoint.file.name, checkpoint.sha256))
    ws = load_sample_latent(heldout, studio, load_latents, read_bytes)
    with torch.no_grad():
        _image, features = generator.synthesis(ws, noise_mode="const", return_features=True)
        predicted = ensemble.predict(features).labels
    target = torch.from_numpy(read_mask(heldout).astype(np.int64))[None]
    expected = class_iou(predicted, target, len(classes))
    measured = torch.tensor([float("nan") if c["iou"] is None else c["iou"] for c in metrics["per_class_iou"]])
    assert torch.allclose(measured, expected, atol=1e-5, equal_nan=True), (measured, expected)
    assert metrics["mean_iou"] == pytest.approx(float(expected.nanmean()), abs=1e-5)
    assert [c["pixels"] for c in metrics["per_class_iou"]] == torch.bincount(target.flatten(),
                                                                             minlength=len(classes)).tolist()


def load_sample_latent(sample, studio, load_latents, read_bytes) -> torch.Tensor:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latent.safetensors"
        path.write_bytes(read_bytes(sample.latent.name))
        return load_latents(path, studio.generator.fingerprint)


# --- encoder training -------------------------------------------------------------------------------------------------
def train_encoder(client, generator, **settings):
    return post(client, "/api/train/encoder", {"generator_id": generator.pk, "steps": 3, "batch_size": 2,
                                               "lpips_weight": 0, **settings})


def upload_photo(dataset, user):
    from webapp.datasets import services as datasets

    rng = np.random.default_rng(0)
    return datasets.upload_sample(dataset, user, png_bytes(rng.integers(0, 255, (40, 48, 3), np.uint8), mode="RGB"),
                                  "photo.png")


@pytest.mark.django_db
def test_encoder_training_settings_are_checked(studio, client_for):
    admin = client_for(studio.users.admin)
    no_photos = train_encoder(admin, studio.generator, real_dataset_id=studio.dataset.pk)
    assert no_photos.status_code == 400 and "no uploaded photos" in no_photos.json()["detail"]
    assert train_encoder(admin, studio.generator, real_dataset_id=987654).status_code == 404
    for bad in ({"max_minutes": 0}, {"batch_size": 0}, {"steps": 0}, {"lpips_weight": -1}):
        assert train_encoder(admin, studio.generator, **bad).status_code == 422, bad

    upload_photo(studio.dataset, studio.users.artist)
    queued = train_encoder(admin, studio.generator, real_dataset_id=studio.dataset.pk, max_minutes=2.5, name="")
    assert queued.status_code == 202, queued.content
    assert queued.json()["params"] == {**queued.json()["params"], "real_dataset_id": studio.dataset.pk,
                                       "max_minutes": 2.5, "batch_size": 2, "name": "tiny encoder"}


@pytest.mark.django_db(transaction=True)
def test_encoder_training_mixes_photos_and_measures_against_the_active_encoder(studio, celery_worker, client_for):
    from webapp.registry.models import Checkpoint

    admin = client_for(studio.users.admin)
    upload_photo(studio.dataset, studio.users.artist)
    first = wait_for_job(train_encoder(admin, studio.generator, real_dataset_id=studio.dataset.pk,
                                       max_minutes=5, name="with photos").json()["id"], worker=celery_worker)
    assert first.status == "succeeded", first.error
    assert [step for step, _ in first.metrics["loss"]] == [1, 2, 3] and "real_l2" in first.metrics
    encoder = Checkpoint.objects.get(pk=first.result["checkpoint_id"])
    metrics = encoder.metrics
    assert encoder.kind == "encoder" and encoder.active  # the generator's first encoder
    assert metrics["steps"] == 3 and not metrics["stopped_by_time"] and metrics["real_images"] == 1
    assert metrics["eval_samples"] == 8 and np.isfinite(metrics["eval_psnr"]) and metrics["eval_latent_mse"] >= 0
    assert np.isfinite(metrics["real_psnr"]) and "eval_lpips" not in metrics  # no LPIPS asked for, none measured
    assert "baseline_psnr" not in metrics and first.result["metrics"] == metrics

    # A second run is measured next to the active one, on the same held-out samples: the first run's own figures.
    second = wait_for_job(train_encoder(admin, studio.generator, steps=2, activate=False).json()["id"],
                          worker=celery_worker)
    assert second.status == "succeeded", second.error
    later = Checkpoint.objects.get(pk=second.result["checkpoint_id"])
    assert not later.active and Checkpoint.objects.get(pk=encoder.pk).active
    assert later.metrics["baseline_checkpoint_id"] == encoder.pk and later.metrics["real_images"] == 0
    assert later.metrics["baseline_psnr"] == pytest.approx(metrics["eval_psnr"], abs=1e-4)
    assert later.metrics["baseline_latent_mse"] == pytest.approx(metrics["eval_latent_mse"], rel=1e-4)


@pytest.mark.django_db(transaction=True)
def test_encoder_training_stops_when_its_time_is_up(studio, celery_worker, client_for):
    from webapp.registry.models import Checkpoint

    admin = client_for(studio.users.admin)
    # 20 steps are checked every 2; a budget of well under a second ends the run at the first check.
    job = wait_for_job(train_encoder(admin, studio.generator, steps=20, max_minutes=1e-5, batch_size=1).json()["id"],
                       worker=celery_worker)
    assert job.status == "succeeded", job.error
    metrics = Checkpoint.objects.get(pk=job.result["checkpoint_id"]).metrics
    assert metrics["stopped_by_time"] and metrics["steps"] == 2 and len(job.metrics["loss"]) == 2
