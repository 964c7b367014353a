"""Engine tensors ↔ the files the studio stores (PNG images and masks, project-format latents)."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from editor_core.bundle import save_latents
from editor_core.editing import resize_mask
from editor_core.images import tensor_to_pil


def image_png(image: torch.Tensor) -> bytes:
    """``[3, H, W]`` in [-1, 1] → PNG bytes."""
    buffer = io.BytesIO()
    tensor_to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_array(mask: torch.Tensor, size: int) -> np.ndarray:
    """``int64 [h, w]`` at the segmentation resolution → ``uint8 [size, size]`` (nearest), as stored masks are."""
    return resize_mask(mask[None], size)[0].to(torch.uint8).cpu().numpy()


def latent_bytes(ws: torch.Tensor, generator_id: str) -> bytes:
    """One W+ latent ``[num_ws, w_dim]`` as a project-format latents file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "latent.safetensors"
        save_latents(path, ws[None], generator_id)
        return path.read_bytes()


def uncertainty_map(uncertainty: torch.Tensor, size: int) -> tuple[np.ndarray, float]:
    """Per-pixel ensemble disagreement ``[h, w]`` (Jensen-Shannon divergence, nats) → ``(uint8 [size, size],
    peak)``: 0 = the members agree … 255 = ``peak``, the image's largest value. Relative to the image, not to the
    ceiling ``log E``: a useful branch disagrees by hundredths of a nat, which an absolute 8-bit scale would round
    to nothing, and "where to look" is a question about this image; ``peak`` gives the absolute values back
    (``value / 255 * peak``). Bilinear resize: it is a smooth field, not class indices."""
    field = uncertainty.detach().float().clamp_min(0.0)[None, None]
    if field.shape[-1] != size or field.shape[-2] != size:
        field = F.interpolate(field, size=(size, size), mode="bilinear", align_corners=False)
    peak = float(field.max())
    scaled = field[0, 0] / peak * 255 if peak > 0 else torch.zeros_like(field[0, 0])
    return scaled.round().clamp(0, 255).to(torch.uint8).cpu().numpy(), peak
