"""The demo-bundle pipeline (editor_core.training.demo_bundle) end to end on a tiny random 32² generator, and the
render-parameter regressor / Fréchet distance it measures with. CPU, tiny counts; LPIPS-alex weights required."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
import tarfile

import pytest
import torch

from editor_core.bundle import AnnotatedSamples, load_bundle
from editor_core.checkpoints import read_checkpoint, save_generator
from editor_core.domains import toonface
from editor_core.domains.toonface import toonface_schema
from editor_core.encoder import Encoder, EncoderConfig, load_encoder
from editor_core.networks import Generator
from editor_core.perceptual import BackboneWeightsMissing, find_backbone_weights
from editor_core.training.demo_bundle.cli import main
from editor_core.training.demo_bundle.edits import (DEMO_EDITS, GroundTruthEdit, class_elevation, class_width,
                                                    transfer_overrides)
from editor_core.training.demo_bundle.stages import DemoPipeline, PipelineConfig
from editor_core.training.param_regressor import (ParamRegressor, RegressorConfig, frechet_distance,
                                                  load_param_regressor, regression_targets, save_param_regressor,
                                                  target_names)
from tests.engine.conftest import TINY_GENERATOR, run_device_script

TINY_PIPELINE = PipelineConfig(
    encoder_steps=4, encoder_minutes=10.0, encoder_batch=2, encoder_chunk=2, encoder_check_renders=2,
    encoder_widths=(("channel_base", 256), ("channel_max", 32), ("pyramid_channels", 32), ("head_channels", 32)),
    regressor_steps=3, regressor_batch=4, regressor_check_renders=8, annotated_samples=4, annotate_steps=2,
    seg_ensemble=2, seg_hidden=(16, 8), seg_steps=4, vector_sources=2, vector_steps=2, calibration_faces=3,
    calibration_embed_steps=2, eval_renders=4,
    transfer_renders=3, eval_embed_steps=2, refine_steps=1, direction_samples=3, fd_samples=6, embed_batch=8,
    forward_batch=4, lpips_net="alex")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A bundle folder with every stage run once on a tiny random generator."""
    try:
        find_backbone_weights("alex")
    except BackboneWeightsMissing as missing:
        pytest.skip(f"LPIPS-alex backbone weights are not fetched ({missing}); run bin/fetch-weights")
    root = tmp_path_factory.mktemp("demo")
    out, work = root / "bundle", root / "work"
    torch.manual_seed(0)
    G = Generator(TINY_GENERATOR).eval()
    with torch.no_grad():   # an untrained generator's w_avg is zero; give it the real average
        G.mapping.w_avg.copy_(G.mapping(torch.randn(500, G.z_dim))[:, 0].mean(dim=0))
    save_generator(out / "generator.safetensors", G)
    lines: list[str] = []
    pipeline = DemoPipeline(out, work, TINY_PIPELINE, torch.device("cpu"), figures=root / "figures",
                            log=lines.append)
    for stage in ("encoder", "regressor", "annotate", "segmentation", "vectors", "calibrate", "evaluate", "figures"):
        getattr(pipeline, f"{stage}_stage")()
    return pipeline, lines


def test_every_stage_writes_a_bundle_that_load_bundle_reads(built):
    pipeline, _ = built
    bundle = load_bundle(pipeline.out)
    assert bundle.encoder is not None and bundle.segmenter is not None
    assert bundle.schema == toonface_schema()
    assert sorted(bundle.vectors) == sorted(edit.name for edit in DEMO_EDITS)
    for edit in DEMO_EDITS:
        info = bundle.vectors[edit.name].info
        assert info.edited_classes == sorted(int(c) for c in edit.classes)
        assert info.description == edit.description and info.source["param"] == edit.param
        for suffix in ("before", "after"):
            assert (pipeline.out / "thumbnails" / f"{edit.name}_{suffix}.png").is_file()
    annotations = bundle.annotations
    assert annotations.latents.shape == (4, bundle.generator.num_ws, bundle.generator.w_dim)
    assert annotations.meta["source"] == "inverted renders with their true masks"
    renders = toonface.sample_params(4, annotations.meta["render_seed"])
    assert torch.equal(annotations.masks, toonface.render(renders, 32)[1]), "annotations are the renders' true masks"
    assert annotations.meta["render_params"]["smile"] == renders["smile"].tolist()
    # Shipped in fp16 where the stage chose it; the generator's fingerprint ties every part together.
    assert read_checkpoint(pipeline.out / "segmentation.safetensors")[0]["input_conv.weight"].dtype == torch.float16
    assert read_checkpoint(pipeline.out / "encoder.safetensors")[2]["generator_fingerprint"] == bundle.generator_id


