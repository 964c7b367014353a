"""bench/edit_truth.py on the shipped demo bundle, in its smallest case (one face, one parameter, a few steps), with
and without pivotal tuning, and its argument checks. CPU; skips without the bundle or the LPIPS-VGG weights."""
from __future__ import annotations

import json

import pytest

from bench import edit_truth
from editor_core.bundle import DEMO_BUNDLE


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from editor_core.perceptual import BackboneWeightsMissing, find_backbone_weights

    try:
        find_backbone_weights("vgg")
    except BackboneWeightsMissing as missing:
        pytest.skip(f"LPIPS-VGG backbone weights are not fetched ({missing}); run bin/fetch-weights")
    if not (DEMO_BUNDLE / "segmentation.safetensors").is_file() or not (DEMO_BUNDLE / "encoder.safetensors").is_file():
        pytest.skip(f"{DEMO_BUNDLE} holds no complete demo bundle")
    out = tmp_path_factory.mktemp("edit_truth")
    edit_truth.main(["--bundle", str(DEMO_BUNDLE), "--device", "cpu", "--faces", "1", "--params", "hair_length",
                     "--magnitudes", "0.4", "--edit-steps", "6", "--embed-steps", "2", "--vector-faces", "1",
                     "--vector-refine", "2", "--vector-pti", "pti", "--spread-faces", "0", "--edit-batch", "2",
                     "--sheet-rows", "2", "--sheet-dir", str(out), "--variant", "studio",
                     "--variant", "pti:pti_steps=3", "--json", str(out / "report.json")])
    return out, json.loads((out / "report.json").read_text())


def test_the_segmentation_follows_the_paint_more_with_every_few_steps(report):
    _out, figures = report
    studio = figures["variants"]["studio"]
    assert studio["overall"]["edits"] == 2                      # longer and shorter hair
    curve = studio["follow_curve"]                              # the live follow score, before each update
    assert len(curve) == 6 and curve[-1] > curve[0] + 0.1
    overall = studio["overall"]
    assert overall["follow"]["median"] > overall["follow_before"]["median"]
    assert overall["follow_painted"]["median"] > overall["follow_painted_before"]["median"]
    for row in studio["rows"]:
        assert row["painted_pixels"] > 0 and row["roi_pixels"] >= row["painted_pixels"]
        assert 0 <= row["follow"] <= 1 and 0 <= row["truth"] <= 1 and row["outside_psnr"] > 20


def test_the_report_holds_the_inversion_and_the_contact_sheet(report):
    out, figures = report
    inversion = figures["inversion"]["2"]
    assert inversion["psnr"]["n"] == 1 and 0 < inversion["parts_at_least_0.5"] <= 1
    assert "hair" in inversion["per_class_iou"]
    assert figures["seeds"]["edit_faces"] == edit_truth.EDIT_FACES_SEED
    assert (out / "edit_truth_studio.png").is_file()


def test_the_pivotal_variant_edits_on_the_tuned_generator(report):
    out, figures = report
    pti = figures["variants"]["pti"]
    assert pti["pivotal"]["config"]["steps"] == 3 and pti["pivotal"]["seconds_per_image"] > 0
    tuned, inverted = pti["pivotal"]["inversion"], figures["inversion"]["2"]
    assert tuned["psnr"]["median"] > inverted["psnr"]["median"]          # the tuned copy draws the face closer
    assert tuned["lpips"]["median"] < inverted["lpips"]["median"]
    assert pti["overall"]["edits"] == 2 and pti["follow_curve"][-1] > pti["follow_curve"][0]
    assert (out / "edit_truth_pti.png").is_file()
    on_tuned, on_base = figures["vectors_pti"], figures["vectors"]
    assert on_tuned["variant"] == "pti" and on_tuned["faces"] == on_base["faces"] == 1
    shipped = {name for name, entry in on_base.items() if isinstance(entry, dict) and "param" in entry}
    assert shipped and all(on_tuned[name]["moved"]["n"] == 1 for name in shipped)


def test_the_vectors_are_also_read_after_a_mode_2_refinement(report):
    _out, figures = report
    vectors = {name: entry for name, entry in figures["vectors"].items() if isinstance(entry, dict)}
    assert vectors and all(entry["refined"]["steps"] == 2 and entry["refined"]["moved"]["n"] == 1
                           and 0 <= entry["refined"]["share_statistic_at_least_0.7"] <= 1
                           for entry in vectors.values())


@pytest.mark.parametrize("argv, message", [
    (["--faces", "0"], "--faces must be ≥ 1"),
    (["--params", "iris_hue"], "not shape parameters"),
    (["--magnitudes", "0.7"], "fractions of a parameter's range"),
    (["--variant", "x:colour=1"], "is not key=value"),
    (["--variant", "x:roi=everything"], "roi must be"),
    (["--variant", "x:lr=-1"], "lr must be > 0"),
    (["--variant", "a", "--variant", "a"], "names must differ"),
    (["--faces", "1", "--spread-faces", "2"], "cannot exceed"),
    (["--variant", "x:pti=0,pti_steps=5"], "which pti=0 turns off"),
    (["--variant", "x:pti_lr=0"], "lr must be > 0"),
    (["--variant", "a", "--vector-pti", "a"], "--vector-pti must name a variant with pti=1"),
    (["--vectors-from", "/nonexistent-vectors"], "--vectors-from: no *.safetensors"),
    (["--vectors-from", str(DEMO_BUNDLE / "vectors"), "--vector-faces", "0"], "give at least one"),
    (["--vector-refine", "-1"], "--vector-refine must be ≥ 0"),
])
def test_bad_arguments_are_refused_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit):
        edit_truth.parse_args(argv)
    assert message in capsys.readouterr().err


def test_variants_set_the_edit_config_and_the_bench_options():
    args = edit_truth.parse_args(["--edit-steps", "9", "--variant", "old:roi=classes,lr=0.05",
                                  "--variant", "enc:encoder=1,embed_steps=300,dilation_iterations=1"])
    old, enc = args.variants
    assert old.whole_classes and old.config.lr == 0.05 and old.config.steps == 9
    assert enc.encoder and enc.embed_steps == 300 and enc.config.dilation_iterations == 1
    assert old.pivotal is None and enc.pivotal is None


def test_pti_variants_set_the_pivotal_config():
    args = edit_truth.parse_args(["--variant", "on:pti=1", "--variant", "loc:pti_steps=50,pti_locality_weight=0.1"])
    on, loc = args.variants
    assert on.pivotal == edit_truth.PivotalConfig()
    assert loc.pivotal.steps == 50 and loc.pivotal.locality_weight == 0.1
