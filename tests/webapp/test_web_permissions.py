"""The route matrix: every API route × {anonymous, annotator, artist, admin} gets exactly the access it should.

Anonymous callers get 401, a logged-in role without the permission 403, an allowed role anything else (a 4xx about
the empty body or a missing object is fine: it proves the role check let the request through). A route added
without an entry here fails ``test_matrix_covers_every_route``.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

ANY = {"annotator", "artist", "admin"}
SIGNED_IN = ANY | {"roleless"}  # who they are and signing out: also for a user still waiting for a role
ANNOTATORS, ARTISTS, ADMINS = {"annotator", "admin"}, {"artist", "admin"}, {"admin"}
PUBLIC = "public"

ACCESS = {
    ("GET", "/api/auth/csrf"): PUBLIC,
    ("POST", "/api/auth/login"): PUBLIC,
    ("POST", "/api/auth/logout"): SIGNED_IN,
    ("GET", "/api/me"): SIGNED_IN,
    ("GET", "/api/tokens"): ANY,
    ("POST", "/api/tokens"): ANY,
    ("DELETE", "/api/tokens/{token_id}"): ANY,
    ("GET", "/api/schemas"): ANY,
    ("POST", "/api/schemas"): ADMINS,
    ("GET", "/api/schemas/{schema_id}"): ANY,
    ("GET", "/api/datasets"): ANY,
    ("POST", "/api/datasets"): ADMINS,
    ("GET", "/api/datasets/{dataset_id}"): ANY,
    ("DELETE", "/api/datasets/{dataset_id}"): ADMINS,
    ("GET", "/api/datasets/{dataset_id}/samples"): ANY,
    ("GET", "/api/datasets/{dataset_id}/next-to-label"): ANY,
    ("GET", "/api/datasets/{dataset_id}/presence"): ANY,
    ("POST", "/api/datasets/{dataset_id}/samples/generate"): ARTISTS,
    ("POST", "/api/datasets/{dataset_id}/samples/upload"): ARTISTS,
    ("POST", "/api/datasets/{dataset_id}/rank"): ADMINS,
    ("GET", "/api/datasets/{dataset_id}/export.zip"): ANY,
    ("GET", "/api/samples/{sample_id}"): ANY,
    ("DELETE", "/api/samples/{sample_id}"): ADMINS,
    ("GET", "/api/samples/{sample_id}/image.png"): ANY,
    ("GET", "/api/samples/{sample_id}/segmentation.png"): ANY,
    ("GET", "/api/samples/{sample_id}/uncertainty.png"): ANY,
    ("POST", "/api/samples/{sample_id}/segment"): ANY,
    ("POST", "/api/samples/{sample_id}/embed"): ARTISTS,
    ("POST", "/api/samples/{sample_id}/tune"): ARTISTS,
    ("GET", "/api/samples/{sample_id}/annotation"): ANY,
    ("PUT", "/api/samples/{sample_id}/annotation"): ANNOTATORS,
    ("GET", "/api/samples/{sample_id}/annotation/mask.png"): ANY,
    ("GET", "/api/samples/{sample_id}/annotation/coco"): ANY,
    ("POST", "/api/samples/{sample_id}/annotation/submit"): ANNOTATORS,
    ("POST", "/api/samples/{sample_id}/annotation/review"): ADMINS,
    ("POST", "/api/samples/{sample_id}/annotation/restore"): ANNOTATORS,
    ("GET", "/api/samples/{sample_id}/annotation/revisions"): ANY,
    ("POST", "/api/samples/{sample_id}/prelabel"): ANNOTATORS,
    ("GET", "/api/checkpoints"): ANY,
    ("POST", "/api/checkpoints/upload"): ADMINS,
    ("POST", "/api/checkpoints/import"): ADMINS,
    ("GET", "/api/checkpoints/{checkpoint_id}"): ANY,
    ("POST", "/api/checkpoints/{checkpoint_id}/activate"): ADMINS,
    ("DELETE", "/api/checkpoints/{checkpoint_id}"): ADMINS,
    ("POST", "/api/train/segmentation"): ADMINS,
    ("POST", "/api/train/encoder"): ADMINS,
    ("POST", "/api/edits"): ARTISTS,
    ("GET", "/api/edits"): ARTISTS,
    ("GET", "/api/edits/{edit_id}"): ARTISTS,
    ("GET", "/api/vectors"): ANY,
    ("POST", "/api/vectors"): ARTISTS,
    ("POST", "/api/vectors/upload"): ARTISTS,
    ("GET", "/api/vectors/{vector_id}"): ANY,
    ("PATCH", "/api/vectors/{vector_id}"): ARTISTS,
    ("DELETE", "/api/vectors/{vector_id}"): ARTISTS,
    ("GET", "/api/vectors/{vector_id}/file"): ANY,
    ("GET", "/api/compositions"): ANY,
    ("POST", "/api/compositions"): ARTISTS,
    ("GET", "/api/compositions/{composition_id}"): ANY,
    ("DELETE", "/api/compositions/{composition_id}"): ARTISTS,
    ("GET", "/api/jobs"): ANY,
    ("GET", "/api/jobs/{job_id}"): ANY,
    ("POST", "/api/jobs/{job_id}/cancel"): ANY,
    ("POST", "/api/jobs/{job_id}/retry"): ANY,
}


def api_routes() -> set[tuple[str, str]]:
    from webapp.api import api

    schema = api.get_openapi_schema(path_prefix="/api")
    return {(method.upper(), path) for path, operations in schema["paths"].items() for method in operations}


def test_matrix_covers_every_route():
    assert api_routes() == set(ACCESS)


def _path_values(studio, user) -> dict:
    from webapp.accounts.models import ApiToken
    from webapp.editing.models import Composition
    from webapp.jobs.services import enqueue

    job = enqueue("prelabel", user, {"sample_id": studio.samples[0].pk})
    composition = Composition.objects.create(name="c", generator=studio.generator, author=user)
    return {"token_id": ApiToken.issue(user, "t")[0].pk, "schema_id": studio.schema.pk,
            "dataset_id": studio.dataset.pk, "sample_id": studio.samples[0].pk,
            "checkpoint_id": studio.segmentation.pk, "vector_id": studio.vector.pk, "composition_id": composition.pk,
            "edit_id": 1, "job_id": job.pk}


@pytest.mark.parametrize("method, path", sorted(ACCESS, key=lambda route: (route[1], route[0])))
def test_route_access(shared_studio, client_for, method, path):
    allowed = ACCESS[(method, path)]
    callers = [("anonymous", None), ("annotator", shared_studio.users.annotator), ("artist", shared_studio.users.artist),
               ("roleless", shared_studio.users.nobody), ("admin", shared_studio.users.admin)]  # admin last: it may delete
    for name, user in callers:
        values = _path_values(shared_studio, user or shared_studio.users.admin)
        url = path.format(**values)
        client = client_for(user)
        call = getattr(client, method.lower())
        response = call(url, data="{}", content_type="application/json") if method in ("POST", "PUT", "PATCH") \
            else call(url)
        status = response.status_code
        if allowed == PUBLIC:
            assert status not in (401, 403), f"{name} {method} {path} → {status}"
        elif name == "anonymous":
            assert status == 401, f"anonymous {method} {path} → {status}"
        elif name in allowed:
            assert status not in (401, 403), f"{name} {method} {path} → {status}: {response.content[:200]}"
        else:
            assert status == 403, f"{name} {method} {path} → {status}, expected 403"
