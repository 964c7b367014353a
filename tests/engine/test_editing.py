"""EditGAN's editing modes on a tiny generator with a segmentation branch trained in the test session."""
from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from editor_core.checkpoints import generator_fingerprint
from editor_core.compiled import CompiledPasses
from editor_core.editing import (EditConfig, EditingModels, apply_vectors, changed_classes, dilate, edit_roi,
                                 optimize_edit, prepare_edit, refine_config, refine_vectors, render_and_segment,
                                 resize_mask, warm_up)
from editor_core.vectors import EditVector, EditVectorInfo, VectorGeneratorMismatch


@pytest.fixture(scope="module")
def models(tiny_generator, tiny_segmenter, perceptual_vgg):
    return EditingModels(generator=tiny_generator, segmenter=tiny_segmenter, perceptual=perceptual_vgg,
                         generator_id=generator_fingerprint(tiny_generator))


@pytest.fixture(scope="module")
def latent(tiny_generator):
    with torch.no_grad():
        return tiny_generator.mapping(torch.randn(1, 64, generator=torch.Generator().manual_seed(7)))


def vector(models, seed: int, classes=(1,), name="v", magnitude=0.3) -> EditVector:
    delta = magnitude * torch.randn(models.generator.num_ws, models.generator.w_dim,
                              generator=torch.Generator().manual_seed(seed))
    return EditVector(delta, EditVectorInfo(name=name, generator_id=models.generator_id, edited_classes=list(classes)))


def square_edit(mask: torch.Tensor, label: int, top: int, left: int, size: int) -> torch.Tensor:
    edited = mask.clone()
    edited[:, top:top + size, left:left + size] = label
    return edited


# --- masks and ROI -------------------------------------------------------------------------------------------------


def test_dilate_grows_a_pixel_into_the_release_default_square():
    region = torch.zeros(1, 16, 16, dtype=torch.bool)
    region[0, 8, 8] = True
    grown = dilate(region, kernel=3, iterations=3)
    assert grown.sum() == 49
    assert grown[0, 5:12, 5:12].all()


def test_roi_covers_changed_pixels_and_edited_classes_in_either_mask():
    original = torch.zeros(1, 20, 20, dtype=torch.long)
    original[0, 2:4, 2:4] = 2                       # a class-2 part far from the edit
    edited = original.clone()
    edited[0, 12:14, 12:14] = 1                     # the user paints class 1
    assert changed_classes(original, edited) == [0, 1]
    roi = edit_roi(original, edited, edited_classes=[1], kernel=3, iterations=1)
    assert roi[0, 11:15, 11:15].all() and roi.sum() == 16      # the changed 2×2 block, dilated by one pixel
    roi_with_part = edit_roi(original, edited, edited_classes=[1, 2], kernel=3, iterations=1)
    assert roi_with_part[0, 1:5, 1:5].all()                   # class 2 pixels join the ROI with their dilation


def test_default_roi_is_the_changed_pixels_dilated_not_the_whole_classes_they_touch():
    """Paint that touches the background must not make every background pixel part of the ROI."""
    original = torch.zeros(1, 20, 20, dtype=torch.long)
    original[0, 5:15, 5:15] = 1                     # a face on a background
    edited = original.clone()
    edited[0, 4, 8:12] = 1                          # the face grows by one row into the background
    roi = edit_roi(original, edited, kernel=3, iterations=1)
    assert torch.equal(roi, dilate(original != edited, kernel=3, iterations=1))
    assert roi.sum() == 18


def test_an_explicit_roi_replaces_the_built_one_and_is_checked(models, latent):
    _, original_mask = render_and_segment(models, latent)
    edited = square_edit(original_mask, 2, 8, 8, 4)
    explicit = torch.zeros(1, 32, 32, dtype=torch.bool)
    explicit[0, 4:20, 4:20] = True
    result = optimize_edit(models, latent, original_mask, edited, EditConfig(steps=1), roi=explicit.to(torch.uint8))
    assert torch.equal(result.roi, explicit)
    with pytest.raises(ValueError, match="roi must be"):
        optimize_edit(models, latent, original_mask, edited, EditConfig(steps=1), roi=explicit.float())
    with pytest.raises(ValueError, match="region of interest is empty"):
        optimize_edit(models, latent, original_mask, edited, EditConfig(steps=1), roi=torch.zeros_like(explicit))