def test_evaluation_report_manifest_and_figures(built):
    pipeline, lines = built
    report = json.loads((pipeline.out / "evaluation.json").read_text())
    assert report["inversion"]["renders"] == 4
    assert 0 <= report["segmentation"]["optimised"]["miou"] <= 1
    assert set(report["segmentation"]["optimised"]["per_class"]) == set(toonface_schema().class_names)
    assert math.isfinite(report["frechet"]["samples_vs_renders"]) and report["frechet"]["samples_vs_renders"] > 0
    for edit in DEMO_EDITS:
        entry = report["transfer"][edit.name]
        assert set(entry) == {"mode1", "mode2", "unedited", "truth"}
        assert 0 <= entry["mode1"]["direction"] <= 1 and 0 <= entry["truth"]["direction"] <= 1
        assert entry["unedited"]["direction"] == 0.0 and entry["unedited"]["outside_change"] == 0.0
        for faces in ("samples", "encoded_renders"):
            assert 0 <= report["direction"][faces][edit.name] <= 1
    manifest = json.loads((pipeline.out / "bundle.json").read_text())
    for name in ("generator.safetensors", "encoder.safetensors", "segmentation.safetensors",
                 "annotations.safetensors", "vectors/smile.safetensors", "thumbnails/smile_after.png"):
        assert manifest["files"][name]["bytes"] == (pipeline.out / name).stat().st_size
    assert manifest["figures"]["segmentation_miou"] == round(report["segmentation"]["optimised"]["miou"], 4)
    markdown = (pipeline.work / "evaluation.md").read_text()
    assert "| bigger_eyes | 1 |" in markdown and "| bigger_eyes | 2 |" in markdown
    for name in ["demo_samples", "demo_renders", "demo_inversions"] + [f"demo_vec_{e.name}" for e in DEMO_EDITS]:
        assert (pipeline.figures / f"{name}.png").is_file()


def test_stages_skip_existing_outputs_and_the_encoder_resumes(built):
    pipeline, lines = built
    encoder_file = pipeline.out / "encoder.safetensors"
    stamp = encoder_file.stat().st_mtime_ns
    pipeline.encoder_stage()
    assert encoder_file.stat().st_mtime_ns == stamp and "skipped" in lines[-1]
    # --force with a larger step budget continues from the checkpointed state (4 steps) instead of restarting.
    longer = DemoPipeline(pipeline.out, pipeline.work, dataclasses.replace(TINY_PIPELINE, encoder_steps=6),
                          torch.device("cpu"), log=lines.append)
    longer.encoder_stage(force=True)
    assert read_checkpoint(encoder_file)[2]["steps"] == 6
    assert any(line.startswith("encoder: step 6") for line in lines)
    assert not any(line.startswith("encoder: step 2") for line in lines[-4:])


def test_encoder_stage_starts_from_an_earlier_encoder(built, tmp_path):
    pipeline, _ = built
    earlier = load_encoder(pipeline.out / "encoder.safetensors", pipeline.generator)
    lines: list[str] = []
    out = tmp_path / "bundle"
    out.mkdir()
    shutil.copyfile(pipeline.out / "generator.safetensors", out / "generator.safetensors")
    started = DemoPipeline(out, tmp_path / "work", dataclasses.replace(TINY_PIPELINE, encoder_steps=1),
                           torch.device("cpu"), log=lines.append, encoder_init=pipeline.out / "encoder.safetensors")
    initialised = Encoder(earlier.config)
    started._initialise_encoder(initialised)
    for name, tensor in earlier.state_dict().items():
        assert torch.equal(initialised.state_dict()[name], tensor.float()), name
    started.encoder_stage()
    encoder_meta = read_checkpoint(out / "encoder.safetensors")[2]
    assert encoder_meta["initialised_from"] == str(pipeline.out / "encoder.safetensors")
    assert any(line.startswith("encoder: starting from") for line in lines)

    narrower = Encoder(EncoderConfig.for_generator(pipeline.generator, channel_max=8))
    with pytest.raises(ValueError, match="another architecture"):
        started._initialise_encoder(narrower)


