"""Checkpoint imports as jobs: the request queues an ``import_checkpoint`` job (test_web_api.py has the checks it
makes at once), whose task converts the file through the engine and registers it, or fails naming why and leaves
nothing behind. The tasks run in this process (``run_import``); tests/e2e/test_admin.py imports through a worker."""
from __future__ import annotations

import io

import pytest

from conftest import run_import
from test_web_api import transaction_depths
from test_web_security import assert_no_server_detail, named

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_import_job_of_a_registered_checkpoint_fails_and_leaves_nothing(studio, client_for, tiny_models,
                                                                           settings):
    """The same generator (by fingerprint) or branch file again: its job fails naming the one registered, and the
    upload it was given is gone; a server file stays where it is."""
    from webapp.registry.models import Checkpoint
    from webapp.storage import stored_names

    admin = client_for(studio.users.admin)
    before = Checkpoint.objects.count()
    duplicate = run_import(admin.post("/api/checkpoints/upload", {
        "file": io.BytesIO((tiny_models.folder / "generator.safetensors").read_bytes()), "kind": "generator",
        "name": "again"}))
    assert duplicate.status == "failed" and duplicate.queue == "training"
    assert f"already registered as #{studio.generator.pk}" in duplicate.error
    settings.STUDIO_IMPORT_ROOTS = [tiny_models.folder]
    segmentation = run_import(admin.post("/api/checkpoints/import", {
        "kind": "segmentation", "name": "second", "generator_id": studio.generator.pk,
        "server_path": str(tiny_models.folder / "segmentation.safetensors")}, content_type="application/json"))
    assert segmentation.status == "failed" and f"already registered as #{studio.segmentation.pk}" in segmentation.error
    assert Checkpoint.objects.count() == before and list(stored_names("imports")) == []
    assert (tiny_models.folder / "segmentation.safetensors").is_file()


@pytest.mark.parametrize("writer, filename, source_format", [
    ("write_nvlabs_style_pickle", "network-snapshot.pkl", "nvlabs"),
    ("save_rosinality_checkpoint", "550000.pt", "rosinality"),
])
def test_foreign_generator_checkpoints_are_imported_and_converted(studio, client_for, tiny_models, tmp_path,
                                                                   settings, writer, filename, source_format):
    """NVlabs pickles and rosinality .pt files become project-format generators with the same fingerprint, by the
    import job the request queued."""
    import torch

    from editor_core import checkpoints
    from editor_core.networks import Generator

    torch.manual_seed(11)
    foreign = Generator(tiny_models.generator.config).eval()
    getattr(checkpoints, writer)(tmp_path / filename, foreign)
    settings.STUDIO_IMPORT_ROOTS = [tmp_path]
    admin = client_for(studio.users.admin)
    job = run_import(admin.post("/api/checkpoints/import", {"kind": "generator", "name": source_format,
                                                            "server_path": str(tmp_path / filename)},
                                content_type="application/json"))
    assert job.status == "succeeded", job.error
    assert job.result["ranking_job_ids"] == []
    body = admin.get(f"/api/checkpoints/{job.result['checkpoint_id']}").json()
    assert body["source_format"] == source_format and body["config"]["img_resolution"] == 32
    assert body["fingerprint"] == checkpoints.generator_fingerprint(foreign)
    from webapp.registry.models import Checkpoint

    stored = Checkpoint.objects.get(pk=body["id"])
    assert checkpoints.detect_checkpoint_format(stored.file.path) == "editgan"  # converted to the project format


def test_imports_convert_and_store_before_their_transaction_opens(studio, client_for, tiny_models, tmp_path,
                                                                  settings, monkeypatch):
    """Converting a large pickle takes seconds; on SQLite an open transaction holds the write lock (every annotator's
    save waits), so an import job converts and stores its file with no transaction open, and writes only its rows
    (and queues its rankings) in one."""
    import torch

    from editor_core import checkpoints
    from editor_core.networks import Generator
    from webapp.registry import services as registry
    from webapp.registry.models import Checkpoint

    depths = transaction_depths(monkeypatch, {
        "convert": (registry, "_convert_generator"), "store checkpoint": (registry, "save_bytes"),
        "checkpoint row": (Checkpoint.objects, "create")})
    torch.manual_seed(12)
    checkpoints.write_nvlabs_style_pickle(tmp_path / "network-snapshot.pkl", Generator(tiny_models.generator.config))
    settings.STUDIO_IMPORT_ROOTS = [tmp_path]
    job = run_import(client_for(studio.users.admin).post(
        "/api/checkpoints/import", {"kind": "generator", "name": "big pickle",
                                    "server_path": str(tmp_path / "network-snapshot.pkl")},
        content_type="application/json"))
    assert job.status == "succeeded", job.error
    assert depths == {"convert": 0, "store checkpoint": 0, "checkpoint row": 1}


@pytest.mark.parametrize("data, filename", [
    (b"this is not a checkpoint at all", "model.pkl"),  # refused by the request (its first bytes)
    (b"\x80\x02}q\x00.", "network-snapshot.pkl"),  # a pickle, but no NVlabs network in it: its job fails
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}", "generator.safetensors"),  # a truncated safetensors header
    (b"PK\x03\x04 not really a zip", "stylegan2.pt"),
])
def test_a_bad_checkpoint_upload_says_why_without_server_paths(studio, client_for, data, filename):
    response = client_for(studio.users.admin).post(
        "/api/checkpoints/upload", {"file": named(data, filename), "kind": "generator", "name": "bad"})
    if response.status_code == 400:
        said = response.json()["detail"]
    else:
        job = run_import(response)
        assert job.status == "failed"
        said = job.error
    assert_no_server_detail(said)
