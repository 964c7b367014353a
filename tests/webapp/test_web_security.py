"""What the studio promises about access (docs/deploy.md, *Security*): stored files go only to those who may see
the row that owns them, under names nobody can guess; error texts carry no server paths or Python reprs; logins and
token creation are throttled; API tokens expire and can be listed and revoked."""
from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest

from conftest import make_user, png_bytes

pytestmark = pytest.mark.django_db

PICTURE = png_bytes(np.zeros((32, 32, 3), np.uint8), mode="RGB")


def media_url(name: str) -> str:
    from django.core.files.storage import default_storage

    return default_storage.url(name)


def finished_edit(studio, user):
    """An edit of ``user`` with a stored result (what a worker leaves), as the row and its API answer's URLs."""
    from webapp.editing import services as editing
    from webapp.editing.models import EditSession

    session = EditSession.objects.create(sample=studio.samples[0], generator=studio.generator,
                                         segmentation=studio.segmentation, mode=EditSession.Mode.OPTIMIZE, user=user)
    result = editing.store_result(session, image=PICTURE, mask_png=PICTURE, latent=b"latent", delta=b"delta")
    return session, result


def test_edit_files_are_served_only_to_those_who_may_see_the_edit(shared_studio, client_for):
    users = shared_studio.users
    session, result = finished_edit(shared_studio, users.artist)
    owner = client_for(users.artist)
    answer = owner.get(f"/api/edits/{session.pk}").json()["result"]
    urls = {"image": answer["image_url"], "latent": media_url(result.latent.name),
            "mask": answer["mask_url"], "vector": media_url(result.delta.name)}
    other_artist = make_user("art2", "artist")
    for user in (users.annotator, other_artist, users.nobody, None):
        client = client_for(user)
        assert client.get(f"/api/edits/{session.pk}").status_code in (401, 403, 404)
        for what, url in urls.items():
            assert client.get(url).status_code == 404, (user, what)  # the same answer as for no such file
    for user in (users.artist, users.admin):  # the owner, and admins who see every job
        for what, url in urls.items():
            response = client_for(user).get(url)
            assert response.status_code == 200, (user, what)
    assert b"".join(owner.get(urls["latent"]).streaming_content) == b"latent"


def test_every_kind_of_stored_file_follows_its_row(shared_studio, client_for, tiny_models):
    """Samples, masks, revisions, predictions, checkpoints, vectors and thumbnails: any role sees these rows, so
    their files go to any role; never to someone without a role, nor anonymously; an orphan file to nobody."""
    from webapp.datasets import services as datasets
    from webapp.datasets.models import Annotation, AnnotationRevision
    from webapp.editing import services as editing
    from webapp.registry.models import Checkpoint
    from webapp.storage import save_bytes

    sample = shared_studio.samples[0]
    labels = np.zeros((sample.height, sample.width), np.uint8)
    prediction = datasets.store_prediction(sample, shared_studio.segmentation, labels, labels, 0.5, 0.1)
    vector = editing.store_thumbnails(shared_studio.vector.pk, PICTURE, PICTURE)
    names = [sample.image.name, sample.latent.name, prediction.mask.name, prediction.uncertainty.name,
             vector.file.name, vector.thumb_before.name, vector.thumb_after.name,
             *Annotation.objects.values_list("mask", flat=True),
             *AnnotationRevision.objects.values_list("mask", flat=True),
             *Checkpoint.objects.values_list("file", flat=True)]
    assert all(names)
    for name in names:
        assert client_for(shared_studio.users.annotator).get(media_url(name)).status_code == 200, name
        assert client_for(shared_studio.users.nobody).get(media_url(name)).status_code == 404, name
        assert client_for(None).get(media_url(name)).status_code == 404, name
    orphan = save_bytes("images/orphan.png", PICTURE)
    assert client_for(shared_studio.users.admin).get(media_url(orphan)).status_code == 404
    sneaky = f"/media/images/../{sample.image.name}"
    assert client_for(shared_studio.users.admin).get(sneaky).status_code == 404


def test_every_model_with_files_says_who_may_read_them():
    """A new model with a FileField must name its visibility function, else its files are served to nobody."""
    from django.apps import apps

    from webapp.studio.media import FILE_OWNERS, file_fields

    with_files = {model for model in apps.get_models() if file_fields(model)}
    assert with_files == set(FILE_OWNERS)


