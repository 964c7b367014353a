"""Part masks as files and as stroke operations (numpy + Pillow only, shared by the API and the live rooms).

A mask is a ``uint8 [H, W]`` array of class indices, stored as a palette PNG whose palette holds the schema's colours
(so the file is both exact and viewable). Live painting sends operations that are applied, in server order, to the
authoritative mask: ``runs`` (pixels the client has already rasterised: what the studio's canvas sends for every
tool, undo and redo), and ``stroke`` / ``polygon`` (geometry rasterised here with Pillow, for scripts).
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from django.core.exceptions import ValidationError
from PIL import Image, ImageDraw

from webapp.errors import readable

MAX_POINTS_PER_OP = 2000
MAX_BRUSH_RADIUS = 256
MAX_RUNS_PER_OP = 4096  # ~60 KB of JSON: well inside a websocket message; a bigger change is sent as several ops
OP_KINDS = ("runs", "stroke", "polygon")


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def encode_mask_png(mask: np.ndarray, colours: Sequence[str]) -> bytes:
    """``uint8 [H, W]`` class indices → palette PNG bytes."""
    image = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
    image.putpalette([c for colour in colours for c in hex_to_rgb(colour)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def decode_mask_png(data: bytes, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """PNG bytes → ``uint8 [H, W]``; refuses (ValidationError with the reason) anything not a valid mask.

    ``size`` is (width, height). The PNG must be single-channel (palette "P" or greyscale "L"): its pixel values are
    the class indices, which must all be below ``num_classes``.
    """
    try:
        image = Image.open(io.BytesIO(data))
        if image.format != "PNG":
            raise ValidationError(f"a mask must be a PNG file, got {image.format}")
        if image.size != tuple(size):
            raise ValidationError(f"mask is {image.size[0]}×{image.size[1]} but the sample is {size[0]}×{size[1]}")
        if image.mode not in ("P", "L"):
            raise ValidationError(f"a mask must be a palette (P) or greyscale (L) PNG of class indices, got mode "
                                  f"{image.mode}")
        mask = np.asarray(image, dtype=np.uint8).copy()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValidationError(f"the mask is not a readable PNG image: {readable(exc)}") from None
    check_classes(mask, num_classes)
    return mask


def check_classes(mask: np.ndarray, num_classes: int) -> None:
    unknown = np.unique(mask[mask >= num_classes])
    if unknown.size:
        raise ValidationError(f"mask contains unknown class indices {unknown.tolist()[:10]}: "
                              f"the schema has classes 0..{num_classes - 1}")


def coco_rle(binary: np.ndarray) -> dict:
    """Uncompressed COCO run-length encoding of a boolean ``[H, W]`` array (column-major, starts with zeros)."""
    flat = np.asfortranarray(binary).reshape(-1, order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(binary.shape[0]), int(binary.shape[1])], "counts": counts}


def decode_coco_rle(rle: dict) -> np.ndarray:
    height, width = rle["size"]
    flat = np.zeros(height * width, dtype=bool)
    position, value = 0, False
    for count in rle["counts"]:
        flat[position:position + count] = value
        position += count
        value = not value
    return flat.reshape((height, width), order="F")


def coco_annotations(mask: np.ndarray, image_id: int, class_names: Sequence[str], first_id: int = 1) -> list[dict]:
    """One COCO annotation (RLE segmentation, area, bbox) per class present in ``mask`` (background 0 skipped)."""
    annotations = []
    for class_index in np.unique(mask).tolist():
        if class_index == 0:
            continue
        binary = mask == class_index
        ys, xs = np.nonzero(binary)
        annotations.append({
            "id": first_id + len(annotations), "image_id": image_id, "category_id": int(class_index),
            "category_name": class_names[class_index], "iscrowd": 1, "segmentation": coco_rle(binary),
            "area": int(binary.sum()),
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
        })
    return annotations


def validate_op(op: dict, size: tuple[int, int], num_classes: int) -> dict:
    """Check a live painting operation and return its normalised form; ValidationError says what is wrong.

    * ``{"op": "runs", "runs": [[start, length, class], ...]}``: set ``length`` pixels from the flat index
      ``start = y * width + x`` (row-major, so a run may continue on the next row) to ``class``; runs sorted by
      start, not overlapping, at most ``MAX_RUNS_PER_OP``. Exact: the client rasterised them (canvas/runs.js).
    * ``{"op": "stroke", "class": k, "radius": r, "points": [[x, y], ...]}``: a round brush along the polyline.
    * ``{"op": "polygon", "class": k, "points": [...]}``: a filled polygon (lasso / bucket on a region).
    """
    if not isinstance(op, dict):
        raise ValidationError("an operation must be a JSON object")
    kind = op.get("op")
    if kind not in OP_KINDS:
        raise ValidationError(f"unknown operation {kind!r}: use {', '.join(repr(k) for k in OP_KINDS)}")
    if kind == "runs":
        return {"op": "runs", "runs": _validate_runs(op.get("runs"), size, num_classes)}
    class_index = op.get("class")
    if not _is_int(class_index) or not 0 <= class_index < num_classes:
        raise ValidationError(f"'class' must be an integer class index in 0..{num_classes - 1}, got {class_index!r}")
    points = op.get("points")
    minimum = 1 if kind == "stroke" else 3
    if not isinstance(points, list) or not minimum <= len(points) <= MAX_POINTS_PER_OP:
        raise ValidationError(f"'points' must be a list of {minimum}..{MAX_POINTS_PER_OP} [x, y] pairs")
    width, height = size
    clean = []
    for point in points:
        if (not isinstance(point, (list, tuple)) or len(point) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)):
            raise ValidationError(f"each point must be [x, y] numbers, got {point!r}")
        x, y = float(point[0]), float(point[1])
        if not (-width <= x <= 2 * width and -height <= y <= 2 * height):
            raise ValidationError(f"point {point} is far outside the {width}×{height} image")
        clean.append([round(x, 2), round(y, 2)])
    normalised = {"op": kind, "class": class_index, "points": clean}
    if kind == "stroke":
        radius = op.get("radius")
        if not isinstance(radius, (int, float)) or isinstance(radius, bool) or not 0.5 <= radius <= MAX_BRUSH_RADIUS:
            raise ValidationError(f"'radius' must be a number in 0.5..{MAX_BRUSH_RADIUS}, got {radius!r}")
        normalised["radius"] = float(radius)
    return normalised


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_runs(runs, size: tuple[int, int], num_classes: int) -> list[list[int]]:
    width, height = size
    if not isinstance(runs, list) or not 1 <= len(runs) <= MAX_RUNS_PER_OP:
        raise ValidationError(f"'runs' must be a list of 1..{MAX_RUNS_PER_OP} [start, length, class] triples "
                              "(send a bigger change as several operations)")
    clean, end_of_previous = [], 0
    for index, run in enumerate(runs):
        if not isinstance(run, (list, tuple)) or len(run) != 3 or not all(_is_int(v) for v in run):
            raise ValidationError(f"run {index} must be [start, length, class] integers, got {run!r}")
        start, length, class_index = run
        if start < 0 or length < 1 or start + length > width * height:
            raise ValidationError(f"run {index} {run} leaves the {width}×{height} mask (pixel indices "
                                  f"0..{width * height - 1}, length ≥ 1)")
        if not 0 <= class_index < num_classes:
            raise ValidationError(f"run {index} has class {class_index}: the schema has classes 0..{num_classes - 1}")
        if start < end_of_previous:
            raise ValidationError(f"run {index} {run} starts before the previous run ends (pixel {end_of_previous}): "
                                  "runs must be sorted by start and must not overlap")
        end_of_previous = start + length
        clean.append([start, length, class_index])
    return clean


def apply_ops(mask: np.ndarray, ops: Sequence[dict]) -> np.ndarray:
    """Apply validated operations to a copy of ``mask`` in the given (server) order."""
    result = mask.astype(np.uint8).copy()
    flat = result.reshape(-1)  # a view: runs write straight into ``result``
    image = draw = None  # Pillow's copy while geometry ops follow each other
    for op in ops:
        if op["op"] == "runs":
            if image is not None:
                result[...] = np.asarray(image, dtype=np.uint8)
                image = draw = None
            for start, length, class_index in op["runs"]:
                flat[start:start + length] = class_index
            continue
        if image is None:
            image = Image.fromarray(result, mode="L")
            draw = ImageDraw.Draw(image)
        points = [tuple(p) for p in op["points"]]
        if op["op"] == "polygon":
            draw.polygon(points, fill=op["class"])
            continue
        radius = op["radius"]
        if len(points) > 1:
            draw.line(points, fill=op["class"], width=max(1, round(2 * radius)))
        for x, y in points:  # round caps and joints
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=op["class"])
    if image is not None:
        result[...] = np.asarray(image, dtype=np.uint8)
    return result
