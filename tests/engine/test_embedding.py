"""editor_core.encoder, encoder_training and inversion: the encoder, its training and resumption, encoder files, and
optimisation-based embedding.

Everything runs on CPU with a tiny generator. Tests that need LPIPS skip when its backbone weights are absent.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from editor_core.encoder import Encoder, EncoderConfig, EncoderMismatchError, load_encoder, save_encoder
from editor_core.encoder_training import EncoderTrainConfig, train_encoder
from editor_core.inversion import EmbedConfig, embed_image, learning_rate_schedule, noise_regularizer, swapped_noise
from editor_core.metrics import psnr
from editor_core.networks import Generator, GeneratorConfig
from tests.engine.conftest import TINY_GENERATOR

TINY_ENCODER = dict(channel_base=256, channel_max=32, pyramid_channels=32, head_channels=32)


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(TINY_GENERATOR).eval()
    with torch.no_grad():  # an untrained generator's w_avg is zero; give it the real average
        G.mapping.w_avg.copy_(G.mapping(torch.randn(2000, G.z_dim))[:, 0].mean(dim=0))
    return G


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_generator()


def tiny_encoder(G: Generator, seed: int = 1) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(EncoderConfig.for_generator(G, **TINY_ENCODER), G.mapping.w_avg)


def samples(G: Generator, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        ws = G.mapping(torch.randn(count, G.z_dim, generator=torch.Generator().manual_seed(seed)))
        return G.synthesis(ws), ws


# -- encoder -----------------------------------------------------------------------------------------------------------


def test_encoder_outputs_w_plus_centred_on_w_avg(G):
    encoder = tiny_encoder(G)
    images, _ = samples(G, 3, seed=0)
    ws = encoder(images)
    assert ws.shape == (3, G.num_ws, G.config.w_dim)
    # Fresh heads predict zero offsets: the first guess is w_avg, an in-domain latent.
    assert torch.equal(ws, G.mapping.w_avg.expand_as(ws))

    with torch.no_grad():
        torch.nn.init.normal_(encoder.fine_heads[0].to_w.weight)
        fine_offsets = encoder(images) - encoder.w_avg
        torch.nn.init.normal_(encoder.coarse_heads[0].to_w.weight)
        offsets = encoder(images) - encoder.w_avg
        encoder.w_avg += 1.5
        shifted = encoder(images)
    # The fine head moves only the last w; the first head predicts the base offset that every w shares.
    assert fine_offsets[:, :-1].abs().max() == 0 and fine_offsets[:, -1].abs().min() > 0
    base = offsets - fine_offsets
    assert base.abs().min() > 0 and torch.allclose(base, base[:, :1].expand_as(base))
    torch.testing.assert_close(shifted, offsets + G.mapping.w_avg + 1.5)


def test_encoder_heads_follow_coarse_medium_fine_split(G):
    encoder = tiny_encoder(G)
    assert (len(encoder.coarse_heads), len(encoder.medium_heads), len(encoder.fine_heads)) == (3, 4, 1)
    strided_convs = [len(head.convs) // 2 for head in [*encoder.coarse_heads, *encoder.medium_heads,
                                                       *encoder.fine_heads]]
    assert strided_convs == [1] * 3 + [2] * 4 + [3]  # levels at 32/16 = 2², 32/8 = 4², 32/4 = 8², each down to 1²


def test_encoder_rejects_images_of_another_size(G):
    with pytest.raises(ValueError, match=r"expects images \[B, 3, 32, 32\].*load_image"):
        tiny_encoder(G)(torch.zeros(1, 3, 64, 64))


def test_encoder_config_validation_and_round_trip(G):
    config = EncoderConfig.for_generator(G, **TINY_ENCODER)
    assert (config.resolution, config.num_ws, config.w_dim) == (32, 8, 64)
    assert EncoderConfig.from_dict(config.to_dict()) == config
    assert EncoderConfig.for_generator(Generator(GeneratorConfig(resolution=1024, channel_base=1024, channel_max=8,
                                                                 w_dim=8, z_dim=8, mapping_layers=1))
                                       ).input_resolution == 256
    with pytest.raises(ValueError, match="coarse_ws \\+ medium_ws must be at most num_ws=8"):
        EncoderConfig(resolution=32, num_ws=8, w_dim=64, coarse_ws=5, medium_ws=4)
    with pytest.raises(ValueError, match="power of two"):
        EncoderConfig(resolution=48, num_ws=8, w_dim=64)
    with pytest.raises(ValueError, match="unknown EncoderConfig fields"):
        EncoderConfig.from_dict({**config.to_dict(), "depth": 3})


# -- training ----------------------------------------------------------------------------------------------------------


def fast_training(**overrides) -> EncoderTrainConfig:
    # LPIPS off so that training tests run without the backbone weights; the LPIPS path is covered by embedding.
    return EncoderTrainConfig(**{"steps": 40, "batch_size": 8, "lr": 3e-3, "lpips_weight": 0.0,
                                 "preview_every": 20, **overrides})


def test_train_encoder_lowers_latent_loss_and_reports_progress(G):
    with torch.no_grad():  # held-out samples, drawn as in training (truncation 0.7)
        held_out_ws = G.mapping(torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(5)),
                                truncation_psi=0.7)
        held_out = G.synthesis(held_out_ws)
    encoder = tiny_encoder(G)
    with torch.no_grad():
        error_before = (encoder(held_out) - held_out_ws).square().mean()
    state_before = copy.deepcopy(G.state_dict())
    events = []
    history = train_encoder(G, encoder, None, fast_training(), progress=events.append)

    with torch.no_grad():
        error_after = (encoder(held_out) - held_out_ws).square().mean()
    # A random tiny generator is hard to invert, so 40 steps gain only a few percent; an encoder that does not
    # learn stays at exactly w_avg (zero-initialised heads).
    assert error_after < 0.97 * error_before
    assert len(history) == 40 and set(history[0]) == {"loss", "latent", "l2"}
    assert [e.step for e in events] == list(range(1, 41)) and all(e.total == 40 for e in events)
    assert all(e.stage == "train-encoder" for e in events)
    previews = [e.step for e in events if e.preview_image is not None]
    assert previews == [20, 40] and events[-1].preview_image.shape == (3, 32, 64)  # sample | reconstruction
    assert all(torch.equal(value, state_before[name]) for name, value in G.state_dict().items())
    assert all(p.grad is None for p in [*G.parameters(), *encoder.parameters()])


def test_train_encoder_mixes_in_real_images(G):
    real, _ = samples(G, 2, seed=5)
    history = train_encoder(G, tiny_encoder(G), lambda: real, fast_training(steps=2))
    assert set(history[0]) == {"loss", "latent", "l2", "real_l2"}
    history = train_encoder(G, tiny_encoder(G), [real, real[:1]], fast_training(steps=3))  # an iterable is reused
    assert len(history) == 3


def test_train_encoder_rejects_badly_shaped_real_images(G):
    with pytest.raises(ValueError, match=r"real images must be batches \[B, 3, 32, 32\]"):
        train_encoder(G, tiny_encoder(G), lambda: torch.zeros(2, 3, 16, 16), fast_training(steps=1))
    with pytest.raises(ValueError, match="yielded no batches"):
        train_encoder(G, tiny_encoder(G), [], fast_training(steps=1))


def test_resumed_training_equals_uninterrupted_training(G, tmp_path):
    uninterrupted = tiny_encoder(G)
    full_history = train_encoder(G, uninterrupted, None, fast_training(steps=6))

    first_part = tmp_path / "part.safetensors"
    train_encoder(G, tiny_encoder(G), None, fast_training(steps=3, checkpoint_path=str(first_part)))
    resumed = tiny_encoder(G, seed=99)  # different initial weights: everything must come from the checkpoint
    events = []
    history = train_encoder(G, resumed, None, fast_training(steps=6), progress=events.append, resume=first_part)

    assert [e.step for e in events] == [4, 5, 6]
    assert history == full_history
    for name, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=1e-6)


def test_resume_refuses_a_checkpoint_of_another_generator(G, tmp_path):
    path = tmp_path / "state.safetensors"
    train_encoder(G, tiny_encoder(G), None, fast_training(steps=1, checkpoint_path=str(path)))
    other = tiny_generator(seed=7)
    with pytest.raises(EncoderMismatchError, match="was trained for generator"):
        train_encoder(other, tiny_encoder(other), None, fast_training(steps=2), resume=path)


def test_saved_encoder_loads_for_its_generator_only(G, tmp_path):
    encoder = tiny_encoder(G)
    with torch.no_grad():
        for head in encoder.medium_heads:
            torch.nn.init.normal_(head.to_w.weight)
    path = tmp_path / "encoder.safetensors"
    save_encoder(path, encoder, G, meta={"steps": 0})
    loaded = load_encoder(path, G)
    images, _ = samples(G, 2, seed=3)
    assert loaded.config == encoder.config
    assert torch.equal(loaded(images), encoder(images))
    with pytest.raises(EncoderMismatchError, match="was trained for generator .* but this generator is"):
        load_encoder(path, tiny_generator(seed=7))


# -- embedding ---------------------------------------------------------------------------------------------------------


def test_learning_rate_schedule_ramps_up_holds_and_ramps_down():
    config = EmbedConfig(steps=100, lr=0.1, lr_rampup=0.05, lr_rampdown=0.25)
    rates = learning_rate_schedule(config)
    assert len(rates) == 100 and all(r > 0 for r in rates)
    assert rates[0] < 0.02 and all(a < b for a, b in zip(rates[:5], rates[1:6]))  # linear ramp-up over 5 steps
    assert rates[4] == pytest.approx(0.09)
    assert all(r == pytest.approx(0.1) for r in rates[5:75])  # flat
    assert all(a > b for a, b in zip(rates[75:], rates[76:]))  # cosine ramp-down over the last 25 steps
    assert rates[-1] < 2e-3 * config.lr and rates[87] == pytest.approx(0.05)  # half-way down at t = 0.875


def test_noise_regularizer_penalises_correlated_noise():
    white = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    smooth = torch.nn.functional.interpolate(white[None, None, :8, :8], size=(64, 64), mode="bilinear")[0, 0]
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert noise_regularizer([white]) < 1e-2 * noise_regularizer([smooth])
    assert noise_regularizer([white, smooth]) == pytest.approx(float(noise_regularizer([white])
                                                                      + noise_regularizer([smooth])))


def test_embed_rejects_wrong_inputs(G):
    with pytest.raises(ValueError, match=r"image must be \[B, 3, 32, 32\]"):
        embed_image(G, None, torch.zeros(1, 3, 31, 31))
    with pytest.raises(ValueError, match="optimize_noise embeds one image at a time"):
        embed_image(G, None, torch.zeros(2, 3, 32, 32), EmbedConfig(optimize_noise=True))


def test_embed_without_encoder_improves_each_image_and_leaves_generator_untouched(G, perceptual_vgg):
    targets, _ = samples(G, 2, seed=11)
    state_before = copy.deepcopy(G.state_dict())
    result = embed_image(G, None, targets, EmbedConfig(steps=15))

    assert result.ws.shape == (2, G.num_ws, G.config.w_dim) and result.image.shape == targets.shape
    assert result.best_step.shape == (2,) and bool((result.best_step > 0).all())
    assert set(result.history[0]) == {"loss", "lpips", "l2"} and len(result.history) == 16
    with torch.no_grad():
        start = G.synthesis(G.mapping.w_avg.expand(2, G.num_ws, -1))
        regenerated = G.synthesis(result.ws)
        start_loss = 10 * perceptual_vgg(start, targets) + ((start - targets) / 2).square().mean(dim=(1, 2, 3))
        end_l2 = ((regenerated - targets) / 2).square().mean(dim=(1, 2, 3))
        end_lpips = perceptual_vgg(regenerated, targets)
    assert bool((10 * end_lpips + end_l2 < 0.5 * start_loss).all())  # every image of the batch improved
    torch.testing.assert_close(result.image, regenerated)
    torch.testing.assert_close(result.lpips, end_lpips)
    torch.testing.assert_close(result.psnr, psnr(end_l2))
    assert result.noise is None
    assert all(torch.equal(value, state_before[name]) for name, value in G.state_dict().items())
    assert all(p.grad is None for p in G.parameters())


@pytest.mark.usefixtures("perceptual_vgg")  # skips without LPIPS weights
def test_embed_with_encoder_keeps_best_step_and_only_moves_the_latent(G):
    encoder = tiny_encoder(G)
    train_encoder(G, encoder, None, fast_training(steps=3))  # any non-trivial encoder will do
    target, _ = samples(G, 1, seed=12)
    generator_before = copy.deepcopy(G.state_dict())
    encoder_before = copy.deepcopy(encoder.state_dict())
    events = []
    config = EmbedConfig(steps=20, preview_every=8)
    result = embed_image(G, encoder, target, config, progress=events.append)

    losses = [h["loss"] for h in result.history]
    best = int(result.best_step)
    assert losses[best] == min(losses) and losses[best] < losses[0]
    assert "encoder" in result.history[0]  # the in-domain regulariser is on
    assert result.lpips.item() == pytest.approx(result.history[best]["lpips"], rel=1e-5)
    assert [e.step for e in events] == list(range(21)) and all(e.stage == "embed" for e in events)
    assert [e.step for e in events if e.preview_image is not None] == [0, 8, 16, 20]
    assert all(torch.equal(value, generator_before[name]) for name, value in G.state_dict().items())
    assert all(torch.equal(value, encoder_before[name]) for name, value in encoder.state_dict().items())
    assert all(p.grad is None for p in [*G.parameters(), *encoder.parameters()])


def test_the_same_image_embeds_to_the_same_latent(G):
    """Issue #21's "the same render embeds to the same latent": the embedding draws no random numbers, so two runs
    from one encoder guess end at the same W+, whatever the global random state did between them."""
    encoder = tiny_encoder(G)
    target, _ = samples(G, 1, seed=13)
    config = EmbedConfig(steps=12)
    torch.manual_seed(1)
    first = embed_image(G, encoder, target, config)
    torch.manual_seed(2)
    torch.randn(100)
    second = embed_image(G, encoder, target, config)
    assert torch.equal(first.ws, second.ws) and torch.equal(first.best_step, second.best_step)


@pytest.mark.usefixtures("perceptual_vgg")  # skips without LPIPS weights
def test_compiled_embedding_computes_the_eager_losses(G):
    """``compile_mode`` (Inductor on this CPU) changes how the synthesis, LPIPS and encoder passes run, not what they
    compute: the losses before and after an update agree with eager, and the update moved them (so gradients flowed
    through the compiled passes)."""
    encoder = tiny_encoder(G)
    target, _ = samples(G, 1, seed=14)
    torch._dynamo.reset()  # what other tests compiled (LPIPS) would be reused, and not counted below
    graphs_before = counters["stats"]["unique_graphs"]
    eager, compiled = (embed_image(G, encoder, target, EmbedConfig(steps=2, compile_mode=mode))
                       for mode in (None, "default"))
    assert counters["stats"]["unique_graphs"] - graphs_before >= 3  # synthesis, LPIPS, encoder
    for step in (0, 1):
        for name in ("loss", "lpips", "l2", "encoder"):
            assert compiled.history[step][name] == pytest.approx(eager.history[step][name], rel=1e-3, abs=1e-6)
    assert eager.history[1]["loss"] < 0.9 * eager.history[0]["loss"]
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        EmbedConfig(compile_mode="fast")


@pytest.mark.usefixtures("perceptual_vgg")  # skips without LPIPS weights
def test_embed_optimises_noise_on_copies(G):
    noisy = copy.deepcopy(G)
    with torch.no_grad():
        for name, param in noisy.synthesis.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.3)
    state_before = copy.deepcopy(noisy.state_dict())
    target, _ = samples(noisy, 1, seed=13)
    result = embed_image(noisy, None, target, EmbedConfig(steps=10, optimize_noise=True))

    buffers = dict(noisy.synthesis.named_buffers())
    assert set(result.noise) == {name for name in buffers if name.endswith("noise_const")}
    assert all(not torch.equal(result.noise[name], buffers[name]) for name in result.noise)
    assert int(result.best_step) > 0  # so every map went through the NVlabs normalisation
    for noise in result.noise.values():
        assert float(noise.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(noise.square().mean()) == pytest.approx(1.0, abs=1e-4)
    assert "noise" in result.history[0]
    assert all(torch.equal(value, state_before[name]) for name, value in noisy.state_dict().items())
    with torch.no_grad(), swapped_noise(noisy, result.noise):
        torch.testing.assert_close(noisy.synthesis(result.ws), result.image)


# -- the studio's encoder training: time budget and evaluation ---------------------------------------------------------


def test_a_time_budget_stops_at_a_chunk_boundary_with_the_start_of_the_uninterrupted_run(G):
    from editor_core.encoder_training import train_encoder_within

    config = fast_training(steps=20)  # chunks of 2 steps (a tenth of the run)
    uninterrupted = train_encoder(G, tiny_encoder(G), None, config)
    events = []
    cut = train_encoder_within(G, tiny_encoder(G), None, config, max_seconds=0, progress=events.append)
    assert cut == uninterrupted[:2]  # the first chunk always runs; the budget is spent after it
    assert [e.step for e in events] == [1, 2] and all(e.total == 20 for e in events)
    assert train_encoder_within(G, tiny_encoder(G), None, config, max_seconds=3600) == uninterrupted


def test_encoder_evaluation_measures_samples_photos_and_the_baseline(G):
    from editor_core.encoder_training import encoder_evaluation, final_losses

    photos, _ = samples(G, 3, seed=7)
    baseline = tiny_encoder(G, seed=2)
    train_encoder(G, baseline, None, fast_training(steps=2))
    figures = encoder_evaluation(G, tiny_encoder(G), fast_training(), real_images=photos, baseline=baseline,
                                 samples=4)
    assert set(figures) == {"eval_samples", "eval_psnr", "eval_latent_mse", "real_psnr", "baseline_psnr",
                            "baseline_latent_mse"} and figures["eval_samples"] == 4
    alone = encoder_evaluation(G, baseline, fast_training(), samples=4)
    assert set(alone) == {"eval_samples", "eval_psnr", "eval_latent_mse"}
    assert (figures["baseline_psnr"], figures["baseline_latent_mse"]) == (alone["eval_psnr"], alone["eval_latent_mse"])
    assert figures["eval_psnr"] != alone["eval_psnr"]  # another encoder on the same generator samples
    assert final_losses([{"loss": 4.0}, {"loss": 2.0}, {"loss": 1.0}], tail=2) == {"final_loss": 1.5}