def test_stored_names_cannot_be_guessed(shared_studio):
    """Two edits' files share no id and no sequence: each name is its kind and a fresh 128-bit token."""
    first, second = (finished_edit(shared_studio, shared_studio.users.artist)[1] for _ in range(2))
    token = re.compile(r"^edits/([0-9a-f]{32})-(image\.png|mask\.png|latent\.safetensors|vector\.safetensors)$")
    tokens = set()
    for result in (first, second):
        for name in (result.image.name, result.mask.name, result.latent.name, result.delta.name):
            match = token.match(name)
            assert match, name
            tokens.add(match.group(1))
    assert len(tokens) == 8  # every file its own token


def assert_no_server_detail(text: str) -> None:
    """No server path (temporary folder, media, var, code) and no Python object repr in a user-facing text."""
    import tempfile

    from django.conf import settings

    assert text
    assert "object at 0x" not in text, text
    for folder in {tempfile.gettempdir(), "/tmp/", str(settings.MEDIA_ROOT), str(settings.VAR_DIR),
                   str(settings.BASE_DIR)}:
        assert folder not in text, text


def named(data: bytes, name: str):
    import io

    upload = io.BytesIO(data)
    upload.name = name
    return upload


def test_bad_vector_mask_and_thumbnail_uploads_say_why_without_reprs(shared_studio, client_for):
    import base64

    from django.core.exceptions import ValidationError

    from webapp.editing.services import import_vector

    artist = client_for(shared_studio.users.artist)
    vector = artist.post("/api/vectors/upload", {"file": named(b"\x08\x00\x00\x00\x00\x00\x00\x00{}junk", "mine.vec"),
                                                 "generator_id": shared_studio.generator.pk})
    assert vector.status_code == 400
    assert "mine.vec" in vector.json()["detail"]
    assert_no_server_detail(vector.json()["detail"])
    sample = shared_studio.samples[2]
    mask = client_for(shared_studio.users.annotator).put(
        f"/api/samples/{sample.pk}/annotation", {"mask_png": base64.b64encode(b"GIF89a nonsense").decode(),
                                                 "base_version": 0}, content_type="application/json")
    assert mask.status_code == 400
    assert_no_server_detail(mask.json()["detail"])
    with pytest.raises(ValidationError) as refused:
        import_vector(shared_studio.users.artist, (shared_studio.vector.file.open("rb").read()), "v.safetensors",
                      shared_studio.generator, thumbnails=(b"not a picture", b"nor this"))
    assert_no_server_detail(" ".join(refused.value.messages))


def test_a_failed_jobs_error_and_log_name_no_server_path(shared_studio):
    from django.conf import settings

    from webapp.jobs import services as jobs
    from webapp.jobs.models import Job

    job = Job.objects.create(kind="sample", queue="interactive", requested_by=shared_studio.users.admin,
                             status=Job.Status.RUNNING, attempts=1)  # a worker's attempt, which finish() ends
    failed = jobs.finish(job, Job.Status.FAILED, error=f"{settings.MEDIA_ROOT}/checkpoints/generator/x.safetensors "
                                                       "is not a readable .safetensors file")
    assert failed.error == "x.safetensors is not a readable .safetensors file"
    jobs.append_log(job, f'  File "{settings.BASE_DIR}/editor_core/checkpoints.py", line 126, in read_header')
    assert Job.objects.get(pk=job.pk).log == '  File "checkpoints.py", line 126, in read_header\n'