def test_a_batch_of_edits_gives_each_image_what_it_gets_alone(models, tiny_generator):
    """Each image's loss is its own (CE over its own ROI, LPIPS/L2 over its own pixels): in a batch of two edits of
    different ROI sizes, each latent gets the gradient it gets alone (the vectors stage edits 8 faces at a time,
    the studio one). Two steps: the first has only the CE term, the second the outside terms too."""
    ws = tiny_generator.mapping(torch.randn(2, 64, generator=torch.Generator().manual_seed(11)))
    _, masks = render_and_segment(models, ws)
    edited = torch.cat([square_edit(masks[:1], 2, 4, 4, 14), square_edit(masks[1:], 1, 20, 20, 3)])
    config = EditConfig(steps=2, lr=0.05)
    batched = prepare_edit(models, ws, masks, edited, config)
    alone = [prepare_edit(models, ws[i:i + 1], masks[i:i + 1], edited[i:i + 1], config) for i in range(2)]
    for _step in range(2):
        batched.step()
        for index, single in enumerate(alone):
            single.step()
            difference = (batched.ws.grad[index:index + 1] - single.ws.grad).norm() / single.ws.grad.norm()
            assert difference < 1e-3  # float rounding; a shared normalisation rescales terms by 0.2–0.8


def test_resize_mask_is_nearest_and_keeps_labels():
    mask = torch.tensor([[[0, 1], [2, 3]]])
    big = resize_mask(mask, 4)
    assert big.dtype == torch.long and set(big.unique().tolist()) == {0, 1, 2, 3}
    assert (big[0, :2, :2] == 0).all() and (big[0, 2:, 2:] == 3).all()


# --- mode 1 --------------------------------------------------------------------------------------------------------


def test_mode1_equals_its_formula(models, latent):
    v1, v2 = vector(models, 1), vector(models, 2)
    applied = apply_vectors(models, latent, [v1, v2], [1.5, -0.5])
    expected_ws = latent + 1.5 * v1.delta + -0.5 * v2.delta
    torch.testing.assert_close(applied.ws, expected_ws)
    image, mask = render_and_segment(models, expected_ws)
    torch.testing.assert_close(applied.image, image)
    assert torch.equal(applied.mask, mask)


def test_mode1_composition_is_order_independent_and_batches(models, tiny_generator):
    ws = tiny_generator.mapping(torch.randn(3, 64, generator=torch.Generator().manual_seed(3)))
    v1, v2 = vector(models, 1), vector(models, 2)
    scales = torch.tensor([[1.0, 2.0], [0.0, -1.0], [0.5, 0.5]])
    forward = apply_vectors(models, ws, [v1, v2], scales)
    backward = apply_vectors(models, ws, [v2, v1], scales.flip(-1))
    torch.testing.assert_close(forward.image, backward.image, atol=1e-5, rtol=1e-5)
    single = apply_vectors(models, ws[1:2], [v1, v2], scales[1])
    torch.testing.assert_close(single.image, forward.image[1:2], atol=1e-5, rtol=1e-5)


def test_vector_from_another_generator_is_refused(models, latent):
    foreign = EditVector(torch.zeros(models.generator.num_ws, models.generator.w_dim),
                         EditVectorInfo(name="foreign", generator_id="0123456789abcdef", edited_classes=[1]))
    with pytest.raises(VectorGeneratorMismatch, match="only apply to the generator"):
        apply_vectors(models, latent, [foreign], [1.0])


# --- modes 2 and 3 -------------------------------------------------------------------------------------------------


def test_first_step_losses_are_the_formula(models, latent):
    """At step 1 the image is the original, so the outside terms are exactly 0 and CE is the ensemble's mean CE."""
    _, original_mask = render_and_segment(models, latent)
    edited = square_edit(original_mask, 2, 8, 8, 10)
    events = []
    optimize_edit(models, latent, original_mask, edited, EditConfig(steps=1), progress=events.append)
    first = events[0].losses
    assert first["l2_outside"] == 0.0 and first["lpips_outside"] == pytest.approx(0.0, abs=1e-6)
    _, features = models.generator.synthesis(latent, return_features=True)
    logits = models.segmenter(features)[0]                                    # [E, K, H, W]
    roi = edit_roi(original_mask, edited, kernel=3, iterations=3)[0]
    ce = torch.nn.functional.cross_entropy(logits, edited.expand(logits.shape[0], -1, -1), reduction="none").mean(0)
    assert first["ce_inside"] == pytest.approx(float(ce[roi].mean()), rel=1e-4)
    assert first["total"] == pytest.approx(first["ce_inside"], rel=1e-5)


