"""Fixtures for the web-service tests: users of each role, a tiny generator + segmentation branch (made with the
engine's own classes, saved in the project format) registered in a dataset with samples, and API clients."""
from __future__ import annotations

import functools
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from editor_core.checkpoints import generator_fingerprint, save_generator
from editor_core.networks import Generator, GeneratorConfig
from editor_core.schema import LabelSchema as EngineSchema
from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, save_segmentation
from editor_core.vectors import EditVector, EditVectorInfo

TINY_GENERATOR = GeneratorConfig(resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32,
                                 mapping_layers=2)
TINY_SCHEMA = EngineSchema.from_names("tiny parts", ["background", "skin", "hair"])
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Files of a tiny random generator and a segmentation branch for it (untrained: uncertainty is real anyway)."""
    torch.manual_seed(0)
    generator = Generator(TINY_GENERATOR).eval().requires_grad_(False)
    ensemble = SegmentationEnsemble(SegmentationConfig.from_generator(generator, TINY_SCHEMA.num_classes,
                                                                      hidden=(16,), ensemble_size=2))
    folder = tmp_path_factory.mktemp("tiny-models")
    save_generator(folder / "generator.safetensors", generator)
    fingerprint = generator_fingerprint(generator)
    save_segmentation(folder / "segmentation.safetensors", ensemble, TINY_SCHEMA, meta={"generator_id": fingerprint})
    delta = torch.randn(generator.num_ws, generator.w_dim, generator=torch.Generator().manual_seed(3)) * 0.5
    EditVector(delta, EditVectorInfo(name="bigger hair", generator_id=fingerprint, edited_classes=[2])).save(
        folder / "vector.safetensors")
    return SimpleNamespace(folder=folder, generator=generator, fingerprint=fingerprint, ensemble=ensemble)


@functools.lru_cache(maxsize=1)
def password_hash() -> str:
    """PASSWORD hashed once per session (the real hasher, so Daphne logs these users in too)."""
    from django.contrib.auth.hashers import make_password

    return make_password(PASSWORD)


def make_user(username: str, role: str | None):
    from django.contrib.auth.models import User

    from webapp.accounts.roles import assign_role

    user = User.objects.create(username=username, password=password_hash())
    if role:
        assign_role(user, role)
    return user


def make_users() -> SimpleNamespace:
    return SimpleNamespace(annotator=make_user("ann", "annotator"), annotator2=make_user("ann2", "annotator"),
                           artist=make_user("art", "artist"), admin=make_user("boss", "admin"),
                           nobody=make_user("newcomer", None))


@pytest.fixture
def users(db):
    return make_users()


def luminance_mask(image: torch.Tensor) -> np.ndarray:
    """A labelling the tiny generator's images really have: luminance tertiles. ``uint8 [H, W]``."""
    luminance = image.mean(dim=0)
    edges = torch.quantile(luminance.flatten(), torch.tensor([1 / 3, 2 / 3]))
    return (luminance[..., None] > edges).sum(-1).to(torch.uint8).numpy()


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def photo_file(size: tuple[int, int], colour: tuple[int, int, int], image_format: str = "PNG") -> io.BytesIO:
    """A one-colour photo as the multipart upload of a test client expects (a named file object)."""
    photo = io.BytesIO()
    Image.new("RGB", size, colour).save(photo, format=image_format)
    photo.seek(0)
    photo.name = f"photo.{image_format.lower()}"
    return photo


def run_import(response):
    """The ``import_checkpoint`` job that ``POST /checkpoints/upload`` or ``/import`` answered (202), run by its task
    in this process (a transactional test: the task's heartbeat thread has its own connection) and read back."""
    from gpu_worker import tasks
    from webapp.jobs.models import Job

    assert response.status_code == 202, response.content
    tasks.import_checkpoint(response.json()["id"])
    return Job.objects.get(pk=response.json()["id"])


def tiny_bundle(folder, tiny_models):
    """A bundle folder with the tiny generator, its segmentation branch and one vector (no thumbnails)."""
    (folder / "vectors").mkdir(parents=True)
    for name in ("generator.safetensors", "segmentation.safetensors"):
        (folder / name).write_bytes((tiny_models.folder / name).read_bytes())
    (folder / "vectors" / "bigger_hair.safetensors").write_bytes((tiny_models.folder / "vector.safetensors")
                                                                 .read_bytes())
    return folder


@pytest.fixture
def studio(users, tiny_models):
    """A registered tiny generator (imported like an upload), its active segmentation branch, a dataset with four
    generated samples (two annotated), and one library vector by the artist."""
    return build_studio(users, tiny_models)


@pytest.fixture(scope="module")
def _module_studio(django_db_setup, django_db_blocker, tiny_models):
    from django.core.management import call_command

    with django_db_blocker.unblock():
        data = build_studio(make_users(), tiny_models)
    yield data
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def shared_studio(_module_studio, db):
    """``studio``'s data, built once per module and committed; each test's changes are rolled back after it.

    For in-process tests only: processes like Daphne see it too, but a transactional test would flush it."""
    return _module_studio


def build_studio(users, tiny_models) -> SimpleNamespace:
    from editor_core.bundle import latents_bytes
    from editor_core.images import image_png
    from webapp.datasets import services as datasets
    from webapp.datasets.models import Sample
    from webapp.editing.services import import_vector
    from webapp.registry import services as registry

    folder = tiny_models.folder
    generator_row = registry.import_checkpoint(users.admin, kind="generator", name="tiny",
                                               data=(folder / "generator.safetensors").read_bytes(),
                                               filename="generator.safetensors")
    segmentation_row = registry.import_checkpoint(users.admin, kind="segmentation", name="tiny seg",
                                                  data=(folder / "segmentation.safetensors").read_bytes(),
                                                  filename="segmentation.safetensors", generator=generator_row)
    dataset = datasets.create_dataset(users.admin, "tiny set", segmentation_row.schema, generator_row)
    generator = tiny_models.generator
    samples = []
    for seed in range(4):
        with torch.no_grad():
            ws = generator.mapping(torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(seed)))
            image = generator.synthesis(ws, noise_mode="const")
        sample = datasets.add_sample(dataset, source=Sample.Source.GENERATED, image_png=image_png(image[0]),
                                     latent=latents_bytes(ws[0], tiny_models.fingerprint), seed=seed)
        if seed < 2:
            datasets.save_mask(sample, users.annotator, luminance_mask(image[0]), base_version=0)
        samples.append(sample)
    vector = import_vector(users.artist, (folder / "vector.safetensors").read_bytes(), "vector.safetensors",
                           generator_row, tags=["hair"])
    return SimpleNamespace(generator=generator_row, segmentation=segmentation_row, dataset=dataset,
                           schema=dataset.schema, samples=samples, vector=vector, users=users)


@pytest.fixture
def client_for():
    """``client_for(user)`` → a Django test client logged in as ``user`` (None: anonymous)."""
    from django.test import Client

    def make(user=None, **kwargs):
        client = Client(**kwargs)
        if user is not None:
            client.force_login(user)
        return client

    return make
