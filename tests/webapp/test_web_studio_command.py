"""``manage.py studio --setup-only`` on a fresh var/: migrates, creates the first admin, loads a bundle once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.database_independent
REPO = Path(__file__).resolve().parents[2]


def run_setup(var: Path, bundle: Path) -> str:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DATABASE_TEST_NAME")}
    env.update(STUDIO_VAR_DIR=str(var), STUDIO_ADMIN_PASSWORD="first-admin-pass")
    done = subprocess.run([sys.executable, "manage.py", "studio", "--setup-only", "--bundle", str(bundle)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_setup_creates_admin_and_loads_the_bundle_once(tmp_path, tiny_models):
    bundle = tmp_path / "bundle"
    (bundle / "vectors").mkdir(parents=True)
    for name in ("generator.safetensors", "segmentation.safetensors"):
        (bundle / name).write_bytes((tiny_models.folder / name).read_bytes())
    (bundle / "vectors" / "bigger_hair.safetensors").write_bytes((tiny_models.folder / "vector.safetensors")
                                                                 .read_bytes())
    first = run_setup(tmp_path / "var", bundle)
    assert "created the first admin: username 'admin'" in first
    assert "vector bigger_hair" in first and "demo dataset 'demo' with 12 samples is ready" in first
    assert (tmp_path / "var" / "studio.sqlite3").is_file()  # SQLite under var/ by default

    second = run_setup(tmp_path / "var", bundle)
    assert "created the first admin" not in second and "demo dataset" not in second