def test_gradients_reach_only_the_latent(models, latent):
    before = {name: p.clone() for name, p in models.generator.state_dict().items()}
    seg_before = {name: p.clone() for name, p in models.segmenter.state_dict().items()}
    _, original_mask = render_and_segment(models, latent)
    optimize_edit(models, latent, original_mask, square_edit(original_mask, 1, 4, 4, 8), EditConfig(steps=3))
    for module, reference in ((models.generator, before), (models.segmenter, seg_before)):
        assert all(p.grad is None for p in module.parameters())
        for name, tensor in module.state_dict().items():
            assert torch.equal(tensor, reference[name]), name


def test_mode3_moves_the_segmentation_to_the_target_and_keeps_the_outside(models, latent):
    _, original_mask = render_and_segment(models, latent)
    edited = square_edit(original_mask, 2, 6, 6, 12)
    # The whole edited classes join the ROI, as the artist may ask: the tiny generator cannot change a square alone.
    result = optimize_edit(models, latent, original_mask, edited, EditConfig(steps=30, lr=0.05),
                           edited_classes=changed_classes(original_mask, edited))
    first, last = result.history[0], result.history[-1]
    assert last["ce_inside"] < 0.5 * first["ce_inside"]
    target_region = edited != original_mask
    agreement_before = (original_mask == edited)[target_region].float().mean()
    agreement_after = (result.mask == edited)[target_region].float().mean()
    assert agreement_after > agreement_before + 0.3
    outside = (~resize_mask(result.roi, 32))[:, None].float()
    original_image = models.generator.synthesis(latent)
    lpips_outside = models.perceptual(result.image * outside, original_image * outside)
    assert float(lpips_outside) < 0.05
    torch.testing.assert_close(result.delta, result.ws - latent)
    assert result.edited_classes == changed_classes(original_mask, edited)


def test_an_edit_stops_when_the_follow_score_reaches_the_artists_target(models, latent):
    """The live follow score streams with the losses; with ``stop_follow`` the edit ends at the first step whose
    score reaches it (the same trajectory as without, so the step is known), and the last preview is sent then."""
    _, original_mask = render_and_segment(models, latent)
    edited = square_edit(original_mask, 2, 6, 6, 12)
    classes = changed_classes(original_mask, edited)
    config = EditConfig(steps=12, lr=0.05)
    curve = [step["follow"] for step in optimize_edit(models, latent, original_mask, edited, config,
                                                      edited_classes=classes).history]
    target = curve[6]
    expected = next(step for step, value in enumerate(curve, start=1) if value >= target)
    events = []
    stopped = optimize_edit(models, latent, original_mask, edited, EditConfig(steps=12, lr=0.05, stop_follow=target),
                            edited_classes=classes, progress=events.append)
    assert len(stopped.history) == expected < 12 and stopped.history[-1]["follow"] >= target
    assert events[-1].step == expected and events[-1].preview_image is not None
    with pytest.raises(ValueError, match="stop_follow"):
        EditConfig(stop_follow=1.5)


def test_bfloat16_precision_edits_like_float32(models, latent):
    """The GPU fast path (autocast) on the CPU: same first-step losses within bfloat16 rounding, and the edit works."""
    fast = EditingModels(models.generator, models.segmenter, models.perceptual, models.generator_id,
                         precision="bfloat16")
    _, original_mask = render_and_segment(models, latent)
    _, fast_mask = render_and_segment(fast, latent)
    assert (fast_mask == original_mask).float().mean() > 0.95
    edited = square_edit(original_mask, 2, 6, 6, 12)
    classes = changed_classes(original_mask, edited)  # the whole classes, as in the edit test above
    exact = optimize_edit(models, latent, original_mask, edited, EditConfig(steps=1), edited_classes=classes).history[0]
    reduced = optimize_edit(fast, latent, original_mask, edited, EditConfig(steps=30, lr=0.05), edited_classes=classes)
    assert reduced.history[0]["ce_inside"] == pytest.approx(exact["ce_inside"], rel=0.05)
    assert reduced.history[-1]["ce_inside"] < 0.5 * reduced.history[0]["ce_inside"]
    assert reduced.image.dtype == torch.float32 and reduced.delta.dtype == torch.float32