def test_command_line_refuses_another_generator_in_the_bundle(built, tmp_path):
    pipeline, _ = built
    other = Generator(TINY_GENERATOR)
    save_generator(tmp_path / "other.safetensors", other)
    with pytest.raises(ValueError, match="already holds another generator"):
        main(["annotate", "--generator", str(tmp_path / "other.safetensors"), "--out", str(pipeline.out),
              "--device", "cpu"])


def test_pipeline_config_rejects_non_positive_budgets():
    with pytest.raises(ValueError, match="encoder_minutes"):
        PipelineConfig(encoder_minutes=0)
    with pytest.raises(ValueError, match="vector_roi"):
        PipelineConfig(vector_roi="everything")


@pytest.mark.parametrize("option", [["--vector-roi", "everything"], ["--calibration-faces", "0"],
                                    ["--vector-steps", "0"]])
def test_command_line_refuses_bad_vector_options_with_a_message(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["vectors", "--out", str(tmp_path), *option])
    assert refused.value.code == 2 and option[0].lstrip("-").split("-")[-1] in capsys.readouterr().err


# -- the ground-truth edits --------------------------------------------------------------------------------------------


def test_every_demo_edit_moves_its_statistic_on_the_renderer_truth():
    overrides = transfer_overrides(4, seed=5)
    params = toonface.sample_params(4, 5)
    for name, value in overrides.items():
        params = toonface.with_param(params, name, value)
    _, masks = toonface.render(params, 96)
    for edit in DEMO_EDITS:
        _, edited = toonface.render(edit.applied_to(params), 96)
        assert bool((edit.effect(edited) > edit.effect(masks)).all()), edit.name


def test_mask_statistics():
    masks = torch.zeros(2, 8, 8, dtype=torch.long)
    masks[0, 6, 2:5] = 3      # a bar 3 wide near the bottom
    masks[1, 1, 1:7] = 3      # a bar 6 wide near the top
    assert class_width(masks, [3]).tolist() == [3.0, 6.0]
    assert class_elevation(masks, [3]).tolist() == [2.0, 7.0]
    assert math.isnan(float(class_elevation(masks, [4])[0]))


def test_ground_truth_edit_validation():
    with pytest.raises(ValueError, match="before/after"):
        GroundTruthEdit("x", "eye_size", 0.5, 1.0, (8,), (8,), "area", 1, "")
    with pytest.raises(ValueError, match="statistic"):
        GroundTruthEdit("x", "eye_size", 0.8, 1.0, (8,), (8,), "volume", 1, "")


# -- the parameter regressor and the Fréchet distance ------------------------------------------------------------------


def test_regression_targets_scale_ranges_and_put_hues_on_the_circle():
    params = toonface.sample_params(16, 3)
    targets = regression_targets(params)
    names = target_names()
    assert targets.shape == (16, len(names)) and "noise_seed" not in " ".join(names)
    assert float(targets.min()) >= -1 and float(targets.max()) <= 1
    hue_wrapped = toonface.with_param(params, "iris_hue", 0.0)
    hue_full = toonface.with_param(params, "iris_hue", 1.0)
    column = names.index("iris_hue.cos")
    assert torch.allclose(regression_targets(hue_wrapped)[:, column:column + 2],
                          regression_targets(hue_full)[:, column:column + 2], atol=1e-6)
    eye = names.index("eye_size")
    assert torch.allclose(regression_targets(toonface.with_param(params, "eye_size", 1.3))[:, eye], torch.ones(16))


