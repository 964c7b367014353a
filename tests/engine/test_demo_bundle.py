"""The SHIPPED demo bundle (demo/): it loads on CPU through the public API, its segmentation branch segments held-out
renders like the renderer's true masks, and every shipped vector moves its parts the right way on fresh samples.

As cheap as the check allows: 4 held-out renders go through the encoder alone (no optimisation-based inversion) and
are segmented once, then once more per vector, plus one annotated latent: 29 segmentations. The segmentation branch
is the expensive part on a CPU (10 members at 128²: about 16 GMAC and 1.7 GB of fresh activations per image, 1.5–4 s
on the 2-core development machine), so the face count is what sets this file's time. Thresholds are the figures
measured by ``python -m editor_core.training.demo_bundle evaluate`` (docs/demo-model.md) minus a margin for the
4-face estimate.
"""
from __future__ import annotations

import json

import pytest
import torch

from editor_core.bundle import DEMO_BUNDLE, load_bundle
from editor_core.domains import toonface
from editor_core.domains.toonface import toonface_schema
from editor_core.editing import resize_mask
from editor_core.metrics import mean_iou
from editor_core.training.demo_bundle.edits import DEMO_EDITS
from editor_core.vectors import combined_delta

BUNDLE_FILES = ("generator.safetensors", "encoder.safetensors", "segmentation.safetensors", "annotations.safetensors",
                "bundle.json")
MAX_BUNDLE_BYTES = 50 * 2 ** 20
# Held-out faces for these tests: a seed that no pipeline stage draws from (see demo_bundle.RENDER_SEEDS).
TEST_RENDER_SEED = 777
TEST_FACES = 4
# Measured (docs/demo-model.md, bundle of generator b2a6ced52474cc75): encoder-only inversions of 200 held-out renders
# segment at mIoU 0.509 (0.522 on these 4 faces); the 16 annotated latents are fitted at mIoU 0.944 (0.960 for the
# first).
ENCODER_ONLY_MIOU_FLOOR = 0.45
ANNOTATION_FIT_FLOOR = 0.90
# Measured on these 4 faces (mode 1, scale 1; the vectors of 2026-12-03): every vector moves its statistic the right
# way on all 4 except shorter hair, on 2 (two faces gain 22 and 70 px of hair, the others lose 89 and 1 075 px); on
# 64 encoder-only inversions of fresh renders, 0.73 (shorter hair) to 1.00 of the faces (demo/evaluation.json,
# "direction"). So: at least half of the faces, and the summed change the right way.
DIRECTION_MIN_AGREEING = 2

missing = [name for name in BUNDLE_FILES if not (DEMO_BUNDLE / name).is_file()]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"demo/ has no complete bundle yet (missing {missing}); "
                                                      f"build it with python -m editor_core.training.demo_bundle all")


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return load_bundle()


def segment(bundle, ws: torch.Tensor) -> torch.Tensor:
    """Labels ``[B, h, w]`` of W+ latents: the segmentation branch on the generator's features, one latent at a time
    (each full-resolution activation of the branch is [2560, 128, 128] floats, 168 MB, per image)."""
    labels = []
    with torch.no_grad():
        for w in ws.split(1):
            _, features = bundle.generator.synthesis(w, noise_mode="const", return_features=True)
            labels.append(bundle.segmenter.predict(features).labels)
    return torch.cat(labels)


def test_bundle_loads_on_cpu_with_every_part(bundle):
    G = bundle.generator
    assert G.config.resolution == 128 and next(G.parameters()).device.type == "cpu"
    assert bundle.encoder is not None and bundle.segmenter is not None
    assert bundle.schema == toonface_schema() and bundle.segmenter.config.num_classes == 18
    assert set(bundle.vectors) >= {edit.name for edit in DEMO_EDITS}
    for edit in DEMO_EDITS:
        info = bundle.vectors[edit.name].info
        assert info.description and info.edited_classes == sorted(int(c) for c in edit.classes)
        assert info.scale_range[0] < 1.0 <= info.scale_range[1]
        for suffix in ("before", "after"):
            assert (DEMO_BUNDLE / "thumbnails" / f"{edit.name}_{suffix}.png").is_file()
    annotations = bundle.annotations
    assert len(annotations.latents) == 16 and annotations.schema == toonface_schema()
    assert annotations.meta["source"] == "inverted renders with their true masks"


