"""Input handling of editor_core.images: every kind of file an artist may upload, and the mask PNG round trip."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from editor_core.images import (ImageInputError, ImageTooLargeError, fit_within, load_image, mask_to_png,
                                png_to_mask, save_image, tensor_to_pil)
from editor_core.schema import LabelSchema


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def as_uint8(frame: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [-1, 1] → uint8 [H, W, 3]."""
    return np.asarray(tensor_to_pil(frame))


def quadrants(width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3]: red top-left, green top-right, blue bottom-left, white bottom-right."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:height // 2, :width // 2] = (255, 0, 0)
    pixels[:height // 2, width // 2:] = (0, 255, 0)
    pixels[height // 2:, :width // 2] = (0, 0, 255)
    pixels[height // 2:, width // 2:] = (255, 255, 255)
    return pixels


def test_rgb_png_at_frame_size_round_trips_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    frame = load_image(encode(Image.fromarray(pixels)), size=16)
    assert frame.shape == (1, 3, 16, 16) and frame.dtype == torch.float32
    assert frame.min() >= -1 and frame.max() <= 1
    np.testing.assert_array_equal(as_uint8(frame), pixels)

    path = tmp_path / "out.png"
    save_image(frame, path)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels)
    assert load_image(path, size=16).equal(frame)  # paths work as well as bytes


def test_default_is_centre_crop_of_wide_image():
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 10:30] = (0, 255, 0)  # the centred 20×20 square is green, the sides black
    frame = as_uint8(load_image(encode(Image.fromarray(pixels)), size=20))
    assert (frame == (0, 255, 0)).all()


def test_box_selects_region_and_resizes():
    pixels = quadrants(64, 64)
    frame = as_uint8(load_image(encode(Image.fromarray(pixels)), size=8, box=(32, 0, 32, 32)))
    assert (frame == (0, 255, 0)).all()  # the top-right quadrant only


def test_non_square_box_is_letterboxed_not_stretched():
    pixels = np.full((10, 30, 3), 200, dtype=np.uint8)
    frame = as_uint8(load_image(encode(Image.fromarray(pixels)), size=30, box=(0, 0, 30, 10), background=(0, 0, 0)))
    assert (frame[10:20] == 200).all()  # the image fills the middle band
    assert (frame[:10] == 0).all() and (frame[20:] == 0).all()  # padded above and below


def test_box_partly_outside_is_padded_with_background():
    pixels = np.full((10, 10, 3), 100, dtype=np.uint8)
    frame = as_uint8(load_image(encode(Image.fromarray(pixels)), size=20, box=(-10, 0, 20, 20),
                                background=(0, 0, 255)))
    assert (frame[:10, 10:] == 100).all()
    assert (frame[:, :10] == (0, 0, 255)).all() and (frame[10:] == (0, 0, 255)).all()


@pytest.mark.parametrize("box", [(100, 0, 10, 10), (0, -20, 10, 10), (-30, -30, 30, 30)])
def test_box_outside_image_is_a_clear_error(box):
    with pytest.raises(ImageInputError, match="entirely outside the 10×10 image"):
        load_image(encode(Image.new("RGB", (10, 10))), size=8, box=box)


@pytest.mark.parametrize("box", [(0, 0, 0, 5), (0, 0, 5, -1), (0, 0, float("nan"), 5), (0, 0, 5)])
def test_malformed_box_is_a_clear_error(box):
    with pytest.raises(ImageInputError, match="crop box"):
        load_image(encode(Image.new("RGB", (10, 10))), size=8, box=box)


def test_rgba_is_composited_over_background():
    pixels = np.zeros((8, 8, 4), dtype=np.uint8)
    pixels[..., 0] = 255  # red everywhere
    pixels[:4, ..., 3] = 255  # top half opaque
    pixels[4:, ..., 3] = 0  # bottom half fully transparent
    data = encode(Image.fromarray(pixels))
    over_white = as_uint8(load_image(data, size=8))
    assert (over_white[:4] == (255, 0, 0)).all() and (over_white[4:] == (255, 255, 255)).all()
    over_green = as_uint8(load_image(data, size=8, background=(0, 255, 0)))
    assert (over_green[4:] == (0, 255, 0)).all()


def test_half_transparent_pixels_blend_with_background():
    data = encode(Image.new("RGBA", (4, 4), (0, 0, 0, 128)))
    assert (as_uint8(load_image(data, size=4)) == 127).all()  # 255 · (1 − 128/255)


def test_greyscale_becomes_grey_rgb():
    data = encode(Image.new("L", (6, 6), 77))
    frame = as_uint8(load_image(data, size=6))
    assert (frame == 77).all()


def test_palette_image_with_transparency():
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 20, 30])
    image.putpixel((0, 0), 0)
    frame = as_uint8(load_image(encode(image, transparency=0), size=4, background=(1, 2, 3)))
    assert tuple(frame[0, 0]) == (1, 2, 3)  # palette entry 0 is transparent
    assert tuple(frame[1, 1]) == (10, 20, 30)


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.full((4, 4), 32896, dtype=np.uint16)  # 32896 / 65535 ≈ 128 / 255
    image = Image.fromarray(values)
    assert image.mode.startswith("I")
    frame = as_uint8(load_image(encode(image), size=4))
    assert (frame == 128).all()


