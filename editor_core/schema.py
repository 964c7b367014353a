"""Label schemas: the part classes of a domain, their display colours, and mask ↔ colour-image conversion.

A schema fixes the meaning of the integer labels in masks (``int64 [..., H, W]``, class index per pixel) for one
segmentation branch. Presets follow the EditGAN / DatasetGAN releases (index order as in the official release) so
that annotations made here line up with imported published weights. The demo domain's schema lives with its
renderer in ``editor_core/domains/``.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import torch

MIN_CLASSES = 2
# Masks must stay storable as 8-bit PNG label images.
MAX_CLASSES = 256

Colour = tuple[int, int, int]

# Candidate colours for the palette: an HSV grid (36 hues × 3 saturations × 3 values, all values ≥ 0.6 so every
# class stays readable on the black background) plus white and mid grey.
_PALETTE_HUES = 36
_PALETTE_SATURATIONS = (0.45, 0.7, 1.0)
_PALETTE_VALUES = (0.6, 0.8, 1.0)


def _palette_candidates() -> np.ndarray:
    grid = {tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h / _PALETTE_HUES, s, v))
            for h in range(_PALETTE_HUES) for s in _PALETTE_SATURATIONS for v in _PALETTE_VALUES}
    grid |= {(255, 255, 255), (160, 160, 160)}
    return np.array(sorted(grid), dtype=np.float64)


def _redmean_distance(colours: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Cheap perceptual RGB distance ("redmean"): weights the channels the way the eye separates them."""
    mean_red = (colours[:, 0] + colour[0]) / 2
    diff = colours - colour
    return np.sqrt((2 + mean_red / 256) * diff[:, 0] ** 2 + 4 * diff[:, 1] ** 2
                   + (2 + (255 - mean_red) / 256) * diff[:, 2] ** 2)


def default_palette(num_colours: int) -> tuple[Colour, ...]:
    """Deterministic, visually distinct colours; index 0 (background) is black.

    Greedy farthest-point selection: each next colour is the candidate farthest from all colours chosen so far, so
    the first classes (the ones every schema has) get the most distinct colours and a longer palette only adds.
    """
    if not 1 <= num_colours <= MAX_CLASSES:
        raise ValueError(f"num_colours must be in 1..{MAX_CLASSES}, got {num_colours}")
    candidates = _palette_candidates()
    chosen = [np.zeros(3)]
    distance_to_chosen = _redmean_distance(candidates, chosen[0])
    for _ in range(num_colours - 1):
        best = candidates[int(distance_to_chosen.argmax())]
        chosen.append(best)
        distance_to_chosen = np.minimum(distance_to_chosen, _redmean_distance(candidates, best))
    return tuple((int(c[0]), int(c[1]), int(c[2])) for c in chosen)


