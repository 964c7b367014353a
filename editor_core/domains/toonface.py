"""Procedural "toon face" portraits with exact part masks — the demo domain's ground truth.

``render(params, size)`` draws a batch of cartoon head-and-shoulders portraits and the part label of every pixel.
Every part is an implicit shape: an approximate signed distance ``sdf`` (face units, negative inside) evaluated on
the whole pixel grid at once, so one call renders any batch on CPU or GPU with no Python loop over pixels or samples.
Parts are painted back to front (painter's order); a part's colour is blended in with the smooth coverage
``clamp(0.5 - sdf / pixel_size, 0, 1)`` (anti-aliasing), and its class is written to the mask wherever the pixel
centre is inside (``sdf < 0``), so the mask holds the top-most part under each pixel centre.

Face coordinates: x to the right, y down, origin between the eyes on the cheek line; the head is about 0.94 units wide
and 1.2 tall. The framing (``FRAME_ZOOM``, ``FRAME_OFFSET_Y``) and the pose (shift, roll, scale) map face space onto
the image, which spans [-1, 1] on both axes. "Left" and "right" parts are as seen in the image (viewer's left).

Parameters are a dict ``name -> Tensor[B]`` (``ToonFaceParams``); ``PARAM_SCHEMA`` gives each one's range, default
and meaning. ``sample_params`` draws random faces, ``with_param`` changes one parameter of a batch (ground-truth
edits: same face, only the smile changed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, NamedTuple, Union

import torch
from torch import Tensor

if TYPE_CHECKING:
    from editor_core.schema import LabelSchema


class ToonPart(IntEnum):
    """Part classes in mask index order (the painting order is a different one, see ``render``)."""

    BACKGROUND = 0
    SKIN = 1
    HAIR = 2
    NECK = 3
    LEFT_EAR = 4
    RIGHT_EAR = 5
    LEFT_EYEBROW = 6
    RIGHT_EYEBROW = 7
    LEFT_EYE_WHITE = 8
    RIGHT_EYE_WHITE = 9
    LEFT_IRIS = 10
    RIGHT_IRIS = 11
    NOSE = 12
    UPPER_LIP = 13
    LOWER_LIP = 14
    TEETH = 15
    MOUTH_INSIDE = 16
    CLOTHING = 17


# Display colours of the mask classes (not the rendered colours), chosen to be far apart on a black background.
_CLASS_COLOURS = {
    ToonPart.BACKGROUND: (0, 0, 0),
    ToonPart.SKIN: (230, 170, 130),
    ToonPart.HAIR: (120, 65, 20),
    ToonPart.NECK: (255, 220, 120),
    ToonPart.LEFT_EAR: (255, 100, 180),
    ToonPart.RIGHT_EAR: (180, 40, 130),
    ToonPart.LEFT_EYEBROW: (0, 130, 0),
    ToonPart.RIGHT_EYEBROW: (130, 230, 60),
    ToonPart.LEFT_EYE_WHITE: (255, 255, 255),
    ToonPart.RIGHT_EYE_WHITE: (160, 160, 255),
    ToonPart.LEFT_IRIS: (0, 80, 255),
    ToonPart.RIGHT_IRIS: (0, 210, 255),
    ToonPart.NOSE: (255, 170, 0),
    ToonPart.UPPER_LIP: (230, 0, 0),
    ToonPart.LOWER_LIP: (130, 0, 50),
    ToonPart.TEETH: (255, 255, 140),
    ToonPart.MOUTH_INSIDE: (100, 0, 130),
    ToonPart.CLOTHING: (0, 150, 150),
}

TOONFACE_SCHEMA: dict = {
    "name": "toonface",
    "class_names": tuple(part.name.lower() for part in ToonPart),
    "colours": tuple(_CLASS_COLOURS[part] for part in ToonPart),
    "version": 1,
}


def toonface_schema() -> "LabelSchema":
    """``TOONFACE_SCHEMA`` as an ``editor_core.schema.LabelSchema``."""
    from editor_core.schema import LabelSchema  # lazy: the renderer itself does not need the schema module

    return LabelSchema(**TOONFACE_SCHEMA)


# ---------------------------------------------------------------------------------------------------------------------
# Parameters


class ParamSpec(NamedTuple):
    """Range (inclusive), default and meaning of one render parameter."""

    low: float
    high: float
    default: float
    description: str


ToonFaceParams = dict[str, Tensor]
"""One ``Tensor[B]`` per name of ``PARAM_SCHEMA``, all of the same length and device."""

NOISE_SEED_MAX = 2 ** 24 - 1  # largest integer a float32 holds exactly

PARAM_SCHEMA: dict[str, ParamSpec] = {
    # Edits: the shape changes that the paper's editing vectors are learnt for.
    "smile": ParamSpec(-1.0, 1.0, 0.3, "mouth curve: -1 frown (corners down, fuller pouting lips), "
                                       "+1 broad smile (corners up, wider mouth, thinner lips)"),
    "mouth_open": ParamSpec(0.0, 1.0, 0.0, "gap between the lips: 0 closed, 1 wide open showing the mouth inside "
                                           "and the upper teeth"),
    "eye_size": ParamSpec(0.75, 1.3, 1.0, "scale of the eye whites and irises"),
    "eyebrow_height": ParamSpec(-1.0, 1.0, 0.0, "eyebrow position: -1 low, +1 raised"),
    "eyebrow_angle": ParamSpec(-1.0, 1.0, 0.0, "eyebrow tilt: -1 inner ends raised (worried), "
                                               "+1 outer ends raised (stern)"),
    "nose_size": ParamSpec(0.7, 1.4, 1.0, "scale of the nose"),
    "ear_size": ParamSpec(0.7, 1.4, 1.0, "scale of the ears"),
    "hair_length": ParamSpec(0.0, 1.0, 0.4, "0 cropped at the ears, 1 long, falling over the shoulders"),
    "fringe": ParamSpec(0.0, 1.0, 0.5, "how far the bangs come down: 0 high hairline, 1 down to the eyebrows"),
    "head_width": ParamSpec(0.88, 1.12, 1.0, "width of the head relative to its height"),
    "jaw_roundness": ParamSpec(0.0, 1.0, 0.5, "0 narrow pointed chin, 1 broad rounded jaw"),
    # Appearance.
    "skin_tone": ParamSpec(0.0, 1.0, 0.25, "skin colour from light (0) to dark (1)"),
    "hair_tone": ParamSpec(0.0, 1.0, 0.3, "hair colour: black, dark brown, brown, auburn, blond, platinum"),
    "hair_part": ParamSpec(-1.0, 1.0, 0.0, "side sweep of the bangs: -1 to the image left, +1 to the right"),
    "iris_hue": ParamSpec(0.0, 1.0, 0.6, "hue of the irises (HSV hue, 0 red, 0.33 green, 0.6 blue)"),
    "lip_tint": ParamSpec(0.0, 1.0, 0.2, "lip colour from natural (0) to red lipstick (1)"),
    "blush": ParamSpec(0.0, 1.0, 0.4, "strength of the cheek blush"),
    "background_hue": ParamSpec(0.0, 1.0, 0.55, "hue of the backdrop"),
    "background_lightness": ParamSpec(0.0, 1.0, 0.7, "lightness of the backdrop"),
    "clothing_hue": ParamSpec(0.0, 1.0, 0.0, "hue of the shirt"),
    "clothing_lightness": ParamSpec(0.0, 1.0, 0.5, "lightness of the shirt"),
    "light_x": ParamSpec(-1.0, 1.0, -0.5, "light direction, horizontal component (-1 from the image left)"),
    "light_y": ParamSpec(-1.0, 0.5, -0.5, "light direction, vertical component (-1 from above)"),
    "shading": ParamSpec(0.0, 1.0, 0.6, "strength of the shading from the light (0 flat)"),
    "texture": ParamSpec(0.0, 1.0, 0.5, "strength of the skin, hair, cloth and backdrop texture noise"),
    "noise_seed": ParamSpec(0.0, float(NOISE_SEED_MAX), 0.0, "integer seed of the texture noise of this sample"),
    # Pose.
    "yaw": ParamSpec(-1.0, 1.0, 0.0, "small head turn (features shift sideways, the far ear hides)"),
    "roll": ParamSpec(-0.2, 0.2, 0.0, "in-plane rotation in radians, clockwise on screen"),
    "scale": ParamSpec(0.9, 1.1, 1.0, "zoom of the whole portrait"),
    "shift_x": ParamSpec(-0.06, 0.06, 0.0, "horizontal shift in half image widths"),
    "shift_y": ParamSpec(-0.06, 0.06, 0.0, "vertical shift in half image heights"),
    "gaze_x": ParamSpec(-1.0, 1.0, 0.0, "iris position in the eye, horizontal"),
    "gaze_y": ParamSpec(-1.0, 1.0, 0.0, "iris position in the eye, vertical (-1 up)"),
}

# The edit parameters and the part classes each one changes (the region of interest of a ground-truth edit).
EDIT_PARAMS: dict[str, tuple[ToonPart, ...]] = {
    "smile": (ToonPart.UPPER_LIP, ToonPart.LOWER_LIP, ToonPart.MOUTH_INSIDE, ToonPart.TEETH, ToonPart.SKIN),
    "mouth_open": (ToonPart.UPPER_LIP, ToonPart.LOWER_LIP, ToonPart.MOUTH_INSIDE, ToonPart.TEETH, ToonPart.SKIN),
    "eye_size": (ToonPart.LEFT_EYE_WHITE, ToonPart.RIGHT_EYE_WHITE, ToonPart.LEFT_IRIS, ToonPart.RIGHT_IRIS,
                 ToonPart.SKIN),
    "eyebrow_height": (ToonPart.LEFT_EYEBROW, ToonPart.RIGHT_EYEBROW, ToonPart.SKIN, ToonPart.HAIR),
    "eyebrow_angle": (ToonPart.LEFT_EYEBROW, ToonPart.RIGHT_EYEBROW, ToonPart.SKIN, ToonPart.HAIR),
    "nose_size": (ToonPart.NOSE, ToonPart.SKIN),
    "ear_size": (ToonPart.LEFT_EAR, ToonPart.RIGHT_EAR, ToonPart.HAIR, ToonPart.BACKGROUND),
    "hair_length": (ToonPart.HAIR, ToonPart.BACKGROUND, ToonPart.NECK, ToonPart.CLOTHING),
    "fringe": (ToonPart.HAIR, ToonPart.SKIN, ToonPart.LEFT_EAR, ToonPart.RIGHT_EAR),
    "head_width": (ToonPart.SKIN, ToonPart.HAIR, ToonPart.LEFT_EAR, ToonPart.RIGHT_EAR, ToonPart.NECK,
                   ToonPart.CLOTHING, ToonPart.BACKGROUND),
    "jaw_roundness": (ToonPart.SKIN, ToonPart.NECK, ToonPart.HAIR, ToonPart.LEFT_EAR, ToonPart.RIGHT_EAR,
                      ToonPart.BACKGROUND),
}


def check_params(params: ToonFaceParams) -> int:
    """Check that ``params`` is a complete, in-range parameter batch and return its batch size.

    Raises ``ValueError`` (or ``TypeError`` for non-tensors) naming the offending parameter and what is expected.
    """
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict name -> Tensor[B], got {type(params).__name__}")
    missing = [name for name in PARAM_SCHEMA if name not in params]
    unknown = [name for name in params if name not in PARAM_SCHEMA]
    if missing or unknown:
        raise ValueError(f"toon face params: missing {missing}, unknown {unknown}; start from default_params() or "
                         f"sample_params() and change values with with_param()")
    batch = device = None
    for name, value in params.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"param {name!r} must be a Tensor[B], got {type(value).__name__}")
        if value.ndim != 1 or value.numel() == 0 or value.dtype == torch.bool or value.dtype.is_complex:
            raise ValueError(f"param {name!r} must be a non-empty 1-D real tensor, got shape {tuple(value.shape)} "
                             f"and dtype {value.dtype}")
        if batch is None:
            batch, device = value.numel(), value.device
        elif value.numel() != batch or value.device != device:
            raise ValueError(f"all params must have the same length and device; {name!r} has {value.numel()} on "
                             f"{value.device}, expected {batch} on {device}")
    # One host-device round trip for all ranges (this runs on every render, on the GPU too).
    outside = {name: ~((value.to(torch.float32) >= PARAM_SCHEMA[name].low)
                       & (value.to(torch.float32) <= PARAM_SCHEMA[name].high))  # also catches NaN
               for name, value in params.items()}
    if bool(torch.stack([bad.any() for bad in outside.values()]).any()):
        name = next(name for name, bad in outside.items() if bool(bad.any()))
        spec, index = PARAM_SCHEMA[name], int(outside[name].nonzero()[0])
        raise ValueError(f"param {name!r} must lie in [{spec.low}, {spec.high}] ({spec.description}); "
                         f"{int(outside[name].sum())} value(s) outside, e.g. {params[name][index].item()} at index "
                         f"{index}")
    return batch


def default_params(batch: int, device: torch.device | str = "cpu") -> ToonFaceParams:
    """``batch`` copies of the default face (every parameter at its ``PARAM_SCHEMA`` default)."""
    _check_batch(batch)
    return {name: torch.full((batch,), spec.default, dtype=torch.float32, device=device)
            for name, spec in PARAM_SCHEMA.items()}


def sample_params(batch: int, seed: Union[int, torch.Generator],
                  device: torch.device | str = "cpu") -> ToonFaceParams:
    """Random faces: every parameter uniform in its range, ``noise_seed`` a random integer.

    ``seed`` is an int (reproducible on any device: the numbers are drawn on the CPU) or a ``torch.Generator``
    (numbers drawn on the generator's device).
    """
    _check_batch(batch)
    if isinstance(seed, torch.Generator):
        generator = seed
    elif isinstance(seed, int) and not isinstance(seed, bool):
        generator = torch.Generator().manual_seed(seed)
    else:
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    uniform = torch.rand(len(PARAM_SCHEMA), batch, generator=generator, device=generator.device).to(device)
    params = {}
    for row, (name, spec) in zip(uniform, PARAM_SCHEMA.items()):
        value = (spec.low + (spec.high - spec.low) * row).clamp(spec.low, spec.high)
        params[name] = value.floor() if name == "noise_seed" else value
    return params


def with_param(params: ToonFaceParams, name: str, value: Union[float, Tensor]) -> ToonFaceParams:
    """A copy of ``params`` with parameter ``name`` set to ``value`` (one float for all samples, or a Tensor[B])."""
    if name not in PARAM_SCHEMA:
        raise ValueError(f"unknown toon face param {name!r}; known: {sorted(PARAM_SCHEMA)}")
    batch = check_params(params)
    reference = params[name]
    new_value = torch.as_tensor(value, dtype=torch.float32, device=reference.device)
    if new_value.ndim > 1 or new_value.numel() not in (1, batch):
        raise ValueError(f"value for {name!r} must be a float or a Tensor[{batch}], got shape {tuple(new_value.shape)}")
    updated = dict(params)
    updated[name] = new_value.expand(batch).clone()
    check_params(updated)
    return updated


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Rendering

MIN_SIZE = 16

# Framing like an FFHQ crop: the head fills most of the frame, eyes a little above the middle, shoulders at the bottom.
FRAME_ZOOM = 1.2
FRAME_OFFSET_Y = -0.04

OUTLINE_WIDTH = 0.016  # face units: about one pixel at 128², so the line art survives at low resolution

# Layout in face units (x right, y down, origin on the cheek line between the eyes).
HEAD_HALF_WIDTH = 0.47
HEAD_TOP = 0.64          # cheek line up to the crown
HEAD_BOTTOM = 0.55       # cheek line down to the chin (before the jaw-shape adjustment)
EYE_X, EYE_Y = 0.19, 0.0
EYEBROW_X, EYEBROW_Y = 0.2, -0.18
NOSE_Y = 0.17
MOUTH_Y = 0.335
EAR_Y = 0.03
NECK_Y = 0.68            # centre of the neck's rounded box
SHOULDER_Y = 1.24        # centre of the shoulders' superellipse; their top is 0.55 above it
NECKLINE_Y = 0.68
# Hair volume: a superellipse a little wider than the skull, reaching above the crown.
HAIR_CAP_WIDENING = 1.1
HAIR_CAP_Y = -0.12
HAIR_CAP_HALF_HEIGHT = 0.63
HAIR_CAP_EXPONENT = 2.3
# The hairline is laid out over this fixed half width (not the head's) so that the bangs keep clear of the eyes.
HAIRLINE_HALF_WIDTH = 0.52

# Palettes the tone parameters interpolate along (sRGB in [0, 1]).
_SKIN_PALETTE = ((1.00, 0.87, 0.77), (0.98, 0.79, 0.66), (0.89, 0.66, 0.50), (0.74, 0.52, 0.36),
                 (0.55, 0.36, 0.24), (0.37, 0.24, 0.16))
_HAIR_PALETTE = ((0.11, 0.10, 0.12), (0.27, 0.17, 0.11), (0.48, 0.31, 0.17), (0.62, 0.25, 0.11),
                 (0.89, 0.72, 0.42), (0.93, 0.89, 0.80))


def render(params: ToonFaceParams, size: int) -> tuple[Tensor, Tensor]:
    """Render a batch of toon faces.

    Args:
        params: one ``Tensor[B]`` per ``PARAM_SCHEMA`` name (see ``sample_params``, ``default_params``), all on the
            device to render on.
        size: output height and width in pixels (≥ 16).

    Returns:
        ``rgb`` float32 ``[B, 3, size, size]`` in [-1, 1] and ``mask`` int64 ``[B, size, size]`` (``ToonPart``
        indices). The same params and size give the same output.
    """
    check_params(params)
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size must be an int ≥ {MIN_SIZE}, got {size!r}")
    scene = _Scene.build(params, size)
    canvas = _Canvas(_backdrop(scene), scene.pixel_size)
    # Painter's order, back to front. Long hair is painted twice: once behind the neck and the shirt, and once more
    # outside the neck's channel, so that it falls in front of the shoulders.
    hair_back, hair_back_rgb = _hair_back(scene)
    canvas.paint(hair_back, hair_back_rgb, ToonPart.HAIR)
    canvas.paint(*_neck(scene), ToonPart.NECK)
    canvas.paint(*_clothing(scene), ToonPart.CLOTHING)
    beside_neck = _neck_half_width(scene) + 0.04 - scene.x.abs()
    canvas.paint(torch.maximum(hair_back, beside_neck), hair_back_rgb, ToonPart.HAIR)
    canvas.paint(*_ear(scene, -1.0), ToonPart.LEFT_EAR)
    canvas.paint(*_ear(scene, 1.0), ToonPart.RIGHT_EAR)
    canvas.paint(*_face(scene), ToonPart.SKIN)
    canvas.paint(*_nose(scene), ToonPart.NOSE)
    for side, white_part, iris_part in ((-1.0, ToonPart.LEFT_EYE_WHITE, ToonPart.LEFT_IRIS),
                                        (1.0, ToonPart.RIGHT_EYE_WHITE, ToonPart.RIGHT_IRIS)):
        white, iris = _eye(scene, side)
        canvas.paint(*white, white_part)
        canvas.paint(*iris, iris_part)
    for sdf, rgb, part in _mouth(scene):
        canvas.paint(sdf, rgb, part)
    canvas.paint(*_hair_front(scene), ToonPart.HAIR)
    # Eyebrows go over the bangs, as in most cartoon styles, so that they stay visible with any fringe.
    canvas.paint(*_eyebrow(scene, -1.0), ToonPart.LEFT_EYEBROW)
    canvas.paint(*_eyebrow(scene, 1.0), ToonPart.RIGHT_EYEBROW)
    return canvas.rgb.mul(2.0).sub(1.0).clamp(-1.0, 1.0), canvas.mask


class _Canvas:
    """Back-to-front compositing of anti-aliased parts, keeping the hard label map consistent with the colours."""

    def __init__(self, background: Tensor, pixel_size: Tensor) -> None:
        self.rgb = background  # [B, 3, H, W] in [0, 1]
        self.mask = torch.zeros(background.shape[0], *background.shape[2:], dtype=torch.int64,
                                device=background.device)
        self.pixel_size = pixel_size  # [B, 1, 1] face units per pixel

    def paint(self, sdf: Tensor, rgb: Tensor, part: ToonPart) -> None:
        """Blend ``rgb`` ([B, 3, H, W] or [B, 3, 1, 1]) in by the coverage of ``sdf`` [B, H, W]; label its inside."""
        self.rgb = torch.lerp(self.rgb, rgb, _coverage(sdf, self.pixel_size).unsqueeze(1))
        self.mask = self.mask.masked_fill(sdf < 0, int(part))


@dataclass
class _Scene:
    """What every part is drawn from: per-sample values are [B, 1, 1], per-pixel ones [B, H, W] (or [B, 1, H, W] for
    factors that multiply colours [B, 3, ·, ·])."""

    p: dict[str, Tensor]   # the parameters, each [B, 1, 1]
    x: Tensor              # [B, H, W] face coordinates of the pixel centres
    y: Tensor
    pixel_size: Tensor     # [B, 1, 1] face units per pixel
    grain: Tensor          # [B, 1, H, W] isotropic texture noise, already scaled by the texture parameter
    strands: Tensor        # [B, 1, H, W] hair streaks, likewise
    skin_rgb: Tensor       # [B, 3, 1, 1]
    hair_rgb: Tensor       # [B, 3, 1, 1]

    @classmethod
    def build(cls, params: ToonFaceParams, size: int) -> "_Scene":
        p = {name: value.to(torch.float32).view(-1, 1, 1) for name, value in params.items()}
        x, y, pixel_size = _face_coordinates(p, size)
        seed = p["noise_seed"].to(torch.int64)
        texture = p["texture"].unsqueeze(1)
        grain = 0.6 * _value_noise(x, y, seed, 9.0, 9.0) + 0.4 * _value_noise(x, y, seed + 7919, 31.0, 31.0)
        strands = _value_noise(x, y, seed + 104729, 55.0, 4.0)  # stretched along the hair's fall
        return cls(p, x, y, pixel_size, grain.unsqueeze(1) * texture, strands.unsqueeze(1) * texture,
                   _palette_colour(_SKIN_PALETTE, p["skin_tone"]), _palette_colour(_HAIR_PALETTE, p["hair_tone"]))

    def colour(self, r: float, g: float, b: float) -> Tensor:
        """A constant colour [1, 3, 1, 1]."""
        return _constant_colour((r, g, b), self.x.device)

    def cover(self, sdf: Tensor) -> Tensor:
        """Anti-aliased coverage [B, 1, H, W] of a shape, for blending details into a part's colour."""
        return _coverage(sdf, self.pixel_size).unsqueeze(1)

    def outline(self, fill: Tensor, sdf: Tensor, line: Tensor, width: float = OUTLINE_WIDTH) -> Tensor:
        """``fill`` with a line of colour ``line`` along the inside of the shape's border (so the mask stays exact)."""
        line_cover = (0.5 + (sdf + width) / self.pixel_size).clamp(0.0, 1.0).unsqueeze(1)
        return torch.lerp(fill, line, line_cover)

    def light(self, normal_x: Tensor, normal_y: Union[Tensor, float]) -> Tensor:
        """Soft two-tone shading factor [B, 1, H, W] of a surface whose normal's in-plane part is (normal_x, normal_y).

        The normal is that of an ellipsoid bulging towards the viewer; the Lambert term goes through a smooth step so
        that the result reads as cel shading with a soft terminator rather than photographic shading.
        """
        p = self.p
        in_plane = (normal_x * normal_x + normal_y * normal_y).clamp_min(1e-12)
        squash = torch.where(in_plane > 1.0, torch.rsqrt(in_plane), torch.ones_like(in_plane))
        normal_x, normal_y = normal_x * squash, normal_y * squash
        normal_z = torch.sqrt((1.0 - normal_x * normal_x - normal_y * normal_y).clamp_min(0.0))
        light_length = torch.sqrt(p["light_x"] ** 2 + p["light_y"] ** 2 + 1.0)
        lambert = (normal_x * p["light_x"] + normal_y * p["light_y"] + normal_z) / light_length
        lit = _smoothstep(-0.1, 0.4, lambert)
        return (1.0 - 0.3 * p["shading"] * (1.0 - lit)).unsqueeze(1)


def _face_coordinates(p: dict[str, Tensor], size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Face coordinates ``x, y`` [B, H, W] of the pixel centres (inverse pose transform), pixel size [B, 1, 1]."""
    centres = (torch.arange(size, device=p["roll"].device, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    screen_x = centres.view(1, 1, size) - p["shift_x"]
    screen_y = centres.view(1, size, 1) - p["shift_y"] - FRAME_OFFSET_Y
    cos, sin = torch.cos(p["roll"]), torch.sin(p["roll"])
    zoom = FRAME_ZOOM * p["scale"]
    x = (cos * screen_x + sin * screen_y) / zoom
    y = (cos * screen_y - sin * screen_x) / zoom
    return x, y, (2.0 / size) / zoom


# -- shapes: approximate signed distances in face units, negative inside ----------------------------------------------


class _Curve(NamedTuple):
    """A curve ``y = value(x)`` sampled at every pixel's x, with its slope dy/dx (for first-order distances)."""

    value: Tensor
    slope: Tensor


def _coverage(sdf: Tensor, pixel_size: Tensor) -> Tensor:
    return (0.5 - sdf / pixel_size).clamp(0.0, 1.0)


def _sd_superellipse(x: Tensor, y: Tensor, half_width: Union[Tensor, float], half_height: Union[Tensor, float],
                     exponent: Union[Tensor, float]) -> Tensor:
    """``(|x/a|^n + |y/b|^n)^(1/n) = 1``; distance to first order (level-set value over its gradient norm)."""
    u = x.abs() / half_width
    v = y.abs() / half_height
    u_n, v_n = u.pow(exponent), v.pow(exponent)
    radius = (u_n + v_n).clamp_min(1e-12).pow(1.0 / exponent)
    # d radius / dx = radius^(1-n) · u^(n-1) / a, likewise for y.
    grad_x = u_n / u.clamp_min(1e-12) / half_width
    grad_y = v_n / v.clamp_min(1e-12) / half_height
    grad = radius.pow(1.0 - exponent) * torch.sqrt(grad_x * grad_x + grad_y * grad_y)
    return (radius - 1.0) / grad.clamp_min(1e-6)


def _sd_ellipse(x: Tensor, y: Tensor, half_width: Union[Tensor, float], half_height: Union[Tensor, float]) -> Tensor:
    return _sd_superellipse(x, y, half_width, half_height, 2.0)


def _sd_circle(x: Tensor, y: Tensor, radius: Union[Tensor, float]) -> Tensor:
    return torch.sqrt(x * x + y * y) - radius


def _sd_round_box(x: Tensor, y: Tensor, half_width: Tensor, half_height: Tensor,
                  radius: Union[Tensor, float]) -> Tensor:
    qx = x.abs() - half_width + radius
    qy = y.abs() - half_height + radius
    outside = torch.sqrt(qx.clamp_min(0.0) ** 2 + qy.clamp_min(0.0) ** 2)
    return outside + torch.maximum(qx, qy).clamp_max(0.0) - radius


def _sd_below(y: Tensor, curve: _Curve) -> Tensor:
    """Distance to first order from the region below (larger y than) ``curve``."""
    return (curve.value - y) / torch.sqrt(1.0 + curve.slope * curve.slope)


def _sd_between(y: Tensor, top: _Curve, bottom: _Curve) -> Tensor:
    """The band below ``top`` and above ``bottom`` (empty where they cross)."""
    return torch.maximum(_sd_below(y, top), -_sd_below(y, bottom))


def _smooth_union(a: Tensor, b: Tensor, k: Union[Tensor, float]) -> Tensor:
    """Union of two shapes with their junction rounded over a width ``k`` (polynomial smooth minimum)."""
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return torch.lerp(b, a, h) - k * h * (1.0 - h)


def _smoothstep(edge0: float, edge1: float, value: Tensor) -> Tensor:
    t = ((value - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# -- colours ----------------------------------------------------------------------------------------------------------


# Constants are built by device kernels rather than copied from the host: on a GPU every host-to-device copy of a
# Python value waits for the queued work to finish, which would stall the render a few dozen times per call.


def _channel_index(device: torch.device) -> Tensor:
    """[1, 3, 1, 1] holding 0, 1, 2."""
    return torch.arange(3, device=device, dtype=torch.float32).view(1, 3, 1, 1)


def _constant_colour(rgb: tuple[float, float, float], device: torch.device) -> Tensor:
    """A constant colour [1, 3, 1, 1]."""
    channel = _channel_index(device)
    return torch.where(channel == 0, rgb[0], torch.where(channel == 1, rgb[1], rgb[2]))


def _palette_colour(palette: tuple[tuple[float, float, float], ...], tone: Tensor) -> Tensor:
    """Piecewise-linear interpolation along ``palette`` at ``tone`` [B, 1, 1] in [0, 1] → [B, 3, 1, 1].

    Written as a sum of hat functions, one per palette entry, so that it needs no table on the device.
    """
    position = tone.unsqueeze(1) * (len(palette) - 1)
    return sum((1.0 - (position - index).abs()).clamp_min(0.0) * _constant_colour(colour, tone.device)
               for index, colour in enumerate(palette))


def _hsv_colour(hue: Tensor, saturation: float, value: Union[Tensor, float]) -> Tensor:
    """HSV (hue and value [B, 1, 1] or floats) → RGB [B, 3, 1, 1]."""
    channel_offsets = 5.0 - 2.0 * _channel_index(hue.device)  # 5, 3, 1 for red, green, blue
    k = (channel_offsets + hue.unsqueeze(1) * 6.0) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    if isinstance(value, Tensor):
        value = value.unsqueeze(1)
    return value - value * saturation * ramp


# -- texture noise: integer lattice hash, identical on every device ---------------------------------------------------

_UINT32 = 0xFFFFFFFF


def _hash_unit(ix: Tensor, iy: Tensor, seed: Tensor) -> Tensor:
    """A uniform value in [0, 1) per integer lattice point and seed (int64 tensors; products stay below 2⁶³)."""
    h = (ix * 1597334677 + iy * 3812015801 + seed * 2654435761) & _UINT32
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & _UINT32
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & _UINT32
    h = h ^ (h >> 16)
    return (h >> 8).to(torch.float32) * (1.0 / 2 ** 24)


def _value_noise(x: Tensor, y: Tensor, seed: Tensor, frequency_x: float, frequency_y: float) -> Tensor:
    """Smoothly interpolated lattice noise in [-1, 1] at face coordinates (x, y), one pattern per seed."""
    fx, fy = x * frequency_x, y * frequency_y
    x0, y0 = fx.floor(), fy.floor()
    tx = _smoothstep(0.0, 1.0, fx - x0)
    ty = _smoothstep(0.0, 1.0, fy - y0)
    ix, iy = x0.to(torch.int64), y0.to(torch.int64)
    top = torch.lerp(_hash_unit(ix, iy, seed), _hash_unit(ix + 1, iy, seed), tx)
    bottom = torch.lerp(_hash_unit(ix, iy + 1, seed), _hash_unit(ix + 1, iy + 1, seed), tx)
    return torch.lerp(top, bottom, ty) * 2.0 - 1.0


# -- parts: each returns (sdf [B, H, W], rgb [B, 3, H, W] or [B, 3, 1, 1]) ---------------------------------------------


def _head_half_width(scene: _Scene) -> Tensor:
    return HEAD_HALF_WIDTH * scene.p["head_width"]


def _feature_shift(scene: _Scene) -> Tensor:
    """Sideways shift of the eyes, eyebrows, mouth and hairline for the head turn (the nose moves 1.4× as far)."""
    return 0.06 * scene.p["yaw"]


def _backdrop(scene: _Scene) -> Tensor:
    """One hue, lighter behind the head, darker towards the corners: [B, 3, H, W]."""
    p, x, y = scene.p, scene.x, scene.y
    base = _hsv_colour(p["background_hue"], 0.35, 0.55 + 0.4 * p["background_lightness"])
    glow = torch.exp(-(x * x + (y + 0.2) ** 2) / 1.2).unsqueeze(1)
    return (base * (0.8 + 0.25 * glow) * (1.0 + 0.04 * scene.grain)).clamp(0.0, 1.0)


def _jaw_length(scene: _Scene) -> Tensor:
    """Cheek line to chin: a pointed chin reaches a little lower than a broad jaw."""
    return HEAD_BOTTOM * (1.04 - 0.08 * scene.p["jaw_roundness"])


def _head_sdf(scene: _Scene, y: Tensor) -> Tensor:
    """Skull: an ellipse above the cheek line; jaw: a superellipse below it whose exponent sets the chin shape."""
    upper = y < 0
    half_height = torch.where(upper, HEAD_TOP, _jaw_length(scene))
    exponent = torch.where(upper, torch.full_like(y, 2.0), 1.5 + 1.6 * scene.p["jaw_roundness"])
    return _sd_superellipse(scene.x, y, _head_half_width(scene), half_height, exponent)


def _face(scene: _Scene) -> tuple[Tensor, Tensor]:
    """The head's skin: shaded, with cheek blush and a darker contour."""
    p, x, y = scene.p, scene.x, scene.y
    head = _head_sdf(scene, y)
    half_width = _head_half_width(scene)
    half_height = torch.where(y < 0, HEAD_TOP, _jaw_length(scene))

    blush = sum(torch.exp(-(((x - side * 0.27 - _feature_shift(scene)) / 0.09) ** 2 + ((y - 0.15) / 0.06) ** 2))
                for side in (-1.0, 1.0))
    fill = torch.lerp(scene.skin_rgb, scene.colour(0.95, 0.45, 0.45), (0.35 * p["blush"] * blush).unsqueeze(1))
    fill = fill * scene.light(x / (half_width * 1.3), y / (half_height * 1.3)) * (1.0 + 0.03 * scene.grain)
    return head, scene.outline(fill, head, scene.skin_rgb * 0.62)


def _ear(scene: _Scene, side: float) -> tuple[Tensor, Tensor]:
    """An ellipse half hidden behind the face, with a darker concha. ``side`` -1 = image left."""
    p, size = scene.p, scene.p["ear_size"]
    # Mirrored ear coordinates: +u points away from the face on both sides. The far ear hides as the head turns.
    centre_x = side * (_head_half_width(scene) - 0.005) - 0.035 * p["yaw"]
    u, v = side * (scene.x - centre_x), scene.y - EAR_Y
    ear = _sd_ellipse(u, v, 0.068 * size, 0.115 * size)
    concha = _sd_ellipse(u + 0.012 * size, v + 0.005, 0.028 * size, 0.065 * size)
    fill = scene.skin_rgb * (1.0 - 0.22 * scene.cover(concha)) * (1.0 + 0.03 * scene.grain)
    fill = fill * scene.light(u / (0.08 * size), v / (0.14 * size)) * 0.95
    return ear, scene.outline(fill, ear, scene.skin_rgb * 0.62)


def _neck_half_width(scene: _Scene) -> Tensor:
    return 0.165 * scene.p["head_width"]


def _neck(scene: _Scene) -> tuple[Tensor, Tensor]:
    """A rounded column under the head, in the head's shadow and darkest right under the chin."""
    half_width = _neck_half_width(scene)
    neck = _sd_round_box(scene.x, scene.y - NECK_Y, half_width, torch.full_like(half_width, 0.38), 0.05)
    chin_shadow = _smoothstep(0.15, -0.02, _head_sdf(scene, scene.y - 0.07)).unsqueeze(1)  # the head, moved down
    fill = scene.skin_rgb * (0.86 - 0.16 * chin_shadow) * (1.0 + 0.03 * scene.grain)
    return neck, scene.outline(fill, neck, scene.skin_rgb * 0.55)


def _clothing(scene: _Scene) -> tuple[Tensor, Tensor]:
    """A shirt: broad rounded shoulders with a round neckline cut out and a lighter collar band."""
    p, x, y = scene.p, scene.x, scene.y
    shoulders = _sd_superellipse(x, y - SHOULDER_Y, 0.98, 0.55, 2.4)
    neckline = _sd_ellipse(x, y - NECKLINE_Y, 0.21, 0.17)
    clothing = torch.maximum(shoulders, -neckline)
    base = _hsv_colour(p["clothing_hue"], 0.55, 0.3 + 0.6 * p["clothing_lightness"])
    collar = scene.cover(_sd_ellipse(x, y - NECKLINE_Y, 0.255, 0.215))
    fill = torch.lerp(base, base * 0.8 + 0.2, collar * 0.7)
    fill = fill * scene.light(x / 1.1, (y - SHOULDER_Y) / 0.75) * (1.0 + 0.06 * scene.grain)
    return clothing, scene.outline(fill.clamp(0.0, 1.0), clothing, base * 0.55)


def _hair_cap_sdf(scene: _Scene) -> Tensor:
    half_width = _head_half_width(scene) * HAIR_CAP_WIDENING
    return _sd_superellipse(scene.x, scene.y - HAIR_CAP_Y, half_width, HAIR_CAP_HALF_HEIGHT, HAIR_CAP_EXPONENT)


def _hair_back(scene: _Scene) -> tuple[Tensor, Tensor]:
    """Hair behind the head: the hair-volume cap continued below its widest line by a slightly flaring slab down to a
    length set by ``hair_length``. In the head's shadow, so darker and unshaded."""
    length, x, y = scene.p["hair_length"], scene.x, scene.y
    top, bottom = HAIR_CAP_Y, -0.05 + 1.2 * length
    half_height = (bottom - top) / 2
    flare = 0.06 * length * ((y - top) / (bottom - top)).clamp(0.0, 1.0)
    slab = _sd_round_box(x, y - (top + bottom) / 2, _head_half_width(scene) * HAIR_CAP_WIDENING + flare,
                         half_height, half_height.clamp(max=0.16))
    hair = torch.minimum(_hair_cap_sdf(scene), slab)
    fill = scene.hair_rgb * 0.78 * (1.0 + 0.18 * scene.strands)
    return hair, scene.outline(fill.clamp(0.0, 1.0), hair, scene.hair_rgb * 0.45)


def _hair_front(scene: _Scene) -> tuple[Tensor, Tensor]:
    """Hair over the head: the hair-volume cap, cut off below by the hairline.

    The hairline's middle height is the fringe; it drops steeply towards the temples, tilts with the part, and is
    scalloped into pointed locks (``1 - |sin|`` has cusps pointing down). It is laid out in the frame of the facial
    features (fixed width, shifted with the head turn) so that even the longest bangs end above the eyes on every
    head shape, and the fringe edit never changes the eyes. Coloured with shading, a broken highlight band (the
    cartoon "halo" sheen) and a darker rim.
    """
    p, x, y = scene.p, scene.x, scene.y
    across = (x - _feature_shift(scene)) / HAIRLINE_HALF_WIDTH
    lock_frequency, lock_depth = 3.5 * math.pi, 0.05
    lock_phase = lock_frequency * across + 0.8 * p["hair_part"]
    hairline = _Curve(
        -0.47 + 0.2 * p["fringe"] + 0.45 * across ** 4 + 0.06 * p["hair_part"] * across
        + lock_depth * (1.0 - torch.sin(lock_phase).abs()),
        (1.8 * across ** 3 + 0.06 * p["hair_part"]
         - lock_depth * lock_frequency * torch.sign(torch.sin(lock_phase)) * torch.cos(lock_phase))
        / HAIRLINE_HALF_WIDTH)
    hair = torch.maximum(_hair_cap_sdf(scene), -_sd_below(y, hairline))

    half_width = _head_half_width(scene) * HAIR_CAP_WIDENING
    normal_x, normal_y = x / half_width, (y - HAIR_CAP_Y) / HAIR_CAP_HALF_HEIGHT
    ring = torch.sqrt(normal_x * normal_x + normal_y * normal_y)
    sheen = (_smoothstep(0.58, 0.66, ring) * _smoothstep(0.8, 0.72, ring) * _smoothstep(-0.1, -0.3, y)).unsqueeze(1)
    sheen = sheen * (0.6 + 0.4 * scene.strands).clamp(0.0, 1.0)
    fill = scene.hair_rgb * scene.light(normal_x, normal_y) * (1.0 + 0.18 * scene.strands)
    fill = torch.lerp(fill, scene.hair_rgb * 0.6 + 0.4, sheen * 0.45)
    return hair, scene.outline(fill.clamp(0.0, 1.0), hair, scene.hair_rgb * 0.5)


def _nose(scene: _Scene) -> tuple[Tensor, Tensor]:
    """A rounded button nose (tip and wings) with a soft bridge, slightly darker than the face, with nostrils.

    Line art only along the underside: a cartoon nose is read from its shadow line, not from a full contour.
    """
    size = scene.p["nose_size"]
    u, v = scene.x - 1.4 * _feature_shift(scene), scene.y - NOSE_Y
    tip = _sd_ellipse(u, v, 0.04 * size, 0.034 * size)
    wings = _sd_circle(u.abs() - 0.036 * size, v - 0.012 * size, 0.024 * size)
    bridge_half_width = 0.012 * size * (1.0 + v / (0.12 * size)).clamp(0.3, 2.0)
    bridge = torch.maximum(u.abs() - bridge_half_width, (v + 0.06 * size).abs() - 0.06 * size)
    nose = _smooth_union(_smooth_union(tip, wings, 0.012 * size), bridge, 0.02 * size)
    nostrils = _sd_ellipse(u.abs() - 0.022 * size, v - 0.02 * size, 0.011 * size, 0.007 * size)

    fill = scene.skin_rgb * 0.93 * scene.light(u / (0.07 * size), (v + 0.01) / (0.07 * size))
    fill = torch.lerp(fill * (1.0 + 0.03 * scene.grain), scene.skin_rgb * 0.4, scene.cover(nostrils))
    underside = _smoothstep(-0.01, 0.01, v / size).unsqueeze(1)
    return nose, torch.lerp(fill, scene.outline(fill, nose, scene.skin_rgb * 0.6), underside)


def _eye(scene: _Scene, side: float) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """One toon eye, ``((white_sdf, white_rgb), (iris_sdf, iris_rgb))``: a white ellipse with a heavy upper lash line,
    and an iris (clipped to the white) with pupil and a catch light facing the light.

    The lash line is drawn inside the white (labelled eye white, as lids and lashes are in face-parsing data sets) and
    kept thin so that most eye-white pixels are white even at 128².
    """
    p, size = scene.p, scene.p["eye_size"]
    # The eye on the side the head turns towards is seen more edge-on, so it narrows.
    half_width = 0.105 * size * (1.0 - 0.12 * p["yaw"] * side)
    half_height = 0.075 * size
    u, v = scene.x - side * EYE_X - _feature_shift(scene), scene.y - EYE_Y
    white = _sd_ellipse(u, v, half_width, half_height)
    lash = scene.colour(0.13, 0.09, 0.1)
    white_fill = scene.colour(0.98, 0.98, 0.99) * (1.0 - 0.18 * _smoothstep(0.2, -1.0, v / half_height).unsqueeze(1))
    upper_lid = _smoothstep(0.35, 0.0, v / half_height).unsqueeze(1)
    white_fill = torch.lerp(white_fill, scene.outline(white_fill, white, lash, width=0.016), upper_lid)
    white_fill = scene.outline(white_fill, white, lash, width=0.005)

    iris_radius = 0.06 * size
    iris_u = u - 0.35 * half_width * p["gaze_x"]
    iris_v = v - 0.22 * half_height * p["gaze_y"] - 0.08 * half_height
    iris_disc = _sd_circle(iris_u, iris_v, iris_radius)
    iris = torch.maximum(iris_disc, white)
    iris_base = _hsv_colour(p["iris_hue"], 0.7, 0.62)
    lower_glow = _smoothstep(-0.2, 0.9, iris_v / iris_radius).unsqueeze(1)
    iris_fill = torch.lerp(iris_base * 0.55, iris_base * 1.15 + 0.08, lower_glow).clamp(0.0, 1.0)
    iris_fill = torch.lerp(iris_fill, scene.colour(0.04, 0.03, 0.05),
                           scene.cover(_sd_circle(iris_u, iris_v, 0.46 * iris_radius)))
    light_length = torch.sqrt(p["light_x"] ** 2 + p["light_y"] ** 2 + 1.0)
    catch_light = _sd_circle(iris_u - 0.45 * iris_radius * p["light_x"] / light_length,
                             iris_v - 0.45 * iris_radius * (p["light_y"] - 0.6) / light_length, 0.24 * iris_radius)
    iris_fill = torch.lerp(iris_fill, scene.colour(1.0, 1.0, 1.0), scene.cover(catch_light))
    iris_fill = scene.outline(iris_fill, iris_disc, iris_base * 0.35, width=0.01)
    return (white, white_fill), (iris, iris_fill)


def _eyebrow(scene: _Scene, side: float) -> tuple[Tensor, Tensor]:
    """An arched stroke, thick at the inner end and tapering outwards; height and tilt from the parameters.

    Local ``u`` points away from the face centre on both sides, so ``eyebrow_angle`` tilts both brows mirror-wise.
    The tilt is a shear, not a rotation: close enough for the small angles used, and it keeps the slope analytic.
    """
    p = scene.p
    half_length, arch, tilt = 0.095, 0.022, 0.3 * p["eyebrow_angle"]
    u = side * (scene.x - side * EYEBROW_X - _feature_shift(scene))
    v = scene.y - EYEBROW_Y + 0.05 * p["eyebrow_height"]
    t = (u / half_length).clamp(-1.0, 1.0)
    centre_line = _Curve(-arch * (1.0 - t * t) - tilt * u, 2.0 * arch * t / half_length - tilt)
    thickness = 0.022 * (1.0 - 0.45 * ((t + 1.0) / 2.0) ** 2)
    across = _sd_below(v, centre_line).abs() - thickness
    along = u.abs() - half_length
    outside = torch.sqrt(across.clamp_min(0.0) ** 2 + along.clamp_min(0.0) ** 2)
    eyebrow = outside + torch.maximum(across, along).clamp_max(0.0)
    return eyebrow, scene.hair_rgb * 0.6 + 0.04


def _mouth(scene: _Scene) -> list[tuple[Tensor, Tensor, ToonPart]]:
    """The mouth as bands between curves across its width: upper lip, mouth inside (with upper teeth), lower lip.

    With ``t`` = position across the mouth in [-1, 1]: the lips meet on the seam ``y = -lift·t²`` (``lift`` ∝ smile,
    so the corners go up for a smile and down for a frown); opening pulls the inner lip edges apart by lens-shaped
    gaps ∝ (1 - t²), deeper below for a smile; lip thickness tapers to zero at the corners, with a cupid's bow on the
    upper lip, and thins as the smile stretches the lips. Returns ``[(sdf, rgb, part)]`` in painting order.
    """
    p, smile, opening = scene.p, scene.p["smile"], scene.p["mouth_open"]
    half_width = 0.12 * (1.0 + 0.15 * smile)
    u, v = scene.x - _feature_shift(scene), scene.y - MOUTH_Y
    t = (u / half_width).clamp(-1.0, 1.0)
    dt_du = 1.0 / half_width
    taper, taper_slope = 1.0 - t * t, -2.0 * t * dt_du
    lift = 0.055 * smile
    upper_gap = 0.028 * opening
    lower_gap = (0.06 + 0.03 * smile.clamp_min(0.0)) * opening
    upper_thickness = 0.034 * (1.0 - 0.25 * smile)
    lower_thickness = 0.042 * (1.0 - 0.3 * smile)
    bow = taper * (0.7 + 0.9 * t.abs())  # cupid's bow: peaks near |t| = 0.35, a notch in the middle
    bow_slope = taper_slope * (0.7 + 0.9 * t.abs()) + taper * 0.9 * torch.sign(t) * dt_du

    seam = _Curve(-lift * t * t, -2.0 * lift * t * dt_du)
    inner_top = _Curve(seam.value - upper_gap * taper, seam.slope - upper_gap * taper_slope)
    inner_bottom = _Curve(seam.value + lower_gap * taper, seam.slope + lower_gap * taper_slope)
    lip_top = _Curve(inner_top.value - upper_thickness * bow, inner_top.slope - upper_thickness * bow_slope)
    lip_bottom = _Curve(inner_bottom.value + lower_thickness * taper,
                        inner_bottom.slope + lower_thickness * taper_slope)
    teeth_edge = _Curve(inner_top.value + 0.03, inner_top.slope)

    beyond_corners = u.abs() - half_width
    upper_lip = torch.maximum(_sd_between(v, lip_top, inner_top), beyond_corners)
    inside = torch.maximum(_sd_between(v, inner_top, inner_bottom), beyond_corners)
    lower_lip = torch.maximum(_sd_between(v, inner_bottom, lip_bottom), beyond_corners)
    teeth = torch.maximum(torch.maximum(inside, -_sd_below(v, teeth_edge)), u.abs() - 0.8 * half_width)

    lip_rgb = torch.lerp(scene.skin_rgb * scene.colour(0.86, 0.55, 0.55) + scene.colour(0.1, 0.0, 0.02),
                         scene.colour(0.78, 0.1, 0.2), p["lip_tint"].unsqueeze(1))
    line_rgb = lip_rgb * 0.45
    upper_fill = scene.outline(lip_rgb * 0.85 * scene.light(u / half_width, -0.4), upper_lip, line_rgb, width=0.01)
    lower_shine = torch.exp(-(((u + 0.3 * half_width) / (0.3 * half_width)) ** 2
                              + ((v - (inner_bottom.value + lip_bottom.value) / 2) / 0.012) ** 2)).unsqueeze(1)
    lower_fill = torch.lerp(lip_rgb * scene.light(u / half_width, 0.5), lip_rgb * 0.5 + 0.5, 0.35 * lower_shine)
    lower_fill = scene.outline(lower_fill, lower_lip, line_rgb, width=0.008)
    tongue = _sd_ellipse(u, v - inner_bottom.value.clamp_max(0.0) - 0.6 * lower_gap, 0.6 * half_width,
                         0.5 * lower_gap + 0.01)
    inside_fill = torch.lerp(scene.colour(0.3, 0.06, 0.09), scene.colour(0.78, 0.33, 0.37), scene.cover(tongue))
    teeth_fill = scene.colour(0.98, 0.97, 0.92) * (1.0 - 0.12 * _smoothstep(-0.02, 0.0, v - teeth_edge.value)
                                                   .unsqueeze(1))
    return [(inside, inside_fill, ToonPart.MOUTH_INSIDE), (teeth, teeth_fill, ToonPart.TEETH),
            (upper_lip, upper_fill, ToonPart.UPPER_LIP), (lower_lip, lower_fill, ToonPart.LOWER_LIP)]