def test_exif_orientation_is_applied():
    stored = quadrants(32, 16)  # as the camera wrote it: 32 wide, 16 high
    image = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer must rotate 90° clockwise
    data = encode(image, "JPEG", quality=95, exif=exif.tobytes())
    frame = as_uint8(load_image(data, size=16, box=(0, 0, 16, 32), background=(0, 0, 0)))
    # Upright the image is 16 wide, 32 high; rotating clockwise puts the stored bottom-left (blue) at top-left.
    np.testing.assert_allclose(frame[2, 6], (0, 0, 255), atol=40)
    np.testing.assert_allclose(frame[13, 6], (255, 255, 255), atol=40)
    np.testing.assert_allclose(frame[2, 9], (255, 0, 0), atol=40)
    np.testing.assert_allclose(frame[13, 9], (0, 255, 0), atol=40)
    assert (frame[:, :2] == 0).all() and (frame[:, -2:] == 0).all()  # letterboxed: the 16×32 box is upright


def test_garbage_bytes_are_a_clear_error():
    with pytest.raises(ImageInputError, match="not an image file"):
        load_image(b"this is not an image at all", size=8)


def test_truncated_file_is_a_clear_error():
    data = encode(Image.fromarray(quadrants(64, 64)), "JPEG")
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        load_image(data[:len(data) // 2], size=8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` RGB pixels; its pixel data is one empty row."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0"))
            + png_chunk(b"IEND", b""))


def test_decompression_bomb_is_refused():
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        load_image(png_header_only(100_000, 100_000), size=8)


def test_image_over_pixel_limit_is_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match=r"8000×6000 = 48\.0 MP, more than the limit of 40\.0 MP"):
        load_image(png_header_only(8000, 6000), size=8)
    with pytest.raises(ImageTooLargeError, match="limit of 0.0 MP"):
        load_image(encode(Image.new("RGB", (100, 100))), size=8, max_pixels=9_999)


def test_tensor_to_pil_rejects_batches():
    with pytest.raises(ValueError, match="batch of 2"):
        tensor_to_pil(torch.zeros(2, 3, 4, 4))


def test_mask_png_round_trip_with_schema_is_exact_and_coloured():
    schema = LabelSchema.from_names("test", ["background", "a", "b", "c", "d"])
    mask = torch.randint(0, schema.num_classes, (12, 10), generator=torch.Generator().manual_seed(0))
    data = mask_to_png(mask, schema)
    picture = Image.open(io.BytesIO(data))
    assert picture.mode == "P"
    np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), schema.colourise(mask).numpy())
    decoded = png_to_mask(data, schema)
    assert decoded.dtype == torch.int64 and decoded.equal(mask)


def test_mask_png_round_trip_without_schema_is_exact():
    mask = torch.arange(256, dtype=torch.int64).reshape(16, 16)
    data = mask_to_png(mask[None])
    assert Image.open(io.BytesIO(data)).mode == "L"
    assert png_to_mask(data).equal(mask)


def test_colour_mask_png_is_decoded_with_schema():
    schema = LabelSchema.from_names("test", ["background", "a", "b"])
    mask = torch.tensor([[0, 1], [2, 1]])
    rgb = encode(Image.fromarray(schema.colourise(mask).numpy()))
    assert png_to_mask(rgb, schema).equal(mask)
    with pytest.raises(ImageInputError, match="give the label schema"):
        png_to_mask(rgb)


def test_mask_png_rejects_bad_labels():
    schema = LabelSchema.from_names("test", ["background", "a"])
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        mask_to_png(torch.tensor([[0, 2]]), schema)
    with pytest.raises(ValueError, match="integer class labels"):
        mask_to_png(torch.zeros(2, 2))
    with pytest.raises(ImageInputError, match="label 3 but schema 'test' has only 2 classes"):
        png_to_mask(mask_to_png(torch.tensor([[0, 3]])), schema)


def test_image_png_and_mask_array_are_what_the_studio_stores():
    from editor_core.images import image_png, mask_array

    image = torch.linspace(-1, 1, 3 * 4 * 4).view(3, 4, 4)
    with Image.open(io.BytesIO(image_png(image))) as decoded:
        assert decoded.format == "PNG" and np.array_equal(np.asarray(decoded), as_uint8(image))
    labels = torch.tensor([[0, 1], [2, 3]])
    stored = mask_array(labels, 4)
    assert stored.dtype == np.uint8 and stored.shape == (4, 4)
    assert np.array_equal(stored, np.kron(labels.numpy(), np.ones((2, 2), dtype=np.int64)))  # nearest


def test_tensor_to_pil_rounds_and_clips_each_value_and_leaves_the_tensor_alone():
    values = torch.tensor([-1.5, -1.0, -0.5, -1 / 255, 0.0, 1 / 255, 0.5, 1.0, 2.0, 0.3, -0.7, 0.999])
    image = values.repeat(3, 4, 1) * torch.tensor([1.0, -1.0, 0.5])[:, None, None]  # [3, 4, 12]
    kept = image.clone()
    expected = np.clip(np.round((image.numpy().astype(np.float64) + 1) * 127.5), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(tensor_to_pil(image)), expected.transpose(1, 2, 0))
    assert torch.equal(image, kept)  # the conversion works on its own copy


def test_fit_within_scales_the_longer_side_down_and_keeps_the_aspect():
    wide = torch.linspace(-1, 1, 3 * 40 * 80).reshape(3, 40, 80)
    fitted = fit_within(wide, 20)
    assert fitted.shape == (3, 10, 20)
    # Area averaging: each output pixel is the mean of its 4×4 block, so the image's mean stays.
    torch.testing.assert_close(fitted[:, 0, 0], wide[:, :4, :4].mean(dim=(1, 2)))
    torch.testing.assert_close(fitted.mean(), wide.mean())
    assert fit_within(wide, 80) is wide and fit_within(wide, 500) is wide  # already fits: untouched
    assert fit_within(torch.zeros(3, 30, 7), 12).shape == (3, 12, 3)  # 7 × 12/30 = 2.8 → 3
    with pytest.raises(ValueError, match="max_side must be ≥ 1"):
        fit_within(wide, 0)