def test_chunked_roi_pixels_edit_like_the_whole_roi(models, latent):
    """roi_pixel_chunk recomputes the segmentation at the ROI pixels chunk by chunk: the same edit, step for step."""
    chunked = EditingModels(models.generator, models.segmenter, models.perceptual, models.generator_id,
                            roi_pixel_chunk=37)
    _, original_mask = render_and_segment(models, latent)
    edited = square_edit(original_mask, 2, 6, 6, 12)
    whole = optimize_edit(models, latent, original_mask, edited, EditConfig(steps=3))
    in_chunks = optimize_edit(chunked, latent, original_mask, edited, EditConfig(steps=3))
    assert int(whole.roi.sum()) > 3 * 37
    for step_whole, step_chunked in zip(whole.history, in_chunks.history):
        assert step_chunked == pytest.approx(step_whole, rel=1e-4, abs=1e-6)
    torch.testing.assert_close(in_chunks.ws, whole.ws, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="roi_pixel_chunk"):
        EditingModels(models.generator, models.segmenter, models.perceptual, models.generator_id, roi_pixel_chunk=0)


def test_unknown_precision_is_refused(models):
    with pytest.raises(ValueError, match="precision"):
        EditingModels(models.generator, models.segmenter, models.perceptual, models.generator_id, precision="int8")


def test_mode2_refines_inside_the_roi_and_keeps_the_outside(models, latent):
    # An edit-sized vector: a random one of 0.3 per coordinate repaints the whole image, so the first steps only
    # pull the outside back (the 15·(10·LPIPS + 5·L2) term dominates) and say nothing about the refinement.
    v = vector(models, 5, classes=(1, 2), magnitude=0.1)
    events = []
    result = refine_vectors(models, latent, [v], [1.0], refine_config(steps=10), progress=events.append)
    assert len(events) == 10
    assert result.history[-1]["ce_inside"] < result.history[0]["ce_inside"]
    assert result.history[-1]["lpips_outside"] < 0.1
    assert "encoder" not in result.history[-1]


def test_progress_streams_previews_every_k_steps(models, latent):
    _, original_mask = render_and_segment(models, latent)
    events = []
    optimize_edit(models, latent, original_mask, square_edit(original_mask, 0, 0, 0, 6),
                  EditConfig(steps=6, preview_every=3), progress=events.append)
    assert [e.step for e in events] == list(range(1, 7))
    previews = [e.step for e in events if e.preview_image is not None]
    assert previews == [3, 6]
    assert events[2].preview_image.shape == (3, 32, 32) and events[2].preview_mask.shape == (32, 32)


# --- bad input ---------------------------------------------------------------------------------------------------


def test_bad_inputs_get_clear_errors(models, latent):
    _, mask = render_and_segment(models, latent)
    with pytest.raises(ValueError, match="W\\+ of shape"):
        optimize_edit(models, latent[:, :3], mask, mask)
    with pytest.raises(ValueError, match="labels outside"):
        optimize_edit(models, latent, mask, mask + 5)
    with pytest.raises(ValueError, match="nothing to edit"):
        optimize_edit(models, latent, mask, mask)
    with pytest.raises(ValueError, match="NaN"):
        apply_vectors(models, latent * float("nan"), [vector(models, 1)], [1.0])
    with pytest.raises(ValueError, match="2 scales for 1 vectors"):
        apply_vectors(models, latent, [vector(models, 1)], [1.0, 2.0])
    with pytest.raises(ValueError, match="odd"):
        EditConfig(dilation_kernel=4)
    with pytest.raises(ValueError, match="steps"):
        EditConfig(steps=0)


# --- speed options (issue 17) ---------------------------------------------------------------------------------------


def test_loss_members_use_exactly_the_first_members(models, latent):
    """``loss_members=k``: the inside-the-ROI CE is the mean CE of the ensemble's first k members only."""
    _, original_mask = render_and_segment(models, latent)
    edited = square_edit(original_mask, 2, 8, 8, 10)
    events = []
    optimize_edit(models, latent, original_mask, edited, EditConfig(steps=1, loss_members=2),
                  progress=events.append)
    _, features = models.generator.synthesis(latent, return_features=True)
    logits = models.segmenter(features)[0][:2]                                 # [2, K, H, W]
    roi = edit_roi(original_mask, edited, kernel=3, iterations=3)[0]
    ce = torch.nn.functional.cross_entropy(logits, edited.expand(2, -1, -1), reduction="none").mean(0)
    assert events[0].losses["ce_inside"] == pytest.approx(float(ce[roi].mean()), rel=1e-4)


