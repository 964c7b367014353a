"""Image input and output: user files → generator frames, tensors → image files, label masks ↔ PNG.

Artists upload whatever their camera or paint program wrote: any size and aspect, RGBA, greyscale, palette, 16-bit
PNGs, JPEGs whose pixels are stored sideways with an EXIF orientation tag. ``load_image`` turns all of them into the
generator's square frame, ``[1, 3, size, size]`` in ``[-1, 1]``; anything it cannot use raises ``ImageInputError``
with a message that says what is wrong, so services can show it to the user as it is.

Masks are stored as PNG label images: a palette PNG whose indices are the class labels (and whose palette is the
schema's colours, so the file also looks right in any viewer), or a greyscale PNG of raw indices without a schema.
``mask_to_png`` / ``png_to_mask`` are exact inverses.
"""
from __future__ import annotations

import io
import math
import numbers
import os
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from editor_core.schema import LabelSchema

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]
Box = tuple[float, float, float, float]  # (x, y, width, height) in source pixels
RGB = tuple[int, int, int]

# Beyond this the decoded image alone takes ~0.5 GB as float32 RGB; real photos fit comfortably under it.
DEFAULT_MAX_PIXELS = 40_000_000
# 16-bit greyscale PNGs open as one of these, depending on the Pillow version and byte order.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_MAX_MASK_LABEL = 255  # 8-bit PNG label images
# What Pillow's decoders raise on broken data.
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


class ImageInputError(ValueError):
    """An input image cannot be used; the message says why and what the user can do about it."""


class ImageTooLargeError(ImageInputError):
    """The image has more pixels than the configured limit (or looks like a decompression bomb)."""


# -- loading -----------------------------------------------------------------------------------------------------------


