"""The canvas's wire ops, applied by the server's own code, give exactly the mask the clients show: every tool,
undo and redo of the studio (tests/frontend/wire_scenario.mjs) goes through ``validate_op`` + ``apply_ops``."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SCENARIO = Path(__file__).resolve().parent / "wire_scenario.mjs"


def test_server_applies_the_clients_ops_to_the_same_pixels():
    from webapp.datasets.masks import apply_ops, validate_op

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the frontend tests need Node 20+")
    result = subprocess.run([node, str(SCENARIO)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    session = json.loads(result.stdout)
    size = (session["width"], session["height"])
    ops = [validate_op(op, size, num_classes=4) for op in session["ops"]]
    assert {op["op"] for op in ops} == {"runs"} and len(ops) > 8  # changes split into several ops
    client = np.array(session["mask"], dtype=np.uint8).reshape(session["height"], session["width"])
    server = apply_ops(np.zeros_like(client), ops)
    assert len(np.unique(client)) == 4  # every class painted somewhere: the scenario is not trivial
    assert (server == client).all(), np.argwhere(server != client)[:10].tolist()
