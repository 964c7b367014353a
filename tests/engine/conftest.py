"""Shared tiny models for the engine tests: a 32² generator, a segmentation branch trained on it, LPIPS."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from editor_core.networks import Generator, GeneratorConfig

TINY_GENERATOR = GeneratorConfig(resolution=32, z_dim=64, w_dim=64, channel_base=512, channel_max=64,
                                 mapping_layers=2)
TINY_CLASSES = 3
REPO = Path(__file__).resolve().parents[2]


def run_device_script(name: str, *args: str, out: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``bin/<name> ARGS`` as a device call runs it: repository on PYTHONPATH, ``$OUT`` for the files that come
    back, and this test's own python3 first on PATH."""
    environment = {**os.environ, "OUT": str(out), "PYTHONPATH": str(REPO), **env,
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(REPO / "bin" / name), *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="session")
def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(TINY_GENERATOR).eval().requires_grad_(False)


@pytest.fixture(scope="session")
def perceptual_vgg():
    from editor_core.perceptual import BackboneWeightsMissing, get_perceptual_loss

    try:
        return get_perceptual_loss("vgg", "cpu")
    except BackboneWeightsMissing as missing:
        pytest.skip(f"LPIPS backbone weights are not fetched ({missing}); run bin/fetch-weights")


def luminance_labels(images: torch.Tensor, num_classes: int = TINY_CLASSES) -> torch.Tensor:
    """A labelling the tiny generator's images really have: luminance tertiles of each image. ``[B,H,W]`` int64."""
    luminance = images.mean(dim=1)
    edges = torch.quantile(luminance.flatten(1), torch.linspace(0, 1, num_classes + 1)[1:-1], dim=1).T  # [B, K-1]
    return (luminance[..., None] > edges[:, None, None, :]).sum(-1)


@pytest.fixture(scope="session")
def tiny_annotations(tiny_generator):
    """16 latents of the tiny generator and their luminance labels, as an annotator would have painted them."""
    with torch.no_grad():
        ws = tiny_generator.mapping(torch.randn(16, TINY_GENERATOR.z_dim, generator=torch.Generator().manual_seed(1)))
        images = tiny_generator.synthesis(ws)
    return ws, luminance_labels(images)


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_generator, tiny_annotations):
    """A small ensemble trained to segment the tiny generator's luminance classes."""
    from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, SegTrainConfig, train_segmentation

    config = SegmentationConfig.from_generator(tiny_generator, num_classes=TINY_CLASSES, hidden=(32, 16),
                                               ensemble_size=3)
    ensemble = SegmentationEnsemble(config, seed=0)
    ws, masks = tiny_annotations
    train_segmentation(tiny_generator, ensemble, ws, masks,
                       SegTrainConfig(max_steps=200, pixels_per_step=2048, patience=None, seed=0))
    ensemble.zero_grad(set_to_none=True)
    return ensemble.eval().requires_grad_(False)
