"""Measures of segmentations and reconstructions, on tensors.

One definition for the engine, the worker, the demo pipeline and the benchmarks:

* IoU: ``class_iou`` (per class, from predicted and target label tensors), ``mean_iou`` (skipping classes absent
  from both), ``iou_table`` (per-class rows with names, colours and pixel counts) and ``named_iou``.
* Reconstruction: ``image_distances`` (LPIPS, L2), ``psnr``, ``masked_psnr``, ``mean_abs_change`` (mean |Δ| in a
  region), ``reconstruction_quality`` (PSNR / LPIPS of latents against images), ``encoder_quality``.
* ``mean_and_std`` of per-image figures.

Shapes: label masks int ``[..., H, W]`` (any equal shapes); images ``[B, C, H, W]`` in ``[-1, 1]``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # annotations only: measuring IoU needs no LPIPS (nor torchvision) loaded
    from editor_core.perceptual import PerceptualLoss

LPIPS_RESOLUTION = 256  # LPIPS is measured at most at 256², as the NVlabs projector does


# ---------------------------------------------------------------------------------------------------------------------
# Intersection over union


def class_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_absent: bool = True) -> torch.Tensor:
    """Per-class intersection over union ``[K]`` of integer masks of equal shape.

    A class absent from both ``pred`` and ``target`` gets NaN when ``ignore_absent`` (so ``nanmean`` skips it),
    else 1.0 (both agree that it is absent).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {list(pred.shape)} and {list(target.shape)}")
    for name, mask in (("pred", pred), ("target", target)):
        if mask.dtype.is_floating_point or mask.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class indices, got {mask.dtype}")
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= num_classes):
            raise ValueError(f"{name} labels must be in 0..{num_classes - 1}, found {int(mask.min())}.."
                             f"{int(mask.max())}")
    pairs = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    confusion = torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)
    intersection = confusion.diagonal().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - intersection
    absent_value = float("nan") if ignore_absent else 1.0
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.full_like(union, absent_value)).float()


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_absent: bool = True,
             classes: Optional[Sequence[int]] = None) -> float:
    """Mean of ``class_iou`` over the classes present in ``pred`` or ``target`` (all classes if not
    ``ignore_absent``), of only ``classes`` when given; NaN when none of them is present."""
    iou = class_iou(pred, target, num_classes, ignore_absent)
    if classes is not None:
        iou = iou[list(classes)]
    return float(iou.nanmean()) if not iou.isnan().all() else math.nan


def named_iou(iou: torch.Tensor, names: Sequence[str], digits: int = 4) -> dict[str, Optional[float]]:
    """``{class name: IoU rounded to digits}`` of a ``class_iou`` result ``[K]``; ``None`` for an absent class."""
    return {name: None if math.isnan(value) else round(value, digits) for name, value in zip(names, iou.tolist())}


def iou_table(pred: torch.Tensor, target: torch.Tensor, class_rows: Sequence[tuple[str, str]]) -> dict:
    """Per-class IoU of ``pred`` against ``target`` over all their pixels, as the studio shows it:
    ``{"mean_iou", "per_class_iou": [{class, name, colour, iou, pixels}]}`` in class-index order, where
    ``class_rows`` are the ``(name, colour)`` of each class and ``pixels`` the class's pixels in ``target``.
    A class in neither gets ``iou: None`` (the mean skips it); ``mean_iou`` is ``None`` when no class is present."""
    num_classes = len(class_rows)
    pred, target = pred.cpu(), target.cpu()
    iou = class_iou(pred, target, num_classes)
    pixels = torch.bincount(target.flatten().long(), minlength=num_classes)
    return {"mean_iou": float(iou.nanmean()) if not iou.isnan().all() else None,
            "per_class_iou": [{"class": k, "name": name, "colour": colour,
                               "iou": None if math.isnan(value) else round(float(value), 6),
                               "pixels": int(pixels[k])}
                              for k, ((name, colour), value) in enumerate(zip(class_rows, iou.tolist()))]}


# ---------------------------------------------------------------------------------------------------------------------
# Reconstruction


