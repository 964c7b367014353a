"""StyleGAN2 networks: shapes, NVlabs layout, features, truncation, noise, modconv paths, resampling, discriminator."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from editor_core.networks import (Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, downsample2d,
                                  make_resample_filter, modulated_conv2d, upsample2d)

TINY = dict(z_dim=32, w_dim=64, channel_base=512, channel_max=64, mapping_layers=2)


def tiny_generator(resolution: int = 32, seed: int = 0, **overrides) -> Generator:
    """A tiny generator whose noise strengths, biases and w_avg are non-zero, so every term of the forward counts."""
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(resolution=resolution, **{**TINY, **overrides})).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith(("noise_strength", "bias")):
                p.add_(0.2 * torch.randn_like(p))
        G.mapping.w_avg.normal_()
    return G


@pytest.mark.parametrize("resolution, channel_base, channel_max", [(32, 512, 64), (64, 1024, 32), (64, 256, 64)])
def test_generator_shapes(resolution, channel_base, channel_max):
    config = GeneratorConfig(resolution=resolution, z_dim=16, w_dim=24, channel_base=channel_base,
                             channel_max=channel_max, mapping_layers=3)
    G = Generator(config).eval()
    assert G.num_ws == config.num_ws == 2 * int(math.log2(resolution)) - 2
    ws = G.mapping(torch.randn(3, 16))
    assert ws.shape == (3, G.num_ws, 24)
    img = G.synthesis(ws)
    assert img.shape == (3, 3, resolution, resolution) and img.dtype == torch.float32
    assert G(torch.randn(2, 16)).shape == (2, 3, resolution, resolution)
    expected_channels = [config.channels_at(4)]
    for res in config.block_resolutions[1:]:
        expected_channels += [config.channels_at(res)] * 2
    assert G.feature_channels == expected_channels
    assert G.feature_resolutions == [4] + [r for r in config.block_resolutions[1:] for _ in range(2)]


def test_state_dict_uses_nvlabs_names_and_layouts():
    G = Generator(GeneratorConfig(resolution=32, **TINY))
    shapes = {name: tuple(t.shape) for name, t in G.state_dict().items()}
    c4, c8 = G.config.channels_at(4), G.config.channels_at(8)
    assert shapes["mapping.fc0.weight"] == (64, 32) and shapes["mapping.fc1.bias"] == (64,)
    assert shapes["mapping.w_avg"] == (64,)
    assert shapes["synthesis.b4.const"] == (c4, 4, 4)
    assert shapes["synthesis.b4.conv1.weight"] == (c4, c4, 3, 3)
    assert shapes["synthesis.b8.conv0.weight"] == (c8, c4, 3, 3)
    assert shapes["synthesis.b8.conv0.affine.weight"] == (c4, 64)
    assert shapes["synthesis.b8.conv0.noise_const"] == (8, 8)
    assert shapes["synthesis.b8.conv0.noise_strength"] == ()
    assert shapes["synthesis.b8.conv0.resample_filter"] == (4, 4)
    assert shapes["synthesis.b8.resample_filter"] == (4, 4)
    assert shapes["synthesis.b8.torgb.weight"] == (3, c8, 1, 1)
    assert shapes["synthesis.b32.torgb.bias"] == (3,)
    assert "synthesis.b4.conv0.weight" not in shapes


def test_features_are_the_computed_conv_outputs_and_carry_gradients_to_ws():
    G = tiny_generator().requires_grad_(False)
    captured = {}
    G.synthesis.b32.conv1.register_forward_hook(lambda module, args, out: captured.setdefault("b32.conv1", out))
    ws = G.mapping(torch.randn(2, 32)).requires_grad_(True)
    img, features = G.synthesis(ws, return_features=True)
    assert len(features) == len(G.feature_channels) == len(G.feature_resolutions)
    for feature, channels, res in zip(features, G.feature_channels, G.feature_resolutions):
        assert feature.shape == (2, channels, res, res)
    assert features[-1] is captured["b32.conv1"]   # the network's own tensor, not a copy
    assert torch.equal(img, G.synthesis(ws))

    # b4.conv1 (features[0]) depends on the first w only.
    features[0].square().sum().backward()
    assert ws.grad[:, 0].abs().sum() > 0
    assert torch.count_nonzero(ws.grad[:, 1:]) == 0


def test_truncation():
    G = tiny_generator()
    z = torch.randn(4, 32)
    ws = G.mapping(z)
    w_avg = G.mapping.w_avg
    assert torch.allclose(G.mapping(z, truncation_psi=0.0), w_avg.expand_as(ws))
    half = G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(half, w_avg + 0.5 * (ws - w_avg), atol=1e-6)
    cut = G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(cut[:, :3], half[:, :3]) and torch.equal(cut[:, 3:], ws[:, 3:])


def test_update_emas_moves_w_avg_towards_the_batch_mean():
    G = tiny_generator()
    before = G.mapping.w_avg.clone()
    ws = G.mapping(torch.randn(8, 32), update_emas=True)
    expected = ws[:, 0].mean(0).lerp(before, G.config.w_avg_beta)
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)
    G.mapping(torch.randn(8, 32))
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)


def test_noise_modes():
    G = tiny_generator()
    ws = G.mapping(torch.randn(2, 32))
    const_a, const_b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(const_a, const_b)
    random_a, random_b = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(random_a, random_b)
    none = G.synthesis(ws, noise_mode="none")
    assert not torch.allclose(none, const_a)
    with torch.no_grad():
        for name, buffer in G.named_buffers():
            if name.endswith("noise_const"):
                buffer.zero_()
    assert torch.allclose(G.synthesis(ws, noise_mode="const"), none, atol=1e-6)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")


def test_fused_and_non_fused_modconv_agree():
    G = tiny_generator(resolution=64)
    ws = G.mapping(torch.randn(3, 32)) + 0.3 * torch.randn(3, G.num_ws, 64)
    fused, fused_features = G.synthesis(ws, fused_modconv=True, return_features=True)
    plain, plain_features = G.synthesis(ws, fused_modconv=False, return_features=True)
    assert (fused - plain).abs().max() <= 1e-5
    for a, b in zip(fused_features, plain_features):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_modulated_conv_matches_per_sample_reference():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 5, 6, 6), torch.randn(7, 5, 3, 3), torch.randn(2, 5)
    f = make_resample_filter()
    for up in (False, True):
        for demodulate in (True, False):
            expected = []
            for sample in range(2):
                w = weight * styles[sample].reshape(1, 5, 1, 1)
                if demodulate:
                    w = w / w.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
                xi = x[sample:sample + 1]
                if up:   # NVlabs conv2d_resample reference path: zero insertion, pad (3, 2), FIR x4, convolution
                    xi = F.conv2d(F.pad(_zero_insert(xi), (3, 2, 3, 2)), (4 * f).expand(5, 1, 4, 4), groups=5)
                    expected.append(F.conv2d(xi, w.flip([2, 3])))
                else:
                    expected.append(F.conv2d(xi, w, padding=1))
            expected = torch.cat(expected)
            for fused in (True, False):
                out = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_filter=f,
                                       fused=fused)
                assert out.shape == expected.shape
                assert torch.allclose(out, expected, atol=1e-4), (up, demodulate, fused)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_modulated_conv_runs_in_reduced_precision(dtype):
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 16, 8, 8), torch.randn(8, 16, 3, 3), torch.randn(2, 16)
    f = make_resample_filter()
    for up in (False, True):
        for fused in (True, False):
            reference = modulated_conv2d(x, weight, styles, up=up, resample_filter=f, fused=fused)
            out = modulated_conv2d(x.to(dtype), weight, styles, up=up, resample_filter=f, fused=fused)
            assert out.dtype == dtype
            assert (out.float() - reference).abs().max() <= 0.02 * reference.abs().max()


def _zero_insert(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, 2 * h, 2 * w)
    out[..., ::2, ::2] = x
    return out


def test_resampling_matches_upfirdn_definition():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    f = make_resample_filter()
    # NVlabs upsample2d: insert zeros, pad (2, 1), filter with gain 4.
    expected_up = F.conv2d(F.pad(_zero_insert(x), (2, 1, 2, 1)), (4 * f).expand(3, 1, 4, 4), groups=3)
    assert torch.allclose(upsample2d(x, f), expected_up, atol=1e-6)
    # NVlabs downsample2d: pad (1, 1), filter, keep every second pixel.
    expected_down = F.conv2d(F.pad(x, (1, 1, 1, 1)), f.expand(3, 1, 4, 4), groups=3)[..., ::2, ::2]
    assert torch.allclose(downsample2d(x, f), expected_down, atol=1e-6)
    # A constant image stays constant away from the borders (unit DC gain).
    assert torch.allclose(upsample2d(torch.ones(1, 1, 8, 8), f)[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))


def test_reduced_precision_blocks_stay_float32_on_cpu():
    G = tiny_generator()
    G_fp16 = Generator(GeneratorConfig(resolution=32, **TINY, num_fp16_res=2, fp16_dtype="bfloat16")).eval()
    G_fp16.load_state_dict(G.state_dict())
    ws = G.mapping(torch.randn(2, 32))
    img, features = G_fp16.synthesis(ws, return_features=True)
    assert all(feature.dtype == torch.float32 for feature in features)
    assert torch.equal(img, G.synthesis(ws))


def test_config_dict_round_trip_and_validation():
    config = GeneratorConfig(resolution=64, **TINY, conv_clamp=256, num_fp16_res=2)
    data = json.loads(json.dumps(config.to_dict()))
    assert GeneratorConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown GeneratorConfig fields"):
        GeneratorConfig.from_dict({**data, "c_dim": 10})
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(resolution=48)
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(resolution=16)
    with pytest.raises(ValueError, match="architecture"):
        GeneratorConfig(resolution=32, architecture="resnet")
    for config_class in (GeneratorConfig, DiscriminatorConfig):
        with pytest.raises(ValueError, match="fp16_dtype"):
            config_class(resolution=32, fp16_dtype="float8")
        with pytest.raises(ValueError, match="conv_clamp"):
            config_class(resolution=32, conv_clamp=0)
        with pytest.raises(ValueError, match="num_fp16_res"):
            config_class(resolution=32, num_fp16_res=-1)
    d_config = DiscriminatorConfig(resolution=64, channel_base=1024, channel_max=64, conv_clamp=256)
    assert DiscriminatorConfig.from_dict(json.loads(json.dumps(d_config.to_dict()))) == d_config


def test_bad_latent_shapes_are_rejected():
    G = tiny_generator()
    with pytest.raises(ValueError, match=r"z must have shape \[B, 32\]"):
        G.mapping(torch.randn(2, 64))
    with pytest.raises(ValueError, match=r"ws must have shape \[B, 8, 64\]"):
        G.synthesis(torch.randn(2, 7, 64))


@pytest.mark.parametrize("resolution, batch", [(32, 4), (64, 2)])
def test_discriminator_shape_names_and_backward(resolution, batch):
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(resolution=resolution, channel_base=1024, channel_max=64))
    names = set(D.state_dict())
    assert {f"b{resolution}.fromrgb.weight", f"b{resolution}.conv0.weight", f"b{resolution}.conv1.weight",
            f"b{resolution}.skip.weight", "b8.skip.weight", "b4.conv.weight", "b4.fc.weight",
            "b4.out.weight", "b4.out.bias"} <= names
    assert "b16.fromrgb.weight" not in names   # only the first block reads the image (resnet architecture)
    img = torch.randn(batch, 3, resolution, resolution, requires_grad=True)
    logits = D(img)
    assert logits.shape == (batch, 1) and logits.dtype == torch.float32
    logits.sum().backward()
    assert img.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())


def test_networks_trace_without_graph_breaks():
    G = tiny_generator()
    D = Discriminator(DiscriminatorConfig(resolution=32, channel_base=512, channel_max=64))
    ws = G.mapping(torch.randn(2, 32))
    synthesis = torch.compile(G.synthesis, backend="eager", fullgraph=True)
    img, features = synthesis(ws, return_features=True)
    assert torch.allclose(img, G.synthesis(ws), atol=1e-6) and len(features) == len(G.feature_channels)
    assert torch.allclose(torch.compile(D, backend="eager", fullgraph=True)(img), D(img), atol=1e-6)
