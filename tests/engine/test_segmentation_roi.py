"""The ROI-pixel path of the segmentation ensemble (used by every edit step) equals the full-map forward.

Coarse maps are projected at native resolution and sampled once; fine maps are sampled before projecting. Which maps
take which route depends on the number of pixels asked for, so the check sweeps that number across the switch points.
"""
from __future__ import annotations

import pytest
import torch

from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble

CHANNELS = [64, 64, 64, 32, 32, 16, 16, 8, 8]
RESOLUTIONS = [4, 8, 8, 16, 16, 32, 32, 64, 64]


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("pixels", [10, 200, 1500, 4096])
def test_roi_pixels_equal_the_full_map_in_value_and_gradient(upsample, pixels):
    torch.manual_seed(0)
    config = SegmentationConfig(CHANNELS, RESOLUTIONS, num_classes=5, resolution=64, hidden=(16, 8),
                                ensemble_size=3, upsample=upsample)
    ensemble = SegmentationEnsemble(config).eval()
    features = [torch.randn(2, c, r, r, requires_grad=True) for c, r in zip(CHANNELS, RESOLUTIONS)]
    index = torch.stack([torch.randperm(64 * 64)[:pixels] for _ in range(2)])

    at_pixels = ensemble.forward_pixels(features, index)                                    # [B, E, K, P]
    grads = torch.autograd.grad(at_pixels.square().sum(), features)
    full = ensemble(features).flatten(3)
    reference = full.gather(3, index[:, None, None, :].expand(-1, 3, 5, -1))
    reference_grads = torch.autograd.grad(reference.square().sum(), features)

    torch.testing.assert_close(at_pixels, reference, atol=1e-6, rtol=1e-5)
    for grad, expected in zip(grads, reference_grads):
        torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)
