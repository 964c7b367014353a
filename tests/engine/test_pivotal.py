"""Pivotal tuning: the tuning reproduces the target, the delta applies to a base generator without changing it, its
file round-trips and is refused for another generator, the locality regulariser keeps the tuning local."""
from __future__ import annotations

import pytest
import torch

from editor_core.checkpoints import CheckpointError, generator_fingerprint, save_checkpoint
from editor_core.pivotal import (DeltaGeneratorMismatch, PivotalConfig, WeightDelta, apply_delta, tune_generator)

STEPS = 10


def latents(generator, seed: int, count: int = 1) -> torch.Tensor:
    with torch.no_grad():
        return generator.mapping(torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(seed)))


@pytest.fixture(scope="module")
def pivot_and_target(tiny_generator):
    """A pivot and a target image its generator does not quite draw from it (another latent's image)."""
    with torch.no_grad():
        target = tiny_generator.synthesis(latents(tiny_generator, 2), noise_mode="const")
    return latents(tiny_generator, 1), target


@pytest.fixture(scope="module")
def tuning(tiny_generator, pivot_and_target, perceptual_vgg):
    ws, target = pivot_and_target
    before = generator_fingerprint(tiny_generator)
    events = []
    result = tune_generator(tiny_generator, ws, target, PivotalConfig(steps=STEPS, lr=3e-3), perceptual_vgg,
                            progress=events.append)
    assert generator_fingerprint(tiny_generator) == before   # the base generator is not tuned
    return result, events


def test_tuning_lowers_the_reconstruction_loss_and_reports_each_step(tuning):
    result, events = tuning
    assert [e.step for e in events] == list(range(STEPS + 1)) and {e.stage for e in events} == {"pivotal"}
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert result.history[-1]["l2"] < result.history[0]["l2"]
    assert float(result.psnr[0]) == pytest.approx(result.delta.meta["psnr"])
    assert events[0].preview_image.shape == (3, 32, 32) and events[1].preview_image is None


def test_the_delta_holds_synthesis_parameters_only(tuning, tiny_generator):
    delta = tuning[0].delta
    assert delta.tensors and all(name.startswith("synthesis.") for name in delta.tensors)
    assert delta.generator_id == generator_fingerprint(tiny_generator)
    assert delta.meta["config"]["steps"] == STEPS


def test_the_delta_applies_without_mutating_the_base(tuning, tiny_generator, pivot_and_target):
    result = tuning[0]
    ws, _target = pivot_and_target
    base_state = {name: tensor.clone() for name, tensor in tiny_generator.state_dict().items()}
    tuned = apply_delta(tiny_generator, result.delta, generator_fingerprint(tiny_generator))
    for name, tensor in tiny_generator.state_dict().items():
        assert torch.equal(tensor, base_state[name]), name
    with torch.no_grad():
        torch.testing.assert_close(tuned.synthesis(ws, noise_mode="const"), result.image, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(tiny_generator.synthesis(ws, noise_mode="const"), result.image, atol=1e-3)
    # The copy shares what the delta leaves alone and owns what it changes.
    assert tuned.mapping.fc0.weight is tiny_generator.mapping.fc0.weight
    name = next(iter(result.delta.tensors))
    assert tuned.get_parameter(name) is not tiny_generator.get_parameter(name)
    assert not any(p.requires_grad for p in tuned.parameters())


def test_a_delta_for_another_generator_is_refused(tuning, tiny_generator):
    with pytest.raises(DeltaGeneratorMismatch, match="only applies to the generator it was tuned from"):
        apply_delta(tiny_generator, tuning[0].delta, "0" * 16)
    wrong = WeightDelta({"mapping.fc0.weight": torch.zeros(1)}, tuning[0].delta.generator_id)
    with pytest.raises(ValueError, match="not synthesis parameters"):
        apply_delta(tiny_generator, wrong, wrong.generator_id)


def test_save_and_load_round_trip_and_the_fingerprint_check(tuning, tiny_generator, tmp_path):
    delta = tuning[0].delta
    path = delta.save(tmp_path / "face.safetensors")
    loaded = WeightDelta.load(path, delta.generator_id)
    assert loaded.tensors.keys() == delta.tensors.keys() and loaded.meta == delta.meta
    assert all(torch.equal(loaded.tensors[n], delta.tensors[n]) for n in delta.tensors)
    with pytest.raises(DeltaGeneratorMismatch, match=f"tuned from generator {delta.generator_id}"):
        WeightDelta.load(path, "f" * 16)
    stored = tmp_path / "stored.safetensors"  # the bytes the studio stores load like the file save writes
    stored.write_bytes(delta.to_bytes())
    from_bytes = WeightDelta.load(stored, delta.generator_id)
    assert from_bytes.meta == delta.meta
    assert all(torch.equal(from_bytes.tensors[n], t) for n, t in delta.tensors.items())
    half = WeightDelta.load(delta.save(tmp_path / "half.safetensors", dtype=torch.float16), delta.generator_id)
    assert all(half.tensors[n].dtype == torch.float32 for n in half.tensors)
    save_checkpoint(tmp_path / "vector.safetensors", "edit_vector", {"delta": torch.zeros(2)}, config={})
    with pytest.raises(CheckpointError, match="expected a 'pivotal_delta'"):
        WeightDelta.load(tmp_path / "vector.safetensors", delta.generator_id)


def test_the_locality_regulariser_keeps_the_generator_near_the_pivot(tiny_generator, pivot_and_target,
                                                                     perceptual_vgg):
    ws, target = pivot_and_target
    generator_id = generator_fingerprint(tiny_generator)
    nearby = ws + 0.5 * (latents(tiny_generator, 3, count=4) - ws)   # around the pivot, off it

    def change_nearby(locality_weight: float) -> tuple[float, list[dict[str, float]]]:
        config = PivotalConfig(steps=STEPS, lr=3e-3, locality_weight=locality_weight)
        result = tune_generator(tiny_generator, ws, target, config, perceptual_vgg)
        tuned = apply_delta(tiny_generator, result.delta, generator_id)
        with torch.no_grad():
            moved = (tuned.synthesis(nearby) - tiny_generator.synthesis(nearby)).square().mean()
        return float(moved), result.history

    free, _ = change_nearby(0.0)
    local, history = change_nearby(10.0)
    assert local < 0.5 * free
    assert history[1]["locality"] > 0 and history[-1]["l2"] < 0.5 * history[0]["l2"]   # still fits the target


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be a positive integer"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"locality_weight": -1.0}, "locality_weight must be >= 0"),
    ({"locality_reach": 1.5}, "must be in (0, 1]"),
    ({"tuned_prefixes": ("mapping.",)}, "the mapping stays frozen"),
])
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PivotalConfig(**kwargs)


def test_bad_inputs_are_refused(tiny_generator, pivot_and_target, perceptual_vgg):
    ws, target = pivot_and_target
    with pytest.raises(ValueError, match="one delta per image"):
        tune_generator(tiny_generator, ws.expand(2, -1, -1), target.expand(2, -1, -1, -1), PivotalConfig(),
                       perceptual_vgg)
    with pytest.raises(ValueError, match="ws must be the image's pivot"):
        tune_generator(tiny_generator, ws[:, :1], target, PivotalConfig(), perceptual_vgg)
    with pytest.raises(ValueError, match="no parameter of the generator starts with"):
        tune_generator(tiny_generator, ws, target, PivotalConfig(tuned_prefixes=("synthesis.b4096.",)),
                       perceptual_vgg)