# --- throttling ---------------------------------------------------------------------------------------------------
def sign_in(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post("/api/auth/login", {"username": username, "password": password},
                       content_type="application/json", REMOTE_ADDR=address)


def test_30_wrong_passwords_end_in_429_with_retry_after(shared_studio, settings):
    """The attack of the issue: 30 wrong passwords in a row. The first STUDIO_LOGIN_FAILURES_PER_USERNAME are
    plain 401s, then 429s that say when to come back — even for the right password."""
    from django.test import Client

    client = Client()
    answers = [sign_in(client, "ann", f"guess {k}") for k in range(30)]
    limit = settings.STUDIO_LOGIN_FAILURES_PER_USERNAME
    assert [a.status_code for a in answers] == [401] * limit + [429] * (30 - limit)
    refused = answers[-1]
    assert "too many sign-in attempts" in refused.json()["detail"]
    assert 0 < int(refused["Retry-After"]) <= settings.STUDIO_LOGIN_WINDOW_SECONDS
    assert sign_in(client, "ann", "correct horse battery staple").status_code == 429
    assert sign_in(client, "art", "correct horse battery staple").json()["username"] == "art"  # others sign in


def test_login_throttle_counts_per_username_and_per_address_in_a_window(shared_studio, settings):
    from django.test import Client

    from webapp.accounts.models import ThrottleEvent

    settings.STUDIO_LOGIN_FAILURES_PER_USERNAME, settings.STUDIO_LOGIN_FAILURES_PER_ADDRESS = 3, 5
    client = Client()
    for _ in range(2):
        assert sign_in(client, "ann", "wrong").status_code == 401
    assert sign_in(client, "ann", "correct horse battery staple").status_code == 200  # a success clears the count
    for _ in range(3):
        assert sign_in(client, "ANN", "wrong", address="10.0.0.2").status_code == 401  # one username, any case
    assert sign_in(client, "ann", "wrong", address="10.0.0.3").status_code == 429  # from any address
    # One address trying many usernames: its own limit.
    for name in ("x1", "x2", "x3", "x4", "x5"):
        assert sign_in(client, name, "wrong", address="10.9.9.9").status_code == 401
    assert sign_in(client, "art", "correct horse battery staple", address="10.9.9.9").status_code == 429
    assert sign_in(client, "art", "correct horse battery staple", address="10.9.9.8").status_code == 200
    # Once the window has passed (the events are moved back in time), the username may try again.
    ThrottleEvent.objects.update(created=ThrottleEvent.objects.earliest("created").created
                                 - dt.timedelta(seconds=settings.STUDIO_LOGIN_WINDOW_SECONDS + 1))
    assert sign_in(client, "ann", "wrong").status_code == 401


def test_token_creation_is_throttled_per_user(shared_studio, client_for, settings):
    settings.STUDIO_TOKENS_PER_WINDOW = 2
    annotator, artist = client_for(shared_studio.users.annotator), client_for(shared_studio.users.artist)
    for k in range(2):
        assert annotator.post("/api/tokens", {"name": f"script {k}"}, content_type="application/json"
                              ).status_code == 201
    refused = annotator.post("/api/tokens", {"name": "one more"}, content_type="application/json")
    assert refused.status_code == 429 and "too many token creation attempts" in refused.json()["detail"]
    assert int(refused["Retry-After"]) > 0
    assert artist.post("/api/tokens", {"name": "mine"}, content_type="application/json").status_code == 201


# --- token lifetime, listing and revocation -----------------------------------------------------------------------
def test_tokens_expire_after_their_lifetime(shared_studio, client_for, settings):
    from django.test import Client
    from django.utils import timezone

    from webapp.accounts.models import ApiToken

    created = client_for(shared_studio.users.annotator).post("/api/tokens", {"name": "nightly export"},
                                                             content_type="application/json").json()
    token = ApiToken.objects.get(pk=created["id"])
    lifetime = token.expires - token.created
    assert abs(lifetime - dt.timedelta(days=settings.STUDIO_TOKEN_LIFETIME_DAYS)) < dt.timedelta(minutes=1)
    script = Client(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert script.get("/api/me").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires=timezone.now() - dt.timedelta(seconds=1))
    expired = script.get("/api/me")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    assert script.get(media_url(shared_studio.samples[0].image.name)).status_code == 404
    unknown = Client(HTTP_AUTHORIZATION="Bearer egs_made_up").get("/api/me")
    assert unknown.status_code == 401 and "not valid" in unknown.json()["detail"]


def test_tokens_are_listed_without_secrets_and_only_their_owner_revokes_them(shared_studio, client_for):
    from django.test import Client

    owner, other = client_for(shared_studio.users.artist), client_for(shared_studio.users.annotator)
    created = owner.post("/api/tokens", {"name": "render farm"}, content_type="application/json").json()
    script = Client(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert script.get("/api/me").status_code == 200
    listed = owner.get("/api/tokens").json()
    mine = next(t for t in listed if t["id"] == created["id"])
    assert set(mine) == {"id", "name", "prefix", "created", "last_used", "expires", "revoked", "status"}
    assert mine["status"] == "active" and mine["last_used"] and created["key"].startswith(mine["prefix"])
    assert created["key"] not in owner.get("/api/tokens").content.decode()
    assert all(t["id"] != created["id"] for t in other.get("/api/tokens").json())
    assert other.delete(f"/api/tokens/{created['id']}").status_code == 404  # someone else's: not found
    assert script.get("/api/me").status_code == 200
    assert owner.delete(f"/api/tokens/{created['id']}").status_code == 204
    revoked = script.get("/api/me")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    mine = next(t for t in owner.get("/api/tokens").json() if t["id"] == created["id"])
    assert mine["status"] == "revoked" and mine["revoked"]
