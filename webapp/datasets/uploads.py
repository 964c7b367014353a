"""Checks on uploaded images: format, byte size, pixel count (decompression bombs are refused before decoding)."""
from __future__ import annotations

import io
import warnings

from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}


def open_uploaded_image(data: bytes) -> Image.Image:
    """Decode an uploaded PNG/JPEG/WebP into an RGB image, or raise ValidationError saying why not."""
    if not data:
        raise ValidationError("the uploaded file is empty")
    if len(data) > settings.STUDIO_MAX_UPLOAD_BYTES:
        raise ValidationError(f"the file is {len(data)} bytes; the limit is {settings.STUDIO_MAX_UPLOAD_BYTES} bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # reads only the header
        except Image.UnidentifiedImageError:
            # Pillow's own message names an in-memory buffer object: nothing a user can act on.
            raise ValidationError("not a readable PNG, JPEG or WebP image (its contents are not a known image "
                                  "format)") from None
        except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValidationError(f"not a readable PNG, JPEG or WebP image ({exc})") from None
        if image.format not in ALLOWED_FORMATS:
            raise ValidationError(f"{image.format} images are not accepted: upload PNG, JPEG or WebP")
        width, height = image.size
        if width * height > settings.STUDIO_MAX_UPLOAD_PIXELS:
            raise ValidationError(f"the image is {width}×{height} = {width * height} pixels; the limit is "
                                  f"{settings.STUDIO_MAX_UPLOAD_PIXELS} pixels")
        try:
            image.load()
        except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValidationError(f"the image data is damaged or truncated ({exc})") from None
    return image.convert("RGB")