def load_image(source: ImageSource, size: int, box: Optional[Box] = None, background: RGB = (255, 255, 255),
               max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode an image file and fit it into the generator's square frame.

    ``source`` is a path, the file's bytes, or a binary file object. EXIF orientation is applied first, so ``box``
    ``(x, y, width, height)`` is in the pixel coordinates of the image *as displayed*. The box may reach past the
    image's edges (the outside is filled with ``background``) but must overlap it; a non-square box is centred in
    a square of its longer side (letterboxed with ``background``), so nothing is stretched. Without a box the
    largest centred square is used. Transparent pixels are composited over ``background`` (RGB 0..255).

    Returns ``float32 [1, 3, size, size]`` in ``[-1, 1]``.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    image = open_image(source, max_pixels)
    x, y, width, height = _resolve_box(box, image.size)
    side = max(width, height)
    canvas = np.empty((side, side, 3), dtype=np.float32)
    canvas[:] = np.asarray(background, dtype=np.float32) / 255.0

    # Only the part of the box that lies on the image is decoded to float, then placed in the letterboxed canvas.
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + width, image.width), min(y + height, image.height)
    pixels = _to_float_rgb(image.crop((left, top, right, bottom)), background)
    canvas_x, canvas_y = (side - width) // 2 + left - x, (side - height) // 2 + top - y
    canvas[canvas_y:canvas_y + pixels.shape[0], canvas_x:canvas_x + pixels.shape[1]] = pixels

    frame = torch.from_numpy(canvas).permute(2, 0, 1).unsqueeze(0)
    if side != size:
        frame = F.interpolate(frame, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return (frame.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()


def open_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` fully, upright (EXIF orientation applied); bad or oversized input → ``ImageInputError``.

    File-system errors (a missing file, no permission) propagate as they are: they are not the image's fault.
    """
    if isinstance(source, (bytes, bytearray)):
        return _decode(io.BytesIO(source), max_pixels)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            return _decode(stream, max_pixels)
    return _decode(source, max_pixels)


def _decode(stream: BinaryIO, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"image refused as a possible decompression bomb: {error}") from error
    except Image.UnidentifiedImageError as error:
        raise ImageInputError("not an image file Pillow can decode (expected PNG, JPEG, WebP, GIF, BMP, TIFF, …)"
                              ) from error
    except _DECODER_ERRORS as error:
        raise _damaged(error) from error
    # The header alone gives the size, so oversized images are refused before their pixels are decoded.
    if image.width * image.height > max_pixels:
        raise ImageTooLargeError(
            f"image is {image.width}×{image.height} = {image.width * image.height / 1e6:.1f} MP, more than the "
            f"limit of {max_pixels / 1e6:.1f} MP; scale it down before uploading")
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except _DECODER_ERRORS as error:
        raise _damaged(error) from error


def _damaged(error: Exception) -> ImageInputError:
    return ImageInputError(f"the image file is damaged or truncated and cannot be decoded: {error}")


def _resolve_box(box: Optional[Box], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """User box → integer ``(x, y, width, height)``; default the largest centred square."""
    image_width, image_height = image_size
    if box is None:
        side = min(image_width, image_height)
        return (image_width - side) // 2, (image_height - side) // 2, side, side
    if len(box) != 4 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in box):
        raise ImageInputError(f"crop box must be four finite numbers (x, y, width, height), got {box!r}")
    x, y, width, height = (int(round(v)) for v in box)
    if width <= 0 or height <= 0:
        raise ImageInputError(f"crop box width and height must be positive, got {width}×{height}")
    if x >= image_width or y >= image_height or x + width <= 0 or y + height <= 0:
        raise ImageInputError(f"crop box (x={x}, y={y}, w={width}, h={height}) lies entirely outside the "
                              f"{image_width}×{image_height} image; give a box that overlaps it")
    return x, y, width, height


def _to_float_rgb(image: Image.Image, background: RGB) -> np.ndarray:
    """Any Pillow mode → ``float32 [H, W, 3]`` in ``[0, 1]``, transparency composited over ``background``."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them, so scale here.
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    has_alpha = any(band in ("A", "a") for band in image.getbands()) or "transparency" in image.info
    try:
        converted = image.convert("RGBA" if has_alpha else "RGB")
    except ValueError as error:
        raise ImageInputError(f"images in colour mode {image.mode!r} are not supported; save it as RGB") from error
    pixels = np.asarray(converted, dtype=np.float32) / 255.0
    if not has_alpha:
        return pixels
    alpha = pixels[..., 3:]
    return pixels[..., :3] * alpha + np.asarray(background, dtype=np.float32) / 255.0 * (1.0 - alpha)


# -- saving ------------------------------------------------------------------------------------------------------------


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """``[3, H, W]`` or ``[1, 3, H, W]`` in ``[-1, 1]`` → 8-bit RGB image (values outside the range are clipped)."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}; convert them one by one")
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image tensor [3, H, W] or [1, 3, H, W], got {tuple(image.shape)}")
    # 8 bits and height × width × channels on the image's own device, in place after the first copy: a 1024² GPU
    # image then crosses as 3 MB of bytes instead of 12 MB of floats, and on a CPU the chain costs a third.
    pixels = image.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().cpu().numpy())


def image_png(image: torch.Tensor) -> bytes:
    """``[3, H, W]`` / ``[1, 3, H, W]`` in ``[-1, 1]`` → PNG bytes, zlib level 1: lossless all the same, and on a
    1024² GAN image about 5× faster than PIL's default level for a sixth more bytes (a slider's preview waits on it)."""
    buffer = io.BytesIO()
    tensor_to_pil(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_jpeg(image: torch.Tensor, quality: int = 92) -> bytes:
    """``[3, H, W]`` / ``[1, 3, H, W]`` in ``[-1, 1]`` → JPEG bytes: lossy, but a 1024² image encodes in ~10 ms
    where PNG takes ~150 ms, which is most of a GPU slider move's budget."""
    buffer = io.BytesIO()
    tensor_to_pil(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def fit_within(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """``[3, H, W]`` scaled down (area averaging, on its own device) so that its longer side is at most ``max_side``,
    keeping its aspect ratio; unchanged when it already fits. A preview shown in a 260-pixel box need not carry a
    1024² picture: at 512² its JPEG encodes 3.6× faster and is 3.8× smaller (docs/benchmarks.md)."""
    if max_side < 1:
        raise ValueError(f"max_side must be ≥ 1, got {max_side}")
    height, width = image.shape[-2:]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image[None].float(), size=size, mode="area")[0]


def save_image(image: torch.Tensor, path: Union[str, os.PathLike]) -> None:
    """Write ``[3, H, W]`` / ``[1, 3, H, W]`` in ``[-1, 1]`` to ``path``; the suffix picks the format."""
    tensor_to_pil(image).save(Path(path))


# -- masks -------------------------------------------------------------------------------------------------------------


def mask_to_png(mask: torch.Tensor, schema: Optional[LabelSchema] = None) -> bytes:
    """``int [H, W]`` / ``[1, H, W]`` class labels → PNG bytes; ``png_to_mask`` gives the same mask back.

    With a schema the PNG is a palette image in the schema's colours (labels must be below its class count);
    without one it is a greyscale image of the raw labels (0..255).
    """
    labels = _mask_labels(mask, schema.num_classes if schema is not None else _MAX_MASK_LABEL + 1)
    picture = Image.fromarray(labels)  # mode "L"
    if schema is not None:
        picture.putpalette([channel for colour in schema.colours for channel in colour])  # makes it mode "P"
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_array(mask: torch.Tensor, size: int) -> np.ndarray:
    """``int64 [h, w]`` class labels at any resolution → ``uint8 [size, size]`` (nearest), as stored masks are."""
    if mask.shape[-2:] != (size, size):
        mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0]
    return mask.to(torch.uint8).cpu().numpy()


def png_to_mask(source: ImageSource, schema: Optional[LabelSchema] = None) -> torch.Tensor:
    """A mask PNG → ``int64 [H, W]`` class labels.

    Palette and greyscale PNGs carry the labels as pixel values. A palette PNG whose palette is not the schema's
    (re-saved by another program) and RGB PNGs are decoded by exact colour match against ``schema``.
    """
    picture = open_image(source)
    if picture.mode == "L" or (picture.mode == "P" and _palette_matches(picture, schema)):
        labels = torch.from_numpy(np.asarray(picture).astype(np.int64))
        if schema is not None and labels.numel() and int(labels.max()) >= schema.num_classes:
            raise ImageInputError(f"mask has label {int(labels.max())} but schema {schema.name!r} has only "
                                  f"{schema.num_classes} classes")
        return labels
    if picture.mode not in ("P", "RGB", "RGBA"):
        raise ImageInputError(f"mask PNGs must be palette, greyscale or RGB images, got mode {picture.mode!r}")
    if schema is None:
        raise ImageInputError("this mask PNG stores colours, not labels; give the label schema to decode it")
    colours = np.asarray(picture.convert("RGBA"))
    if (colours[..., 3] != 255).any():
        raise ImageInputError("mask PNG has transparent pixels; every pixel must carry an opaque class colour")
    try:
        return schema.mask_from_colour_image(np.ascontiguousarray(colours[..., :3]))
    except ValueError as error:
        raise ImageInputError(str(error)) from error


def _mask_labels(mask: torch.Tensor, num_labels: int) -> np.ndarray:
    """Validated ``uint8 [H, W]`` labels of an integer mask ``[H, W]`` or ``[1, H, W]``."""
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"expected one mask [H, W] or [1, H, W], got shape {tuple(mask.shape)}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex or mask.dtype == torch.bool:
        raise ValueError(f"mask must hold integer class labels, got dtype {mask.dtype}")
    low, high = int(mask.min()), int(mask.max())
    if low < 0 or high >= num_labels:
        raise ValueError(f"mask labels must be in 0..{num_labels - 1}, found {low}..{high}")
    return mask.detach().cpu().to(torch.uint8).numpy()


def _palette_matches(picture: Image.Image, schema: Optional[LabelSchema]) -> bool:
    """Whether a palette image's indices are the schema's labels (always assumed without a schema)."""
    if schema is None:
        return True
    palette = picture.getpalette() or []
    expected = [channel for colour in schema.colours for channel in colour]
    return palette[:len(expected)] == expected
