"""``manage.py studio --setup-only`` on a fresh var/: migrates, creates the first admin, loads a bundle once."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_bundle

pytestmark = pytest.mark.database_independent
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def key_prefix():
    """A Redis key prefix of the command's own: the jobs it queues must not reach this session's test worker
    (their ids are rows of the command's database); removed afterwards."""
    import redis

    prefix = f"{os.environ['STUDIO_KEY_PREFIX']}-setup"
    yield prefix
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def run_setup(var: Path, bundle: Path, key_prefix: str) -> str:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DATABASE_TEST_NAME")}
    env.update(STUDIO_VAR_DIR=str(var), STUDIO_ADMIN_PASSWORD="first-admin-pass", STUDIO_KEY_PREFIX=key_prefix)
    done = subprocess.run([sys.executable, "manage.py", "studio", "--setup-only", "--bundle", str(bundle)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def queued_jobs(var: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(var / "studio.sqlite3") as db:
        return db.execute("SELECT kind, params FROM jobs_job WHERE status = 'queued' ORDER BY id").fetchall()


def test_setup_creates_admin_and_loads_the_bundle_once(tmp_path, tiny_models, key_prefix):
    bundle = tiny_bundle(tmp_path / "bundle", tiny_models)
    first = run_setup(tmp_path / "var", bundle, key_prefix)
    assert "created the first admin: username 'admin'" in first
    assert "vector bigger_hair" in first and "demo dataset 'demo' with 12 samples is ready" in first
    assert (tmp_path / "var" / "studio.sqlite3").is_file()  # SQLite under var/ by default
    # Jobs for the studio's worker when it starts: the vector's pictures (the bundle has no thumbnails/ folder) and
    # the demo dataset's ranking by the bundle's branch (predictions and "label next" from the start).
    assert "vector bigger_hair (its thumbnails are rendered by the worker)" in first
    assert "ranking the samples with segmentation branch" in first
    assert [kind for kind, _params in queued_jobs(tmp_path / "var")] == ["vector_thumbnails", "rank"]

    second = run_setup(tmp_path / "var", bundle, key_prefix)
    assert "created the first admin" not in second and "demo dataset" not in second