def image_distances(perceptual: Optional[PerceptualLoss], generated: torch.Tensor, target: torch.Tensor,
                    lpips_resolution: int = LPIPS_RESOLUTION, lpips_target=None
                    ) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """Per-image ``(LPIPS [B] or None without a perceptual loss, L2 [B])`` between ``[B, 3, H, W]`` images.

    L2 is the mean squared error on the ``[0, 1]`` scale, the scale the release's loss weights were tuned for.
    Images larger than ``lpips_resolution`` are area-downsampled for LPIPS, as the NVlabs projector does at 256².
    ``lpips_target``: ``target``'s precomputed ``perceptual.reference`` (of the downsampled target) when ``target``
    stays the same over many calls.
    """
    l2 = ((generated - target) / 2).square().mean(dim=(1, 2, 3))
    if perceptual is None:
        return None, l2
    generated, target = (lpips_sized(x, lpips_resolution) for x in (generated, target))
    return perceptual(generated, target if lpips_target is None else lpips_target), l2


def lpips_sized(image: torch.Tensor, lpips_resolution: int) -> torch.Tensor:
    """``image`` ``[B, C, H, W]`` area-downsampled to ``lpips_resolution``² when larger, else as it is."""
    if image.shape[-1] > lpips_resolution:
        return F.interpolate(image, size=(lpips_resolution,) * 2, mode="area")
    return image


def psnr(l2: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in ``[0, 1]`` from their mean squared error ``[B]``."""
    return -10.0 * torch.log10(l2.clamp_min(1e-10))


def masked_psnr(image: torch.Tensor, reference: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, images on ``[0, 1]``) of ``image`` against ``reference`` ``[B, C, H, W]`` pooled over the pixels
    where ``region`` ``[B, 1, H, W]`` is 1 → a 0-d tensor."""
    error = (((image - reference) / 2).square() * region).sum() / (region.sum() * image.shape[1]).clamp_min(1)
    return psnr(error[None])[0]


def mean_abs_change(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean ``|a − b|`` per channel on the 0–255 scale over the pixels of ``region`` (bool ``[B, 1, H, W]``) of
    images ``[B, C, H, W]`` → ``[B]``."""
    return ((a - b).abs() * 127.5 * region).flatten(1).sum(1) / (region.flatten(1).sum(1) * a.shape[1])


@torch.no_grad()
def reconstruction_quality(generator: nn.Module, ws: torch.Tensor, images: torch.Tensor,
                           perceptual: Optional[PerceptualLoss], batch: int,
                           lpips_resolution: int = LPIPS_RESOLUTION) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(psnr [N], lpips [N] or None without a perceptual loss)`` on the CPU of ``generator.synthesis(ws)``
    (constant noise, ``batch`` latents at a time) against ``images`` ``[N, 3, R, R]``."""
    psnrs, lpipses = [], []
    for start in range(0, len(ws), batch):
        part = slice(start, start + batch)
        generated = generator.synthesis(ws[part], noise_mode="const")
        lpips, l2 = image_distances(perceptual, generated, images[part], lpips_resolution)
        psnrs.append(psnr(l2).cpu())
        if lpips is not None:
            lpipses.append(lpips.cpu())
    return torch.cat(psnrs), torch.cat(lpipses) if lpipses else None


@torch.no_grad()
def encoder_quality(generator: nn.Module, encoder: nn.Module, images: torch.Tensor,
                    true_ws: Optional[torch.Tensor] = None, perceptual: Optional[PerceptualLoss] = None,
                    lpips_resolution: int = LPIPS_RESOLUTION) -> dict[str, float]:
    """How well ``generator(encoder(images))`` reconstructs ``images``: mean ``psnr`` (dB), ``lpips`` (with
    ``perceptual``), and ``latent_mse``, the W+ error, when the true latents ``true_ws`` are known. The encoder runs
    in eval mode and is left in the mode it was in."""
    was_training = encoder.training
    encoder.eval()
    ws = encoder(images)
    encoder.train(was_training)
    psnrs, lpips = reconstruction_quality(generator, ws, images, perceptual, len(images), lpips_resolution)
    quality = {"psnr": float(psnrs.mean())}
    if lpips is not None:
        quality["lpips"] = float(lpips.mean())
    if true_ws is not None:
        quality["latent_mse"] = float((ws - true_ws).square().mean())
    return quality


def mean_and_std(values: torch.Tensor) -> dict[str, float]:
    """``{"mean", "std"}`` of per-image figures ``[N]`` (std 0 for one image)."""
    values = values.double()
    return {"mean": float(values.mean()), "std": float(values.std()) if len(values) > 1 else 0.0}
