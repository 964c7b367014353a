"""editor_core.metrics on hand-made tensors: IoU tables, PSNR / LPIPS / L2, masked changes, encoder quality."""
import math

import pytest
import torch
from torch import nn

from editor_core.metrics import (class_iou, encoder_quality, image_distances, iou_table, masked_psnr,
                                 mean_abs_change, mean_and_std, mean_iou, named_iou, psnr, reconstruction_quality)

PRED = torch.tensor([[0, 0, 1], [1, 2, 2]])
TARGET = torch.tensor([[0, 1, 1], [1, 2, 0]])


# -- intersection over union ------------------------------------------------------------------------------------------


def test_class_iou_on_hand_made_masks():
    iou = class_iou(PRED, TARGET, num_classes=4)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(iou[3])
    assert class_iou(PRED, TARGET, 4, ignore_absent=False)[3] == 1.0
    assert mean_iou(PRED, TARGET, 4) == pytest.approx(0.5)
    assert mean_iou(PRED, TARGET, 4, ignore_absent=False) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2 + 1) / 4)
    assert mean_iou(TARGET, TARGET, 4) == 1.0


def test_mean_iou_of_chosen_classes_skips_absent_ones_and_is_nan_when_none_is_present():
    assert mean_iou(PRED, TARGET, 4, classes=(1, 2)) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert mean_iou(PRED, TARGET, 4, classes=(2, 3)) == pytest.approx(1 / 2)
    assert math.isnan(mean_iou(PRED, TARGET, 4, classes=(3,)))


def test_class_iou_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        class_iou(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="0..1"):
        class_iou(torch.full((2, 2), 2), torch.zeros(2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="integer"):
        class_iou(torch.zeros(2, 2), torch.zeros(2, 2), 2)


def test_iou_table_has_a_row_per_class_with_name_colour_and_target_pixels():
    rows = [("bg", "#000000"), ("skin", "#ffcc99"), ("eye", "#0000ff"), ("hat", "#ff0000")]
    table = iou_table(PRED, TARGET, rows)
    assert table["mean_iou"] == pytest.approx(0.5)
    assert table["per_class_iou"] == [
        {"class": 0, "name": "bg", "colour": "#000000", "iou": pytest.approx(1 / 3, abs=1e-6), "pixels": 2},
        {"class": 1, "name": "skin", "colour": "#ffcc99", "iou": pytest.approx(2 / 3, abs=1e-6), "pixels": 3},
        {"class": 2, "name": "eye", "colour": "#0000ff", "iou": 0.5, "pixels": 1},
        {"class": 3, "name": "hat", "colour": "#ff0000", "iou": None, "pixels": 0}]


def test_iou_table_of_empty_masks_has_no_mean():
    empty = torch.zeros(0, 4, 4, dtype=torch.long)
    table = iou_table(empty, empty, [("bg", "#000000")])
    assert table == {"mean_iou": None,
                     "per_class_iou": [{"class": 0, "name": "bg", "colour": "#000000", "iou": None, "pixels": 0}]}


def test_named_iou_rounds_and_marks_absent_classes():
    assert named_iou(class_iou(PRED, TARGET, 4), ["bg", "skin", "eye", "hat"]) == {
        "bg": 0.3333, "skin": 0.6667, "eye": 0.5, "hat": None}


# -- reconstruction ---------------------------------------------------------------------------------------------------


def test_psnr_and_l2_on_the_0_1_scale():
    target = torch.zeros(2, 3, 4, 4)
    generated = target.clone()
    generated[0] += 0.2   # 0.1 on the [0, 1] scale: MSE 0.01 → 20 dB
    lpips, l2 = image_distances(None, generated, target)
    assert lpips is None
    assert l2.tolist() == pytest.approx([0.01, 0.0])
    assert psnr(l2).tolist() == pytest.approx([20.0, 100.0])   # identical images: the 1e-10 floor


def test_lpips_is_measured_at_most_at_the_lpips_resolution():
    seen = []

    def perceptual(a, b):
        seen.append(a.shape[-1])
        return (a - b).abs().mean(dim=(1, 2, 3))

    image = torch.rand(1, 3, 64, 64)
    image_distances(perceptual, image, image, lpips_resolution=32)
    image_distances(perceptual, image, image, lpips_resolution=128)
    assert seen == [32, 64]


def test_masked_psnr_reads_only_the_region():
    reference = torch.zeros(1, 3, 4, 4)
    image = reference.clone()
    image[..., :2, :] = 0.2      # inside: MSE 0.01 on [0, 1] → 20 dB
    image[..., 2:, :] = 2.0      # outside the region: ignored
    region = torch.zeros(1, 1, 4, 4)
    region[..., :2, :] = 1
    assert float(masked_psnr(image, reference, region)) == pytest.approx(20.0, abs=1e-4)


def test_mean_abs_change_is_per_channel_on_the_0_255_scale():
    """One grey level more in every channel of the region reads 1, not 3 (the channels were summed before)."""
    a = torch.zeros(1, 3, 4, 4)
    region = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    region[..., :2, :] = True
    b = a + region / 127.5
    assert float(mean_abs_change(b, a, region)[0]) == pytest.approx(1.0)


def test_mean_and_std():
    assert mean_and_std(torch.tensor([1.0, 3.0])) == pytest.approx({"mean": 2.0, "std": math.sqrt(2)})
    assert mean_and_std(torch.tensor([5.0])) == {"mean": 5.0, "std": 0.0}


class _Synthesis(nn.Module):
    """A "generator" whose image is its latent reshaped: ``[B, 3, 2, 2]`` from ``ws`` ``[B, 1, 12]``."""

    def synthesis(self, ws: torch.Tensor, noise_mode: str) -> torch.Tensor:
        assert noise_mode == "const"
        return ws.reshape(len(ws), 3, 2, 2)


class _Encoder(nn.Module):
    def __init__(self, offset: float):
        super().__init__()
        self.offset = offset

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert not self.training, "measured in eval mode"
        return images.reshape(len(images), 1, 12) + self.offset


def test_reconstruction_quality_in_batches():
    images = torch.zeros(5, 3, 2, 2)
    ws = images.reshape(5, 1, 12) + torch.tensor([0.2, 0.2, 0.0, 0.2, 0.2])[:, None, None]
    psnrs, lpips = reconstruction_quality(_Synthesis(), ws, images, None, batch=2)
    assert lpips is None
    assert psnrs.tolist() == pytest.approx([20.0, 20.0, 100.0, 20.0, 20.0])


def test_encoder_quality_measures_images_and_latents_and_restores_the_mode():
    images = torch.zeros(3, 3, 2, 2)
    encoder = _Encoder(offset=0.2).train()
    true_ws = images.reshape(3, 1, 12)
    quality = encoder_quality(_Synthesis(), encoder, images, true_ws)
    assert quality == pytest.approx({"psnr": 20.0, "latent_mse": 0.04})
    assert encoder.training
    with_lpips = encoder_quality(_Synthesis(), encoder, images, perceptual=lambda a, b: (a - b).abs().mean((1, 2, 3)))
    assert with_lpips == pytest.approx({"psnr": 20.0, "lpips": 0.2})