def test_frechet_distance_matches_the_closed_form():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = torch.Generator().manual_seed(0)
    a = torch.randn(400, 5, generator=rng, dtype=torch.float64) @ torch.randn(5, 5, generator=rng, dtype=torch.float64)
    b = torch.randn(300, 5, generator=rng, dtype=torch.float64) * 2 + 1
    cov_a, cov_b = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    cross = scipy_linalg.sqrtm(cov_a @ cov_b).real
    expected = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + float((cov_a + cov_b - 2 * cross).trace())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :4])


def test_regressor_file_round_trip(tmp_path):
    regressor = ParamRegressor(RegressorConfig(resolution=32, num_targets=len(target_names()))).eval()
    save_param_regressor(tmp_path / "r.safetensors", regressor, {"r2_mean": 0.5})
    loaded = load_param_regressor(tmp_path / "r.safetensors")
    images = toonface.render(toonface.sample_params(2, 0), 32)[0]
    assert torch.allclose(loaded.features(images), regressor.features(images))
    assert loaded(images).shape == (2, len(target_names()))
    with pytest.raises(ValueError, match=r"images \[B, 3, 32, 32\]"):
        loaded(images[:, :, :16, :16])


def test_a_regressor_copied_from_another_bundle_is_adopted_and_recorded(built, tmp_path):
    # It sees renders only, so a new generator's bundle can keep the old one (its Fréchet distances stay comparable).
    pipeline, _ = built
    out = tmp_path / "bundle"
    out.mkdir()
    torch.manual_seed(1)
    save_generator(out / "generator.safetensors", Generator(TINY_GENERATOR).eval())
    shutil.copy(pipeline.out / "param_regressor.safetensors", out)
    lines: list[str] = []
    DemoPipeline(out, tmp_path / "work", TINY_PIPELINE, torch.device("cpu"), log=lines.append).regressor_stage()
    assert "skipped" in lines[-1]
    ours, theirs = (json.loads((folder / "bundle.json").read_text()) for folder in (out, pipeline.out))
    assert ours["files"]["param_regressor.safetensors"] == theirs["files"]["param_regressor.safetensors"]
    assert ours["figures"]["regressor_r2_mean"] == theirs["figures"]["regressor_r2_mean"]

    other_size = ParamRegressor(RegressorConfig(resolution=64, num_targets=len(target_names())))
    save_param_regressor(out / "param_regressor.safetensors", other_size, {"created": "now", "r2_mean": 0.0})
    with pytest.raises(ValueError, match="regresses 64² renders, not this generator's 32²"):
        DemoPipeline(out, tmp_path / "work", TINY_PIPELINE, torch.device("cpu"), log=lines.append).regressor_stage()


def test_device_script_runs_stages_on_the_carried_bundle_and_sends_back_what_they_finished(tmp_path):
    # bin/device-build-bundle on CPU with a tiny generator: the regressor stage runs, the annotate stage fails (no
    # encoder yet), and the bundle comes back with the regressor in it all the same.
    seed, carry, out = tmp_path / "seed", tmp_path / "carry", tmp_path / "out"
    for folder in (seed, carry, out):
        folder.mkdir()
    torch.manual_seed(2)
    save_generator(seed / "generator.safetensors", Generator(TINY_GENERATOR).eval())
    with tarfile.open(carry / "bundle.tar.part-aa", "w") as archive:
        archive.add(seed / "generator.safetensors", arcname="generator.safetensors")
    done = run_device_script("device-build-bundle", str(carry), "regressor,annotate", "--regressor-steps", "1",
                             "--device", "cpu", out=out, cwd=tmp_path)
    assert done.returncode != 0 and "encoder" in done.stdout + done.stderr
    returned = tmp_path / "returned"
    returned.mkdir()
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in sorted(out.glob("bundle.tar.part-*"))))) \
            as archive:
        archive.extractall(returned, filter="data")
    assert {p.name for p in returned.iterdir()} == {"generator.safetensors", "param_regressor.safetensors",
                                                    "bundle.json"}
    assert "== regressor done" in (out / "stages.log").read_text()

    usage = run_device_script("device-build-bundle", str(seed), "regressor", out=out, cwd=tmp_path)
    assert usage.returncode == 2 and "has no bundle.tar.part-*" in usage.stderr