def test_mode1_mask_members_segment_with_the_first_members(models, latent):
    applied = apply_vectors(models, latent, [vector(models, 3)], [1.0], mask_members=1)
    _, features = models.generator.synthesis(applied.ws, noise_mode="const", return_features=True)
    first_member = models.segmenter(features)[:, 0].argmax(dim=1)
    assert torch.equal(applied.mask, first_member)
    assert torch.equal(applied.image, apply_vectors(models, latent, [vector(models, 3)], [1.0]).image)


def test_mode1_without_a_mask_renders_the_same_image_and_no_segmentation(models, latent):
    image_only = apply_vectors(models, latent, [vector(models, 3)], [0.7], with_mask=False)
    full = apply_vectors(models, latent, [vector(models, 3)], [0.7])
    assert image_only.mask is None and full.mask is not None
    assert torch.equal(image_only.image, full.image) and torch.equal(image_only.ws, full.ws)


def test_encoder_term_every_k_steps(models, latent, tiny_generator):
    """``encoder_every=k`` evaluates the encoder on steps 1, k+1, …; the history repeats the last value between."""
    calls = []

    class CountingEncoder(torch.nn.Module):
        def forward(self, images):
            calls.append(images.shape[0])
            return torch.zeros(images.shape[0], tiny_generator.num_ws, tiny_generator.w_dim)

    with_encoder = EditingModels(models.generator, models.segmenter, models.perceptual, models.generator_id,
                                 encoder=CountingEncoder())
    _, original_mask = render_and_segment(models, latent)
    result = optimize_edit(with_encoder, latent, original_mask, square_edit(original_mask, 2, 8, 8, 10),
                           EditConfig(steps=5, encoder_every=2))
    assert len(calls) == 3  # steps 1, 3, 5
    assert [row["encoder"] for row in result.history][1] == result.history[0]["encoder"]


def test_preview_image_every_step_with_masks_every_k(models, latent):
    _, original_mask = render_and_segment(models, latent)
    events = []
    optimize_edit(models, latent, original_mask, square_edit(original_mask, 0, 0, 0, 6),
                  EditConfig(steps=4, preview_every=2, preview_image_every=1), progress=events.append)
    assert all(e.preview_image is not None for e in events)
    assert [e.step for e in events if e.preview_mask is not None] == [2, 4]


def test_cached_perceptual_reference_gives_the_same_distance_and_gradient(perceptual_vgg):
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    direct_x, cached_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    direct = perceptual_vgg(direct_x, y)
    cached = perceptual_vgg(cached_x, perceptual_vgg.reference(y))
    assert torch.allclose(direct, cached, atol=1e-6)
    assert torch.allclose(torch.autograd.grad(direct.sum(), direct_x)[0],
                          torch.autograd.grad(cached.sum(), cached_x)[0], atol=1e-6)


# --- compiled passes -----------------------------------------------------------------------------------------------


def test_compile_mode_is_checked(tiny_generator, tiny_segmenter, perceptual_vgg):
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        EditingModels(tiny_generator, tiny_segmenter, perceptual_vgg, "g", compile_mode="fast")


def test_compiled_passes_give_the_eager_results(models, latent):
    """torch.compile (Inductor on this CPU) changes how the passes run, not what they compute: mode 1, and a mode-3
    step's losses and gradient, agree with the eager engine. (Whole trajectories are not compared: Adam's first
    updates are ±lr by the gradient's sign, so rounding flips the elements whose gradient is near zero.)"""
    compiled = EditingModels(models.generator, models.segmenter, models.perceptual, models.generator_id,
                             compile_mode="default")
    v = vector(models, 5)
    eager_applied, compiled_applied = (apply_vectors(m, latent, [v], [1.0]) for m in (models, compiled))
    torch.testing.assert_close(compiled_applied.image, eager_applied.image, atol=1e-4, rtol=1e-4)
    assert (compiled_applied.mask == eager_applied.mask).float().mean() > 0.999
    edited = square_edit(eager_applied.mask, 1, 4, 4, 6)
    steps = [prepare_edit(m, eager_applied.ws, eager_applied.mask, edited) for m in (models, compiled)]
    for step in steps:
        step.step()
    eager, compiled_step = steps
    for name in ("total", "ce_inside", "lpips_outside", "l2_outside"):
        assert float(compiled_step.history[0][name]) == pytest.approx(float(eager.history[0][name]), rel=1e-4, abs=1e-7)
    difference = (compiled_step.ws.grad - eager.ws.grad).norm() / eager.ws.grad.norm()
    assert difference < 1e-3
    # Each of the four passes ran compiled: synthesis, full-map labels, ROI logits, LPIPS.
    assert len(compiled._passes.compiled) == 4 and not models._passes.compiled


