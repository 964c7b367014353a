"""The batch command line, run in-process on a tiny bundle the test writes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from editor_core.bundle import AnnotatedSamples, load_bundle, load_latents
from editor_core.checkpoints import save_generator
from editor_core.cli import main
from editor_core.images import mask_to_png, png_to_mask
from editor_core.schema import LabelSchema
from editor_core.segmentation import save_segmentation
from editor_core.vectors import EditVector

SCHEMA = LabelSchema(name="tiny", class_names=("dark", "mid", "bright"),
                     colours=((20, 20, 20), (120, 120, 120), (230, 230, 230)))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_generator, tiny_segmenter, tiny_annotations, perceptual_vgg):
    folder = tmp_path_factory.mktemp("bundle")
    save_generator(folder / "generator.safetensors", tiny_generator)
    save_segmentation(folder / "segmentation.safetensors", tiny_segmenter, SCHEMA)
    ws, masks = tiny_annotations
    AnnotatedSamples(ws, masks, SCHEMA).save(folder / "annotations.safetensors")
    return folder


def run(*argv) -> int:
    return main([str(a) for a in argv])


def test_bundle_loads_every_part(bundle):
    loaded = load_bundle(bundle)
    assert loaded.segmenter is not None and loaded.schema == SCHEMA
    assert loaded.annotations.latents.shape[0] == 16 and loaded.encoder is None and loaded.vectors == {}


def test_sample_segment_edit_apply_refine(bundle, tmp_path, capsys):
    models = ["--bundle", bundle, "--device", "cpu"]
    assert run("sample", *models, "--seeds", "0-1", "--out", tmp_path / "s", "--npy") == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "seed0000.latent.npy", "seed0000.latent.safetensors", "seed0000.mask.png", "seed0000.png",
        "seed0001.latent.npy", "seed0001.latent.safetensors", "seed0001.mask.png", "seed0001.png"]
    assert Image.open(tmp_path / "s" / "seed0000.png").size == (32, 32)

    latent = tmp_path / "s" / "seed0000.latent.safetensors"
    assert run("segment", *models, latent, "--out", tmp_path / "seg") == 0
    mask = png_to_mask(tmp_path / "seg" / "seed0000.mask.png", SCHEMA)
    assert torch.equal(mask, png_to_mask(tmp_path / "s" / "seed0000.mask.png", SCHEMA))

    edited = mask.clone()
    edited[8:20, 8:20] = 2
    (tmp_path / "edited.png").write_bytes(mask_to_png(edited, SCHEMA))
    assert run("edit", *models, "--latent", latent, "--mask", tmp_path / "edited.png", "--steps", "3",
               "--name", "brighter", "--out", tmp_path / "e") == 0
    vector = EditVector.load(tmp_path / "e" / "brighter.vector.safetensors")
    assert vector.info.name == "brighter" and 2 in vector.info.edited_classes
    edited_ws = load_latents(tmp_path / "e" / "edited.latent.safetensors")
    torch.testing.assert_close(edited_ws[0], load_latents(latent)[0] + vector.delta)

    vector_path = tmp_path / "e" / "brighter.vector.safetensors"
    assert run("apply", *models, "--latent", latent, "--vector", f"{vector_path}:2", "--out", tmp_path / "a") == 0
    applied = load_latents(tmp_path / "a" / "applied.latent.safetensors")
    torch.testing.assert_close(applied[0], load_latents(latent)[0] + 2 * vector.delta)
    assert run("refine", *models, "--latent", latent, "--vector", vector_path, "--steps", "2",
               "--out", tmp_path / "r") == 0
    assert (tmp_path / "r" / "refined.png").is_file()


def test_train_seg_writes_a_loadable_branch(bundle, tmp_path, capsys):
    out = tmp_path / "seg.safetensors"
    assert run("train-seg", "--bundle", bundle, "--annotations", bundle / "annotations.safetensors",
               "--ensemble", "2", "--steps", "20", "--out", out) == 0
    assert "features kept" in capsys.readouterr().out
    assert run("train-seg", "--bundle", bundle, "--annotations", bundle / "annotations.safetensors",
               "--ensemble", "2", "--steps", "2", "--feature-cache-mb", "0",
               "--out", tmp_path / "uncached.safetensors") == 0
    assert "features synthesised each step" in capsys.readouterr().out
    from editor_core.segmentation import load_segmentation

    ensemble, schema, meta = load_segmentation(out)
    assert ensemble.config.ensemble_size == 2 and schema == SCHEMA and meta["annotated_samples"] == 16


def test_errors_are_one_clear_line(bundle, tmp_path, capsys):
    models = ["--bundle", bundle, "--device", "cpu"]
    assert run("sample", *models, "--seeds", "x", "--out", tmp_path) == 2
    assert "expected numbers and ranges" in capsys.readouterr().err
    assert run("apply", *models, "--latent", tmp_path / "missing.safetensors", "--vector", "v",
               "--out", tmp_path) == 2
    assert "error:" in capsys.readouterr().err
    (tmp_path / "not-a-mask.png").write_bytes(b"garbage")
    torch.save({}, tmp_path / "dummy.pt")
    assert run("sample", "--bundle", tmp_path, "--out", tmp_path / "o") == 2
    assert "no generator.safetensors" in capsys.readouterr().err
    assert run("train-seg", *models, "--annotations", bundle / "annotations.safetensors", "--feature-cache-mb", "-1",
               "--out", tmp_path / "seg.safetensors") == 2
    assert "--feature-cache-mb must be ≥ 0" in capsys.readouterr().err


def test_module_entry_point_prints_help():
    completed = subprocess.run([sys.executable, "-m", "editor_core", "--help"], capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert completed.returncode == 0
    for name in ("sample", "embed", "segment", "edit", "apply", "refine", "train-seg", "train-encoder"):
        assert name in completed.stdout


def test_embed_and_edit_default_to_the_studio_settings():
    """One default each: the command line embeds and edits as the studio's worker does (EmbedConfig, EditConfig)."""
    from editor_core.cli import build_parser
    from editor_core.editing import EditConfig
    from editor_core.inversion import EmbedConfig

    parser = build_parser()
    assert parser.parse_args(["embed", "a.png", "--out", "o"]).steps == EmbedConfig().steps
    edit = parser.parse_args(["edit", "--latent", "w.safetensors", "--mask", "m.png", "--out", "o"])
    assert (edit.steps, edit.lr) == (EditConfig().steps, EditConfig().lr)


@pytest.mark.parametrize("command", [None, "sample", "embed", "segment", "edit", "apply", "refine", "train-seg",
                                     "train-encoder", "fetch-weights"])
def test_help_is_plain_text_without_restructuredtext_markup(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main(([command] if command else []) + ["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "usage: python -m editor_core" in shown
    assert "``" not in shown and ":func:" not in shown and ":class:" not in shown, shown
