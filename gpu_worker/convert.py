"""Engine tensors ↔ the files the studio stores (PNG images and masks, project-format latents)."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch

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