def test_annotated_samples_round_trip_keeps_the_meta(built):
    pipeline, _ = built
    samples = AnnotatedSamples.load(pipeline.out / "annotations.safetensors")
    assert samples.meta["inversion"]["steps"] == TINY_PIPELINE.annotate_steps
    assert len(samples.meta["inversion"]["psnr"]) == len(samples.latents)


def test_miou_factor_study_scores_like_the_evaluate_stage(built, tmp_path):
    """bench/demo_miou_factors.py on the tiny bundle: the shipped branch at evaluate's inversion steps scores what
    evaluate reported on the same faces, and every other annotation set trains a branch of its own."""
    from bench.demo_miou_factors import build_parser, run

    pipeline, _ = built
    args = build_parser().parse_args([
        "--bundle", str(pipeline.out), "--work", str(tmp_path), "--device", "cpu",
        "--eval-renders", str(TINY_PIPELINE.eval_renders), "--eval-steps", str(TINY_PIPELINE.eval_embed_steps), "1",
        "--annotation-counts", "5", "6", "--aligned-steps", "3"])
    report = run(args, TINY_PIPELINE)
    evaluated = json.loads((pipeline.out / "evaluation.json").read_text())["segmentation"]["optimised"]
    names = ["shipped (4 annotations)", "5 annotations", "6 annotations", "4 annotations, 3-step inversions"]
    assert list(report["miou"]) == names and list(report["training_fit"]) == names
    shipped = report["miou"]["shipped (4 annotations)"][TINY_PIPELINE.eval_embed_steps]
    # evaluate inverts these faces in one batch with the transfer faces: per-image results, up to float rounding.
    assert shipped["miou"] == pytest.approx(evaluated["miou"], abs=5e-3)
    assert set(shipped["per_class"]) == set(evaluated["per_class"])
    for by_steps in report["miou"].values():
        assert sorted(by_steps) == [1, TINY_PIPELINE.eval_embed_steps]
        assert all(0 <= result["miou"] <= 1 for result in by_steps.values())
    assert set(report["inversion"]) == {1, TINY_PIPELINE.eval_embed_steps}


def test_generator_comparison_scores_copies_of_one_generator_alike(built, tmp_path, capsys):
    """bench/generator_compare.py on the tiny bundle: the same generator under two names gets the same figures (the
    renders, steps and sample latents are fixed), the Fréchet floor is reported at the generators' resolution, and
    bad arguments are refused before any work."""
    from bench import generator_compare

    pipeline, _ = built
    copy = tmp_path / "copy.safetensors"
    shutil.copy(pipeline.out / "generator.safetensors", copy)
    report_path = tmp_path / "compare.json"
    generator_compare.main([str(pipeline.out / "generator.safetensors"), str(copy), "--renders", "2", "--steps", "2",
                            "--lpips-resolution", "32", "--fd-samples", "6",
                            "--regressor", str(pipeline.out / "param_regressor.safetensors"),
                            "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    original, copied = report["generators"].values()
    for key in ("inversion_psnr", "inversion_lpips", "fd_samples_vs_renders"):
        assert original[key] == pytest.approx(copied[key], rel=1e-5), key
    assert original["inversion_psnr"]["mean"] > 0 and 0 < original["inversion_lpips"]["mean"] < 1
    assert original["fd_samples_vs_renders"] >= 0 and list(report["renders_vs_renders"]) == ["32"]

    for bad, message in ((["--renders", "0"], "--renders must be at least 1"),
                         (["--fd-samples", "1"], "--fd-samples must be at least 2"),
                         (["--regressor", str(tmp_path / "none.safetensors")], "none.safetensors is not a file")):
        with pytest.raises(SystemExit) as refused:
            generator_compare.parse_args([str(copy), *bad])
        assert refused.value.code == 2 and message in capsys.readouterr().err
