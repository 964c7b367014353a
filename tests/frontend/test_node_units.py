"""Runs the frontend's pure-module unit tests (`node --test`) as part of the one pytest command."""

import shutil
import subprocess
from pathlib import Path

import pytest

TEST_DIR = Path(__file__).resolve().parent


@pytest.mark.parametrize("test_file", sorted(p.name for p in TEST_DIR.glob("*.test.mjs")))
def test_node_unit_file(test_file: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the frontend unit tests need Node 20+")
    result = subprocess.run(
        [node, "--test", str(TEST_DIR / test_file)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"node --test {test_file} failed:\n{result.stdout}\n{result.stderr}"
