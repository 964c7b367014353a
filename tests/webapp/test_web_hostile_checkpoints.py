"""An uploaded checkpoint that the engine's loader refuses (CheckpointError) fails its import job with the loader's
reason, and nothing is registered or left stored. The hostile files themselves are covered in
tests/engine/test_checkpoints.py."""
from __future__ import annotations

import io

import pytest
from safetensors.torch import save_file

from conftest import run_import
from editor_core.checkpoints import PROJECT_FORMAT, save_checkpoint

pytestmark = pytest.mark.django_db(transaction=True)


def too_many_mapping_layers(folder, generator):
    return save_checkpoint(folder / "g.safetensors", "generator", generator.state_dict(),
                           {**generator.config.to_dict(), "mapping_layers": 10 ** 6})


def deeply_nested_config(folder, generator):
    path = folder / "g.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in generator.state_dict().items()}, str(path),
              metadata={"format": PROJECT_FORMAT, "kind": "generator", "config": "[" * 10 ** 5 + "]" * 10 ** 5})
    return path


def pickle_that_runs_code(folder, generator):
    """An NVlabs-looking pickle whose loading would call ``os.system`` under a plain unpickler."""
    path = folder / "network-snapshot.pkl"
    path.write_bytes(b"\x80\x04cos\nsystem\n(Vtouch /tmp/studio-owned\ntR.")
    return path


@pytest.mark.parametrize("make_file, reason", [
    (too_many_mapping_layers, "mapping_layers=1000000, but the file stores 2 mapping layers"),
    (deeply_nested_config, "nested too deeply"),
    (pickle_that_runs_code, "the pickle references os.system"),
])
def test_refused_checkpoint_upload_fails_its_job(studio, client_for, tiny_models, tmp_path, make_file, reason):
    from webapp.registry.models import Checkpoint
    from webapp.storage import stored_names

    path = make_file(tmp_path, tiny_models.generator)
    upload = io.BytesIO(path.read_bytes())
    upload.name = path.name
    before = Checkpoint.objects.count()
    job = run_import(client_for(studio.users.admin).post("/api/checkpoints/upload",
                                                         {"file": upload, "kind": "generator", "name": "hostile"}))
    assert job.status == "failed" and "not a usable StyleGAN2 generator checkpoint" in job.error
    assert reason in job.error
    assert Checkpoint.objects.count() == before
    assert list(stored_names("imports")) == []  # the upload went with the job
