"""Segmentation ensemble: fast path == DatasetGAN reference path, prediction/uncertainty, training, saving."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from editor_core.metrics import mean_iou
from editor_core.progress import Cancelled
from editor_core.schema import LabelSchema
from editor_core.segmentation import (
    SegmentationConfig, SegmentationEnsemble, SegmentationPrediction, SegTrainConfig, ensemble_log_probs,
    image_uncertainty, load_segmentation, prediction_from_logits, save_segmentation, train_segmentation)
from editor_core.segmentation import _pixel_weights

# (feature channels, feature resolutions, output resolution)
LAYOUTS = [
    ((6, 5, 5, 4, 4), (4, 8, 8, 16, 16), 16),  # StyleGAN-like, output at the finest map
    ((6, 5, 5, 4, 4), (4, 8, 8, 16, 16), 32),  # output finer than every map
    ((6, 5, 4, 3, 3), (4, 8, 16, 32, 32), 16),  # maps finer than the output (face: 1024² features, 512² seg)
    ((3, 4, 5, 6), (8, 3, 16, 6), 12),  # unsorted, non-power-of-two ratios, downsampling by 4/3
]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronisation, and on a loaded 2-core machine
    OpenMP spin-waiting made training steps ~7× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _features(channels, resolutions, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, r, r, generator=g) for c, r in zip(channels, resolutions)]


def _ensemble(channels, resolutions, size, upsample="nearest", classes=4, hidden=(8, 6, 5), members=3):
    config = SegmentationConfig(channels, resolutions, classes, size, hidden, members, upsample)
    return _randomise(SegmentationEnsemble(config))


@torch.no_grad()
def _randomise(ensemble, seed=1):
    """Unit-scale weights and non-trivial BatchNorm state, so comparisons are not dominated by the 0.02 init."""
    g = torch.Generator().manual_seed(seed)
    for conv in [ensemble.input_conv, *ensemble.hidden_convs, ensemble.output_conv]:
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / conv.weight.shape[1] ** 0.5)
        conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=g))
    for norm in ensemble.norms:
        norm.weight.copy_(1 + 0.2 * torch.randn(norm.weight.shape, generator=g))
        norm.bias.copy_(0.1 * torch.randn(norm.bias.shape, generator=g))
        norm.running_mean.copy_(0.1 * torch.randn(norm.running_mean.shape, generator=g))
        norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape, generator=g))
    return ensemble


def _assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * float(expected.detach().abs().max()))


# -- fast path == reference path ------------------------------------------------------------------------------------


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=["stylegan", "upsampled-output", "downsampled-maps", "irregular"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fast_path_equals_naive_path(layout, upsample, training):
    channels, resolutions, size = layout
    features = _features(channels, resolutions)
    fast = _ensemble(channels, resolutions, size, upsample).train(training)
    naive = copy.deepcopy(fast)
    _assert_close(fast(features), naive.forward_naive(features))
    # In train mode both paths must also update the BatchNorm running statistics identically.
    for fast_norm, naive_norm in zip(fast.norms, naive.norms):
        _assert_close(fast_norm.running_mean, naive_norm.running_mean)
        _assert_close(fast_norm.running_var, naive_norm.running_var)


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=["stylegan", "upsampled-output", "downsampled-maps", "irregular"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("count", [40, 300], ids=["few-pixels", "many-pixels"])
def test_pixel_path_equals_naive_path_at_the_same_pixels(layout, upsample, training, count):
    # Few pixels: every map is sampled at the pixels; many: coarse maps are first projected at native resolution.
    channels, resolutions, size = layout
    features = _features(channels, resolutions)
    ensemble = _ensemble(channels, resolutions, size, upsample).train(training)
    pixels = torch.randint(0, size * size, (2, count), generator=torch.Generator().manual_seed(2))
    _assert_close(ensemble.forward_pixels(features, pixels), copy.deepcopy(ensemble).forward_naive(features, pixels))


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_pixel_path_equals_full_map_in_eval_mode(upsample):
    channels, resolutions, size = LAYOUTS[0]
    features = _features(channels, resolutions)
    ensemble = _ensemble(channels, resolutions, size, upsample).eval()
    pixels = torch.randint(0, size * size, (2, 30), generator=torch.Generator().manual_seed(3))
    full = ensemble(features).flatten(3)  # [B, E, K, S·S]
    expected = full.gather(3, pixels[:, None, None, :].expand(-1, *full.shape[1:3], -1))
    _assert_close(ensemble.forward_pixels(features, pixels), expected)


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("layout", LAYOUTS[:3], ids=["stylegan", "upsampled-output", "downsampled-maps"])
def test_chunked_pixel_path_gives_the_same_logits_and_gradients(layout, upsample):
    # Chunks of 7 do not divide 300; the coarse maps are projected once, each chunk is recomputed in backward.
    channels, resolutions, size = layout
    ensemble = _ensemble(channels, resolutions, size, upsample).eval()
    pixels = torch.randint(0, size * size, (2, 300), generator=torch.Generator().manual_seed(4))
    upstream = torch.randn(2, 3, 4, 300, generator=torch.Generator().manual_seed(5))
    results = []
    for chunk in (None, 7):
        features = [f.requires_grad_(True) for f in _features(channels, resolutions)]
        logits = ensemble.forward_pixels(features, pixels, pixel_chunk=chunk)
        logits.backward(upstream)
        results.append((logits.detach(), [f.grad for f in features]))
    (whole, whole_grads), (chunked, chunked_grads) = results
    _assert_close(chunked, whole)
    for grad_chunked, grad_whole in zip(chunked_grads, whole_grads):
        _assert_close(grad_chunked, grad_whole)
    with torch.no_grad():
        _assert_close(ensemble.forward_pixels(_features(channels, resolutions), pixels, pixel_chunk=7), whole)


def test_chunked_pixel_path_refuses_train_mode_and_bad_chunks():
    channels, resolutions, size = LAYOUTS[0]
    features, pixels = _features(channels, resolutions), torch.arange(20).expand(2, -1)
    with pytest.raises(ValueError, match="eval mode"):
        _ensemble(channels, resolutions, size).train().forward_pixels(features, pixels, pixel_chunk=8)
    with pytest.raises(ValueError, match="pixel_chunk must be"):
        _ensemble(channels, resolutions, size).eval().forward_pixels(features, pixels, pixel_chunk=0)


def test_top_down_accumulation_only_where_it_is_exact():
    channels, resolutions, size = LAYOUTS[3]
    assert _ensemble(channels, resolutions, size, "nearest")._top_down_resolutions == [3, 6, 12]  # 8 does not divide 12
    assert _ensemble(channels, resolutions, size, "bilinear")._top_down_resolutions == []


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_fast_path_is_differentiable_like_the_naive_path(upsample):
    channels, resolutions, size = LAYOUTS[2]
    ensemble = _ensemble(channels, resolutions, size, upsample).eval()
    grads = []
    for forward in (ensemble.forward, ensemble.forward_naive):
        features = [f.requires_grad_() for f in _features(channels, resolutions)]
        forward(features).square().sum().backward()
        grads.append([f.grad for f in features])
    for fast_grad, naive_grad in zip(*grads):
        _assert_close(fast_grad, naive_grad)


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_pixel_path_gives_the_naive_parameter_gradients(upsample):
    # A training step's gradients: every first-layer column (coarse maps projected natively, fine maps gathered and
    # multiplied together) and the tail, in train mode.
    channels, resolutions, size = LAYOUTS[2]
    features = _features(channels, resolutions)
    pixels = torch.randint(0, size * size, (2, 40), generator=torch.Generator().manual_seed(3))
    ensemble = _ensemble(channels, resolutions, size, upsample).train()
    grads = []
    for forward in (ensemble.forward_pixels, ensemble.forward_naive):
        ensemble.zero_grad(set_to_none=True)
        forward(features, pixels).square().sum().backward()
        grads.append({name: p.grad.clone() for name, p in ensemble.named_parameters()})
    fast, naive = grads
    assert fast.keys() == naive.keys()
    for name in fast:
        _assert_close(fast[name], naive[name])


# -- memory: the upsampled concatenation is never built -------------------------------------------------------------


class _LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any operation produces."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.numel = max(self.numel, leaf.numel())
        return out


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_forward_never_materialises_the_feature_concatenation(upsample):
    # Wide features (200 channels), narrow first layer (2 members × 8): concat = 200·S², activations = 16·S².
    channels, resolutions, size = (64, 48, 48, 20, 20), (4, 8, 8, 16, 16), 32
    ensemble = _ensemble(channels, resolutions, size, upsample, hidden=(8, 4), members=2).eval()
    features = _features(channels, resolutions, batch=1)
    concat_numel = sum(channels) * size * size
    first_layer_numel = 2 * 8 * size * size

    with _LargestTensor() as probe:
        ensemble.forward_naive(features)
    assert probe.numel >= concat_numel  # the probe sees the reference path build it

    with _LargestTensor() as probe:
        ensemble(features)
    assert probe.numel <= first_layer_numel

    with _LargestTensor() as probe:
        ensemble.forward_pixels(features, torch.arange(64)[None])
    assert probe.numel <= sum(f.numel() for f in features)  # never more than the native features themselves


# -- outputs --------------------------------------------------------------------------------------------------------


def test_output_shapes_and_probabilities():
    channels, resolutions, size = LAYOUTS[1]
    ensemble = _ensemble(channels, resolutions, size, classes=5, members=4).eval()
    features = _features(channels, resolutions, batch=3)
    assert ensemble(features).shape == (3, 4, 5, size, size)
    prediction = ensemble.predict(features)
    assert prediction.labels.shape == (3, size, size) and prediction.labels.dtype == torch.int64
    assert prediction.probs.shape == (3, 5, size, size)
    torch.testing.assert_close(prediction.probs.sum(1), torch.ones(3, size, size))
    assert prediction.uncertainty.shape == (3, size, size)
    assert bool((prediction.uncertainty >= 0).all()) and bool((prediction.uncertainty <= math.log(4) + 1e-6).all())
    assert torch.equal(prediction.labels, prediction.probs.argmax(1))


def test_ensemble_log_probs_is_log_of_mean_softmax():
    logits = torch.randn(2, 3, 4, 5, 5)
    torch.testing.assert_close(ensemble_log_probs(logits), logits.softmax(2).mean(1).log())


def test_chunked_prediction_equals_full_prediction_and_needs_eval_mode():
    channels, resolutions, size = LAYOUTS[0]
    ensemble = _ensemble(channels, resolutions, size).eval()
    features = _features(channels, resolutions)
    full, chunked = ensemble.predict(features), ensemble.predict(features, pixel_chunk=37)
    torch.testing.assert_close(chunked.probs, full.probs)
    torch.testing.assert_close(chunked.uncertainty, full.uncertainty)
    with pytest.raises(ValueError, match="eval mode"):
        ensemble.train().predict(features, pixel_chunk=37)


def test_identical_members_have_zero_uncertainty():
    channels, resolutions, size = LAYOUTS[0]
    ensemble = _ensemble(channels, resolutions, size, members=3).eval()
    with torch.no_grad():
        for module in [ensemble.input_conv, *ensemble.hidden_convs, ensemble.output_conv, *ensemble.norms]:
            for tensor in [*module.parameters(), *[b for b in module.buffers() if b.ndim == 1]]:
                blocks = tensor.view(3, -1, *tensor.shape[1:])
                blocks.copy_(blocks[:1].expand_as(blocks))
    prediction = ensemble.predict(_features(channels, resolutions))
    assert float(prediction.uncertainty.max()) < 1e-5
    assert float(image_uncertainty(prediction).max()) < 1e-5


def test_disagreeing_members_are_uncertain_exactly_where_they_disagree():
    logits = torch.zeros(1, 2, 3, 1, 2)  # two members, three classes, two pixels
    logits[0, 0, 0, 0, :] = 20.0  # member 0 says class 0 on both pixels
    logits[0, 1, 0, 0, 0] = 20.0  # member 1 agrees on pixel 0 ...
    logits[0, 1, 2, 0, 1] = 20.0  # ... and says class 2 on pixel 1
    prediction = prediction_from_logits(logits)
    assert float(prediction.uncertainty[0, 0, 0]) < 1e-6
    # Two confident members splitting 50/50: JS = log 2.
    assert float(prediction.uncertainty[0, 0, 1]) == pytest.approx(math.log(2), abs=1e-4)


def test_image_uncertainty_ranks_by_the_most_uncertain_pixels():
    uncertainty = torch.zeros(2, 10, 10)
    uncertainty[0, :2, :5] = 0.5  # 10 % of pixels very uncertain
    uncertainty[1] = 0.06  # everything slightly uncertain (higher mean over all pixels)
    prediction = SegmentationPrediction(torch.zeros(2, 10, 10, dtype=torch.long), torch.ones(2, 1, 10, 10),
                                        uncertainty)
    scores = image_uncertainty(prediction)
    assert scores.tolist() == pytest.approx([0.5, 0.06])
    with pytest.raises(ValueError, match="top_fraction"):
        image_uncertainty(prediction, top_fraction=0)


# -- configuration and bad inputs -----------------------------------------------------------------------------------


def test_config_round_trip_and_validation():
    config = SegmentationConfig((4, 8), (4, 8), 3, 8, hidden=(5, 4), ensemble_size=2, upsample="bilinear")
    assert SegmentationConfig.from_dict(config.to_dict()) == config
    assert config.in_channels == 12
    with pytest.raises(ValueError, match="upsample"):
        SegmentationConfig((4,), (4,), 3, 8, upsample="bicubic")
    with pytest.raises(ValueError, match="one resolution per feature map"):
        SegmentationConfig((4, 8), (4,), 3, 8)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationConfig((4,), (4,), 1, 8)
    with pytest.raises(ValueError, match="unknown"):
        SegmentationConfig.from_dict({**config.to_dict(), "dropout": 0.1})


def test_bad_features_and_pixels_raise_clear_errors():
    channels, resolutions, size = LAYOUTS[0]
    ensemble = _ensemble(channels, resolutions, size)
    features = _features(channels, resolutions)
    with pytest.raises(ValueError, match="expected 5 feature maps"):
        ensemble(features[:-1])
    with pytest.raises(ValueError, match="feature map 2 must have shape"):
        ensemble([*features[:2], features[2][:, :3], *features[3:]])
    with pytest.raises(ValueError, match="pixel indices"):
        ensemble.forward_pixels(features, torch.full((2, 3), size * size))
    with pytest.raises(ValueError, match="int64"):
        ensemble.forward_pixels(features, torch.zeros(1, 3, dtype=torch.long))


def test_reset_parameters_is_seeded_and_gives_each_member_its_own_init():
    config = SegmentationConfig((4, 8), (4, 8), 3, 8, hidden=(5, 4), ensemble_size=3)
    a, b, c = SegmentationEnsemble(config, seed=7), SegmentationEnsemble(config, seed=7), SegmentationEnsemble(config)
    assert torch.equal(a.input_conv.weight, b.input_conv.weight)
    assert not torch.equal(a.input_conv.weight, c.input_conv.weight)
    members = a.input_conv.weight.view(3, 5, -1)
    assert not torch.equal(members[0], members[1])
    assert float(a.input_conv.weight.detach().std()) == pytest.approx(0.02, rel=0.3)


# -- training on a tiny generator -----------------------------------------------------------------------------------


def _tiny_ensemble(generator, members=3):
    return SegmentationEnsemble(SegmentationConfig.from_generator(generator, 3, hidden=(32, 16),
                                                                  ensemble_size=members))


def _train_config(**overrides):
    options = dict(max_steps=60, samples_per_step=4, pixels_per_step=1024, eval_every=20, patience=None, seed=0,
                   lr=1e-2)
    return SegTrainConfig(**{**options, **overrides})


def test_training_lowers_the_loss_and_fits_the_labels(tiny_generator, tiny_annotations):
    ws, masks = tiny_annotations
    ensemble = _tiny_ensemble(tiny_generator)
    events = []
    result = train_segmentation(tiny_generator, ensemble, ws, masks, _train_config(), progress=events.append)

    losses = [record["loss"] for record in result.history]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    assert result.steps == 60 and not result.stopped_early and result.evaluated_on == "training"
    assert len(result.member_loss) == len(result.member_pixel_acc) == 3
    assert min(result.member_pixel_acc) > 0.7  # chance is 1/3
    assert result.mean_iou > 0.5
    with torch.no_grad():  # the final evaluation is the ensemble's prediction (from fp16-cached features there)
        _image, features = tiny_generator.synthesis(ws, noise_mode="const", return_features=True)
        labels = ensemble.predict(features).labels
    size = ensemble.config.resolution
    targets = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    assert result.mean_iou == pytest.approx(mean_iou(labels, targets, 3), abs=0.01)
    assert result.cached_features and not ensemble.training and not tiny_generator.training
    assert [e.step for e in events] == list(range(1, 61))
    assert {e.stage for e in events} == {"train_segmentation"} and events[-1].total == 60
    assert {"loss", "pixel_acc"} <= set(events[0].losses)


@pytest.mark.parametrize("sampling", [dict(class_balance=1.0), dict(class_balance=0.5, lr_schedule="cosine")])
def test_class_balanced_and_scheduled_training_fits_the_labels(tiny_generator, tiny_annotations, sampling):
    ws, masks = tiny_annotations
    result = train_segmentation(tiny_generator, _tiny_ensemble(tiny_generator), ws, masks, _train_config(**sampling))
    losses = [record["loss"] for record in result.history]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    assert result.mean_iou > 0.5


def test_class_balance_weights_each_class_of_a_sample_equally():
    masks = torch.tensor([[[0, 0, 0], [0, 1, 1], [2, 0, 0]], [[1, 1, 1], [1, 1, 1], [1, 1, 0]]])
    for balance, expected in ((1.0, [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]), (0.0, [[6.0, 2.0, 1.0], [1.0, 8.0, 0.0]])):
        weights = _pixel_weights(masks, 3, balance)
        per_class = torch.zeros(2, 3).scatter_add_(1, masks.flatten(1), weights)
        assert torch.allclose(per_class, torch.tensor(expected)), (balance, per_class)


@pytest.mark.parametrize("option, message", [(dict(class_balance=1.5), "class_balance"),
                                             (dict(lr_schedule="step"), "lr_schedule")])
def test_sampling_options_are_checked(option, message):
    with pytest.raises(ValueError, match=message):
        SegTrainConfig(**option)


def test_cosine_schedule_decays_the_steps_to_nothing(tiny_generator, tiny_annotations):
    # Adam's first step moves each weight by ±lr; with the cosine schedule the last of 20 runs at 0.6 % of lr.
    ws, masks = tiny_annotations
    for schedule, last_step_bound in (("cosine", (0.0, 0.05)), ("constant", (0.2, 5.0))):
        ensemble = _tiny_ensemble(tiny_generator)
        weights = []
        train_segmentation(tiny_generator, ensemble, ws, masks, _train_config(max_steps=20, lr_schedule=schedule),
                           progress=lambda event: weights.append(ensemble.input_conv.weight.detach().clone()))
        before = SegmentationEnsemble(ensemble.config, seed=0).input_conv.weight.detach()
        first = (weights[0] - before).abs().max().item()
        last = (weights[-1] - weights[-2]).abs().max().item()
        assert first == pytest.approx(1e-2, rel=1e-3)
        assert last_step_bound[0] < last / first < last_step_bound[1], (schedule, last / first)


def test_training_is_deterministic_for_a_seed(tiny_generator, tiny_annotations):
    ws, masks = tiny_annotations
    runs = []
    for seed in (5, 5, 6):
        ensemble = _tiny_ensemble(tiny_generator)
        result = train_segmentation(tiny_generator, ensemble, ws, masks, _train_config(max_steps=6, seed=seed))
        runs.append(([r["loss"] for r in result.history], ensemble.state_dict()))
    (losses_a, state_a), (losses_b, state_b), (losses_c, _) = runs
    assert losses_a == losses_b
    assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)
    assert losses_a != losses_c


def test_recomputed_features_match_the_fp16_cache(tiny_generator, tiny_annotations):
    ws, masks = tiny_annotations
    results = [train_segmentation(tiny_generator, _tiny_ensemble(tiny_generator), ws, masks,
                                  _train_config(max_steps=2, feature_cache_bytes=cache_bytes))
               for cache_bytes in (0, 1 << 30)]
    assert [r.cached_features for r in results] == [False, True]
    assert results[0].history[0]["loss"] == pytest.approx(results[1].history[0]["loss"], rel=1e-3)


def test_early_stopping_on_the_held_out_split(tiny_generator, tiny_annotations):
    ws, masks = tiny_annotations
    # min_delta larger than any possible change: the second check cannot improve, patience 1 stops there.
    config = _train_config(max_steps=500, val_fraction=0.25, eval_every=5, patience=1, min_steps=0, min_delta=100.0)
    result = train_segmentation(tiny_generator, _tiny_ensemble(tiny_generator), ws, masks, config)
    assert result.stopped_early and result.steps == 10
    assert result.evaluated_on == "validation" and len(result.val_indices) == 4
    assert sorted(result.train_indices + result.val_indices) == list(range(16))
    checks = [r for r in result.history if "val_loss" in r]
    assert [r["step"] for r in checks] == [5, 10]
    assert result.best_monitor == checks[0]["val_loss"]


def test_cancellation_propagates_and_restores_the_generator(tiny_generator, tiny_annotations):
    ws, masks = tiny_annotations

    def cancel_at_step_3(event):
        if event.step == 3:
            raise Cancelled()

    tiny_generator.train()
    try:
        with pytest.raises(Cancelled):
            train_segmentation(tiny_generator, _tiny_ensemble(tiny_generator), ws, masks, _train_config(),
                               progress=cancel_at_step_3)
        assert tiny_generator.training
    finally:
        tiny_generator.eval()


@pytest.mark.parametrize("mutate, message", [
    (lambda ws, masks: (ws[:, :-1], masks), "latents must be float W\\+ codes"),
    (lambda ws, masks: (ws, masks[:-1]), "one mask per latent"),
    (lambda ws, masks: (ws, masks.clone().index_fill_(0, torch.tensor([2]), 3)), "labels must be in 0..2"),
    (lambda ws, masks: (ws, masks[:, :, :-4]), "square"),
    (lambda ws, masks: (ws, masks.float()), "integer class indices"),
    (lambda ws, masks: (ws[:2], masks[:2]), "val_fraction"),
])
def test_training_rejects_bad_inputs(tiny_generator, tiny_annotations, mutate, message):
    ws, masks = mutate(*tiny_annotations)
    with pytest.raises(ValueError, match=message):
        train_segmentation(tiny_generator, _tiny_ensemble(tiny_generator), ws, masks, _train_config(val_fraction=0.25))


def test_training_rejects_an_ensemble_built_for_another_generator(tiny_generator, tiny_annotations):
    ws, masks = tiny_annotations
    other = SegmentationEnsemble(SegmentationConfig((8,), (4,), 3, 32, hidden=(4,), ensemble_size=1))
    with pytest.raises(ValueError, match="different generator"):
        train_segmentation(tiny_generator, other, ws, masks, _train_config())


# -- saving ---------------------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    channels, resolutions, size = LAYOUTS[0]
    ensemble = _ensemble(channels, resolutions, size, upsample="bilinear", classes=3).eval()
    schema = LabelSchema.from_names("toy", ["background", "eye", "nose"])
    path = tmp_path / "seg.safetensors"
    save_segmentation(path, ensemble, schema, meta={"generator_id": "abc", "samples": 16})
    loaded, loaded_schema, meta = load_segmentation(path)
    assert loaded.config == ensemble.config and loaded_schema == schema
    assert meta["generator_id"] == "abc" and meta["samples"] == 16
    assert not loaded.training
    features = _features(channels, resolutions)
    torch.testing.assert_close(loaded(features), ensemble(features))

    with pytest.raises(ValueError, match="classes"):
        save_segmentation(path, ensemble, LabelSchema.from_names("two", ["a", "b"]))


def test_predict_labels_segments_one_image_at_a_time_like_a_batch(tiny_generator, tiny_annotations):
    from editor_core.segmentation import predict_labels

    ws, _masks = tiny_annotations
    ensemble = _tiny_ensemble(tiny_generator)
    events = []
    labels = predict_labels(tiny_generator, ensemble, ws[:3], pixel_chunk=100, progress=events.append)
    with torch.no_grad():
        _image, features = tiny_generator.synthesis(ws[:3], noise_mode="const", return_features=True)
        batch = ensemble.predict(features).labels
    assert labels.dtype == torch.int64 and torch.equal(labels, batch.cpu())
    assert [(e.stage, e.step, e.total) for e in events] == [("evaluate", k, 3) for k in (1, 2, 3)]
