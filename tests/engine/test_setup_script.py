"""bin/_setup.sh: the torch build comes from the index the user names (STUDIO_TORCH_INDEX_URL, e.g. PyTorch's CPU-only
wheels), and without one the set-up does exactly what it did before. The script runs for real in a copy of the
project's layout; its pip is a stand-in that records how it was called (a real install needs minutes and a network)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def project_copy(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy(REPO / "bin" / "_setup.sh", root / "bin" / "_setup.sh")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    executable = {
        root / "bin" / "fetch-weights": "#!/bin/sh\nexit 0\n",
        root / ".venv" / "bin" / "pip": f'#!/bin/sh\necho "$@" >> "{root}/pip-calls"\n',
        root / ".venv" / "bin" / "python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
    }
    for path, text in executable.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    return root


def set_up(root: Path, **env) -> list[str]:
    clean = {key: value for key, value in os.environ.items() if key != "STUDIO_TORCH_INDEX_URL"}
    done = subprocess.run(["bash", str(root / "bin" / "_setup.sh")], env={**clean, **env}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = root / "pip-calls"
    return calls.read_text().splitlines() if calls.exists() else []


def stamps(root: Path) -> list[str]:
    return sorted(path.name for path in (root / ".venv").glob(".installed-*"))


def test_the_torch_index_of_the_users_choosing_reaches_pip(tmp_path):
    root = project_copy(tmp_path / "project")
    calls = set_up(root, STUDIO_TORCH_INDEX_URL=CPU_INDEX)
    assert len(calls) == 1 and f"--extra-index-url {CPU_INDEX} -e .[test]" in calls[0]
    assert len(stamps(root)) == 1
    assert set_up(root, STUDIO_TORCH_INDEX_URL=CPU_INDEX) == calls  # installed: a second run only checks


def test_without_a_torch_index_the_set_up_is_as_before(tmp_path):
    root = project_copy(tmp_path / "project")
    calls = set_up(root)
    assert len(calls) == 1 and "--extra-index-url" not in calls[0] and calls[0].endswith("-e .[test]")
    today = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    assert stamps(root) == [f".installed-{today}"]  # existing virtualenvs are not reinstalled
    calls = set_up(root, STUDIO_TORCH_INDEX_URL=CPU_INDEX)  # another torch build asked for: pip runs again
    assert len(calls) == 2 and CPU_INDEX in calls[1] and len(stamps(root)) == 1