def parse_colour(value: Any) -> Colour:
    """``(r, g, b)`` ints in 0..255 or ``"#rrggbb"`` → ``(r, g, b)``; anything else raises ``ValueError``."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 7 and text.startswith("#"):
            try:
                return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
            except ValueError:
                pass
        raise ValueError(f"colour string must look like '#rrggbb', got {value!r}")
    if (isinstance(value, (tuple, list)) and len(value) == 3
            and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in value)
            and all(0 <= c <= 255 for c in value)):
        return int(value[0]), int(value[1]), int(value[2])
    raise ValueError(f"colour must be three integers in 0..255 or '#rrggbb', got {value!r}")


def colour_to_hex(colour: Colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


@dataclass(frozen=True)
class LabelSchema:
    """The classes of one segmentation branch.

    ``class_names[i]`` and ``colours[i]`` describe label ``i``; label 0 is conventionally the background.
    ``version`` increases whenever classes are added, removed or reordered, so stored masks can be checked against it.
    """

    name: str
    class_names: tuple[str, ...]
    colours: tuple[Colour, ...]
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("schema name must be a non-empty string")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"schema version must be an integer ≥ 1, got {self.version!r}")
        names = tuple(self.class_names)
        if not MIN_CLASSES <= len(names) <= MAX_CLASSES:
            raise ValueError(f"a schema needs {MIN_CLASSES}..{MAX_CLASSES} classes, got {len(names)}")
        for index, class_name in enumerate(names):
            if not isinstance(class_name, str) or not class_name.strip():
                raise ValueError(f"class {index} needs a non-empty name, got {class_name!r}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique; repeated: {duplicates}")
        if len(self.colours) != len(names):
            raise ValueError(f"need one colour per class: {len(names)} classes but {len(self.colours)} colours")
        colours = tuple(parse_colour(c) for c in self.colours)
        repeated = sorted({c for c in colours if colours.count(c) > 1})
        if repeated:
            raise ValueError(f"colours must be unique so colour images can be decoded; repeated: "
                             f"{[colour_to_hex(c) for c in repeated]}")
        # Frozen dataclass: normalise lists from JSON into the declared tuple types.
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "colours", colours)

    @classmethod
    def from_names(cls, name: str, class_names: Sequence[str], version: int = 1) -> "LabelSchema":
        """A schema whose colours are ``default_palette(len(class_names))``."""
        if not MIN_CLASSES <= len(class_names) <= MAX_CLASSES:
            raise ValueError(f"a schema needs {MIN_CLASSES}..{MAX_CLASSES} classes, got {len(class_names)}")
        return cls(name, tuple(class_names), default_palette(len(class_names)), version)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def index_of(self, class_name: str) -> int:
        try:
            return self.class_names.index(class_name)
        except ValueError:
            raise KeyError(f"schema {self.name!r} has no class {class_name!r}") from None

    # -- serialisation ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "class_names": list(self.class_names),
                "colours": [list(c) for c in self.colours]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabelSchema":
        """Inverse of ``to_dict``; colours may also be ``"#rrggbb"`` strings."""
        missing = [key for key in ("name", "class_names", "colours") if key not in data]
        if missing:
            raise ValueError(f"schema dict is missing {missing}; expected keys name, class_names, colours, version")
        return cls(data["name"], tuple(data["class_names"]), tuple(parse_colour(c) for c in data["colours"]),
                   data.get("version", 1))

    # -- masks ↔ colour images -------------------------------------------------------------------------------------

    def palette_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``uint8 [K, 3]``, row ``i`` the colour of class ``i``."""
        return torch.tensor(self.colours, dtype=torch.uint8, device=device)

    def colourise(self, mask: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Integer mask ``[..., H, W]`` → ``uint8 [..., H, W, 3]`` in the schema's colours."""
        mask = torch.as_tensor(mask)
        if mask.dtype.is_floating_point or mask.dtype == torch.bool or mask.dtype.is_complex:
            raise ValueError(f"mask must hold integer class indices, got dtype {mask.dtype}")
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= self.num_classes):
            raise ValueError(f"mask labels must be in 0..{self.num_classes - 1} for schema {self.name!r}, "
                             f"found {int(mask.min())}..{int(mask.max())}")
        return self.palette_tensor(mask.device)[mask.long()]

    def mask_from_colour_image(self, image: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``uint8 [H, W, 3]`` colour image → ``int64 [H, W]`` mask by exact colour match.

        Every pixel must carry one of the schema's colours exactly (no anti-aliasing, no alpha); otherwise a
        ``ValueError`` names the unknown colours, how often they occur and where the first one is.
        """
        image = torch.as_tensor(image)
        if image.dtype != torch.uint8:
            raise ValueError(f"colour image must be uint8, got {image.dtype}")
        if image.ndim != 3 or image.shape[-1] != 3:
            hint = " (drop the alpha channel: image[..., :3])" if image.ndim == 3 and image.shape[-1] == 4 else ""
            raise ValueError(f"colour image must have shape [H, W, 3], got {tuple(image.shape)}{hint}")
        keys = _colour_keys(image.long())
        palette_keys = _colour_keys(self.palette_tensor(image.device).long())
        sorted_keys, order = palette_keys.sort()
        position = torch.searchsorted(sorted_keys, keys).clamp_(max=len(sorted_keys) - 1)
        known = sorted_keys[position] == keys
        if not bool(known.all()):
            raise ValueError(self._describe_unknown_colours(image, known))
        return order[position]

    def _describe_unknown_colours(self, image: torch.Tensor, known: torch.Tensor) -> str:
        unknown_keys, counts = _colour_keys(image.long())[~known].unique(return_counts=True)
        ranked = counts.argsort(descending=True)[:5]
        listed = ", ".join(f"{colour_to_hex(_key_to_colour(int(unknown_keys[i])))} ×{int(counts[i])}" for i in ranked)
        y, x = (int(v) for v in (~known).nonzero()[0])
        return (f"colour image has {int((~known).sum())} pixels whose colour is not a class of schema {self.name!r} "
                f"({len(unknown_keys)} distinct; most frequent: {listed}; first at y={y}, x={x}). Paint every pixel "
                f"with an exact class colour (disable anti-aliasing) or add the missing classes to the schema.")


def _colour_keys(rgb: torch.Tensor) -> torch.Tensor:
    """int64 ``[..., 3]`` → one int64 key per colour (``r·2¹⁶ + g·2⁸ + b``)."""
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _key_to_colour(key: int) -> Colour:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


# ---------------------------------------------------------------------------------------------------------------------
# Presets of the published domains (index order as in the EditGAN / DatasetGAN releases)

CAR_CLASSES = (
    "background", "back bumper", "bumper", "car body", "car light right", "car light left", "door back", "fender",
    "door front", "grilles", "back handle", "front handle", "hood", "license plate front", "license plate back",
    "logo", "mirror", "roof", "running boards", "taillight right", "taillight left", "back wheel", "front wheel",
    "trunk", "wheelhub back", "wheelhub front", "spoke back", "spoke front", "door window back", "back windshield",
    "door window front", "windshield",
)

FACE_CLASSES = (
    "background", "head", "cheek", "chin", "ear", "helix", "lobule", "bottom lid", "eyelashes", "iris", "pupil",
    "sclera", "tear duct", "top lid", "eyebrow", "forehead", "frown", "hair", "sideburns", "jaw", "moustache",
    "inferior lip", "oral commissure", "superior lip", "teeth", "neck", "nose", "ala of nose", "bridge", "nose tip",
    "nostril", "philtrum", "temple", "wrinkles",
)

# The releases give only the class count (16) for cat and bird, not the names. These lists are ours: cat = 15 body
# parts a 256² cat portrait shows, coarse to fine; bird = the 15 part names of CUB-200-2011 (left/right kept apart as
# CUB does). Users importing published weights whose order differs should build their own schema.
CAT_CLASSES = (
    "background", "head", "ear", "eye", "nose", "mouth", "tongue", "whiskers", "neck", "chest", "back", "belly",
    "front leg", "back leg", "paw", "tail",
)

BIRD_CLASSES = (
    "background", "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
    "right eye", "right leg", "right wing", "tail", "throat",
)

PRESETS: Mapping[str, LabelSchema] = MappingProxyType({
    "car": LabelSchema.from_names("car", CAR_CLASSES),
    "face": LabelSchema.from_names("face", FACE_CLASSES),
    "cat": LabelSchema.from_names("cat", CAT_CLASSES),
    "bird": LabelSchema.from_names("bird", BIRD_CLASSES),
})

# Class groups that the EditGAN release edits together (e.g. both front lights), by preset name.
EDIT_GROUPS: Mapping[str, Mapping[str, tuple[int, ...]]] = MappingProxyType({
    "car": MappingProxyType({
        "front light": (4, 5),
        "wheel": (21, 22, 24, 25, 26, 27),
        "handle": (10, 11),
        "license plate": (13, 14),
    }),
})


def preset(name: str) -> LabelSchema:
    """The preset schema called ``name`` (one of ``PRESETS``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"no preset schema {name!r}; available: {sorted(PRESETS)}") from None