def test_compiled_mode1_stops_compiling_after_two_batch_sizes(models, tiny_generator):
    """The live sliders batch however many users are waiting. Compiled, one image and then two compile the passes
    (the second size makes the batch dimension dynamic); three to five reuse them, and give the eager results."""
    compiled = EditingModels(models.generator, models.segmenter, models.perceptual, models.generator_id,
                             compile_mode="default")
    v = vector(models, 7)
    with torch.no_grad():
        ws = tiny_generator.mapping(torch.randn(5, tiny_generator.z_dim, generator=torch.Generator().manual_seed(3)))
    scales = torch.linspace(-1, 1, 5)[:, None]
    torch._dynamo.reset()
    for batch in (1, 2):
        apply_vectors(compiled, ws[:batch], [v], scales[:batch])
    graphs = counters["stats"]["unique_graphs"]
    for batch in (3, 4, 5):
        applied = apply_vectors(compiled, ws[:batch], [v], scales[:batch])
    assert counters["stats"]["unique_graphs"] == graphs
    eager = apply_vectors(models, ws, [v], scales)
    torch.testing.assert_close(applied.image, eager.image, atol=1e-4, rtol=1e-4)
    assert (applied.mask == eager.mask).float().mean() > 0.999


def test_a_warmed_up_worker_compiles_nothing_for_its_first_requests(models, latent, tiny_generator):
    """``warm_up`` compiles what a session's requests need: after it, mode-3 edits with ROIs of their own sizes, a
    small and a large one, sliders of three and four users, mode-1 jobs with the mask and a mode-2 refinement compile
    nothing more."""
    compiled = EditingModels(models.generator, models.segmenter, models.perceptual, models.generator_id,
                             compile_mode="default")
    speed = {"loss_members": 2, "preview_image_every": 1}
    torch._dynamo.reset()
    warm_up(compiled, latent, mask_members=2, **speed)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    with torch.no_grad():
        ws = tiny_generator.mapping(torch.randn(4, tiny_generator.z_dim, generator=torch.Generator().manual_seed(9)))
    # A pass past Dynamo's limit would run eagerly and add no graph either: that fails here instead.
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        labels = render_and_segment(compiled, ws[:1])[1]
        for side in (21, 3):
            edit = optimize_edit(compiled, ws[:1], labels, square_edit(labels, 1, 3, 5, side),
                                 EditConfig(steps=2, **speed), progress=lambda event: None)
        v = EditVector(edit.delta[0], EditVectorInfo(name="e", generator_id=models.generator_id, edited_classes=[1]))
        for batch in (3, 4):
            for with_mask in (True, False):
                apply_vectors(compiled, ws[:batch], [v], torch.ones(batch, 1), mask_members=2, with_mask=with_mask)
        refine_vectors(compiled, ws[1:2], [v], [0.5], refine_config(2, **speed), progress=lambda event: None)
    assert counters["stats"]["unique_graphs"] == graphs


def test_warm_up_leaves_eager_models_alone(models, latent):
    warm_up(models, latent)
    assert not models._passes.compiled


def test_a_compiled_pass_compiles_past_dynamos_default_limit_of_eight():
    """A session's passes take more than Dynamo's default 8 variants (the synthesis 7, the ROI pass one per pixel-count
    range at 512²: 10); past the limit a pass would run eagerly without a word. Twelve input ranks, twelve graphs."""
    passes = CompiledPasses("default")
    torch._dynamo.reset()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for rank in range(1, 13):
            assert float(passes(torch.square, torch.full((1,) * rank, 3.0))) == 9.0
    assert counters["stats"]["unique_graphs"] >= 12


def test_warm_up_runs_on_a_random_branch_that_sees_few_of_its_classes(models, latent):
    """A freshly imported random-weight branch labels a picture with a few of its 34 classes. Mode 2's ROI is where
    its vector's classes are, so a warm-up that painted an absent class would have nothing to refine and stop
    there (the studio's worker then logged the failure and warmed nothing more)."""
    from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble

    branch = SegmentationEnsemble(SegmentationConfig.from_generator(models.generator, num_classes=34, hidden=(16, 8),
                                                                    ensemble_size=2), seed=3).eval()
    compiled = EditingModels(models.generator, branch, models.perceptual, models.generator_id, compile_mode="default")
    assert len(render_and_segment(compiled, latent)[1].unique()) < 34
    warm_up(compiled, latent, steps=1)
    assert set(compiled._passes.compiled) >= {compiled.generator.synthesis, branch.forward_pixels}
