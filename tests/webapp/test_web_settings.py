"""Settings come from the environment: storage, database, bad values (checked in a fresh interpreter)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.database_independent
REPO = Path(__file__).resolve().parents[2]
PROBE = ("import django; django.setup(); from django.conf import settings; "
         "from django.core.files.storage import storages; storage = storages['default']; "
         "print(type(storage).__name__, settings.DATABASES['default']['ENGINE'], "
         "getattr(storage, 'bucket_name', '-'))")


def settings_in(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "STORAGE_", "AWS_"))}
    base.update(DJANGO_SETTINGS_MODULE="webapp.settings", STUDIO_VAR_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=base, capture_output=True, text=True,
                          timeout=120)


def test_local_sqlite_by_default_and_s3_postgres_by_environment(tmp_path):
    default = settings_in(tmp_path)
    assert default.stdout.split() == ["FileSystemStorage", "django.db.backends.sqlite3", "-"], default.stderr
    scaled = settings_in(tmp_path, STORAGE_BACKEND="s3", AWS_STORAGE_BUCKET_NAME="studio-files",
                         DATABASE_URL="postgres://studio@db.internal:5432/studio")
    assert scaled.stdout.split() == ["S3Storage", "django.db.backends.postgresql", "studio-files"], scaled.stderr


BAD_SETTINGS = [  # (environment, what stderr must say)
    ({"STORAGE_BACKEND": "ftp"}, "STORAGE_BACKEND='ftp': use 'local' (default) or 's3'"),
    ({"STUDIO_MAX_QUEUED_JOBS_PER_USER": "many"}, "STUDIO_MAX_QUEUED_JOBS_PER_USER='many' is not an integer"),
    ({"STUDIO_PRESENCE_TTL_SECONDS": "soon"}, "STUDIO_PRESENCE_TTL_SECONDS='soon' is not a number"),
    ({"STUDIO_PRESENCE_TTL_SECONDS": "0"}, "must be a positive number of seconds"),
    ({"STUDIO_CPU_WORKER_NICE": "-5"}, "STUDIO_CPU_WORKER_NICE must be 0..19"),
    ({"STUDIO_WORKER_THREADS": "-2"}, "STUDIO_WORKER_THREADS must be ≥ 0"),
    ({"STUDIO_EDIT_ROI_CHUNK": "-1"}, "STUDIO_EDIT_ROI_CHUNK must be ≥ 0"),
    ({"STUDIO_SEG_FEATURE_CACHE_MB": "-1"}, "STUDIO_SEG_FEATURE_CACHE_MB must be ≥ 0 (0 = no cache)"),
    ({"STUDIO_LIVE_APPLY_MAX_SIZE": "-512"}, "STUDIO_LIVE_APPLY_MAX_SIZE must be ≥ 0 (0 = full size)"),
    ({"DATABASE_POOL_MAX_SIZE": "-1"}, "DATABASE_POOL_MAX_SIZE must be ≥ 0"),
    ({"STUDIO_EDIT_PRECISION": "fp16"}, "STUDIO_EDIT_PRECISION='fp16': use one of float32, bfloat16, float16"),
    ({"STUDIO_EDIT_COMPILE": "fast"}, "STUDIO_EDIT_COMPILE='fast': use one of default, reduce-overhead"),
    ({"STUDIO_JOB_STALE_SECONDS": "0.5"}, "STUDIO_JOB_STALE_SECONDS=0.5 must be at least four heartbeats"),
    ({"STUDIO_JOB_STALE_SECONDS": "nan"}, "STUDIO_JOB_STALE_SECONDS=nan must be at least four heartbeats"),
    ({"STUDIO_JOB_MAX_ATTEMPTS": "0"}, "STUDIO_JOB_MAX_ATTEMPTS=0 must be at least 1"),
    ({"STUDIO_EDIT_LPIPS": "squeeze"}, "STUDIO_EDIT_LPIPS='squeeze': use auto, vgg or alex"),
    ({"STUDIO_MODE1_MASK_MEMBERS": "-1"}, "must be ≥ 0 (0 = auto)"),
    ({"STUDIO_EMBED_STEPS": "-100"}, "STUDIO_EMBED_STEPS must be ≥ 0 (0 = auto)"),
]


def test_bad_setting_values_fail_with_a_clear_message(tmp_path):
    for env, message in BAD_SETTINGS:
        wrong = settings_in(tmp_path, **env)
        assert wrong.returncode != 0 and message in wrong.stderr, (env, wrong.stderr[-500:])


def test_the_allowed_edit_precisions_are_the_engines():
    """The settings keep their own list (importing the engine's would load torch in the web process)."""
    from django.conf import settings

    from editor_core.editing import _AUTOCAST_DTYPES

    assert set(settings.STUDIO_EDIT_PRECISION_CHOICES) == set(_AUTOCAST_DTYPES)


def test_the_allowed_compile_modes_are_the_engines():
    from django.conf import settings

    from editor_core.compiled import COMPILE_MODES

    assert settings.STUDIO_EDIT_COMPILE_CHOICES == COMPILE_MODES
