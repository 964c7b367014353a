"""bench/miou_shift_ceiling.py: unshifted masks score 1, larger shifts score less, shifts never wrap around."""
from __future__ import annotations

import json

import pytest
import torch

from bench import miou_shift_ceiling
from editor_core.domains.toonface import toonface_schema


def test_the_score_falls_as_the_shift_grows_and_starts_at_one(tmp_path):
    path = tmp_path / "ceiling.json"
    miou_shift_ceiling.main(["--renders", "4", "--size", "32", "--supersample", "2", "--shifts", "0", "1", "2", "4",
                             "--json", str(path)])
    report = json.loads(path.read_text())
    assert [entry["pixels"] for entry in report["shifts"]] == [0.0, 0.5, 1.0, 2.0]
    scores = [entry["miou"] for entry in report["shifts"]]
    assert scores[0] == 1.0
    assert scores[1] > scores[2] > scores[3] > 0
    assert set(report["shifts"][0]["per_class"]) == set(toonface_schema().class_names)


def test_a_shift_repeats_the_edge_instead_of_wrapping():
    mask = torch.arange(16).reshape(4, 4)
    down = miou_shift_ceiling._shifted(mask, (1, 0), 1)
    assert down[0].tolist() == mask[0].tolist() and down[1:].tolist() == mask[:3].tolist()
    left = miou_shift_ceiling._shifted(mask, (0, -1), 2)
    assert left[:, :2].tolist() == mask[:, 2:].tolist() and (left[:, 2:] == mask[:, 3:]).all()


@pytest.mark.parametrize("bad, message", [(["--renders", "0"], "--renders must be at least 1"),
                                          (["--shifts", "1", "-1"], "--shifts must be >= 0")])
def test_bad_arguments_are_refused(bad, message, capsys):
    with pytest.raises(SystemExit) as refused:
        miou_shift_ceiling.parse_args(bad)
    assert refused.value.code == 2 and message in capsys.readouterr().err