def test_manifest_matches_the_files_and_the_bundle_fits_the_size_limit():
    manifest = json.loads((DEMO_BUNDLE / "bundle.json").read_text())
    for name, entry in manifest["files"].items():
        assert (DEMO_BUNDLE / name).stat().st_size == entry["bytes"], name
        assert entry["what"] and entry["how"]
    shipped = [p for p in DEMO_BUNDLE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in shipped) <= MAX_BUNDLE_BYTES


def test_annotated_latents_segment_as_annotated(bundle):
    annotations = bundle.annotations
    labels = segment(bundle, annotations.latents[:1])
    truth = resize_mask(annotations.masks[:1], labels.shape[-1])
    assert mean_iou(labels, truth, 18) >= ANNOTATION_FIT_FLOOR


@pytest.fixture(scope="module")
def held_out(bundle):
    """4 fresh renders, their true masks, their encoder-only latents and the segmentation of those."""
    images, masks = toonface.render(toonface.sample_params(TEST_FACES, TEST_RENDER_SEED), 128)
    with torch.no_grad():
        ws = bundle.encoder(images)
    return masks, ws, segment(bundle, ws)


def test_held_out_renders_segment_like_their_true_masks(held_out):
    masks, _, labels = held_out
    assert mean_iou(labels, resize_mask(masks, labels.shape[-1]), 18) >= ENCODER_ONLY_MIOU_FLOOR


@pytest.mark.parametrize("edit", DEMO_EDITS, ids=[edit.name for edit in DEMO_EDITS])
def test_vector_moves_its_parts_the_right_way_on_fresh_faces(bundle, held_out, edit):
    _, ws, before = held_out
    delta = combined_delta([bundle.vectors[edit.name]], [1.0], bundle.generator_id)   # mode 1: w + ε·δ
    after = segment(bundle, ws + delta)
    change = edit.effect(after) - edit.effect(before)
    agreeing = int((change > 0).sum())
    assert float(change.sum()) > 0, f"'{edit.name}' moved its {edit.statistic} the wrong way overall: {change.tolist()}"
    assert agreeing >= DIRECTION_MIN_AGREEING, (
        f"'{edit.name}' moved its {edit.statistic} of {list(edit.measured_classes)} the right way on only "
        f"{agreeing} of {TEST_FACES} fresh faces")


def test_unit_scale_factor_makes_scale_one_the_renderers_edit(bundle):
    """The vectors stage's calibration: the factor it returns makes the vector change its edit's mask statistic by
    the share it reports of the true change (read again here), nearer the whole change than the raw mean δW+ does;
    a vector that does nothing is left as it is."""
    from editor_core.editing import render_and_segment
    from editor_core.training.demo_bundle.stages import unit_scale_factor

    edit = next(e for e in DEMO_EDITS if e.name == "bigger_nose")
    annotations = bundle.annotations
    params = {name: torch.tensor(values[:2]) for name, values in annotations.meta["render_params"].items()}
    ws, before = annotations.latents[:2], annotations.masks[:2]
    after = toonface.render(edit.applied_to(params), before.shape[-1])[1]
    models = bundle.editing_models(torch.nn.Identity())
    delta = bundle.vectors[edit.name].delta

    factor, reached = unit_scale_factor(models, ws, delta, edit, before, after, rounds=2)
    size = models.seg_resolution
    true_change = edit.effect(resize_mask(after, size)) - edit.effect(resize_mask(before, size))
    unedited = edit.effect(render_and_segment(models, ws)[1])

    def share(scale: float) -> float:
        return float(torch.nanmedian((edit.effect(render_and_segment(models, ws + scale * delta)[1]) - unedited)
                                     / true_change))

    assert reached == pytest.approx(share(factor), abs=1e-3)
    assert abs(reached - 1) < abs(share(1.0) - 1) or factor == 1.0
    assert unit_scale_factor(models, ws, torch.zeros_like(delta), edit, before, after) == (1.0, None)
