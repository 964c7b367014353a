"""The procedural toon-face domain: output format, determinism, batching, the part classes and the edit parameters."""
from __future__ import annotations

import pytest
import torch

from editor_core.domains.toonface import (
    EDIT_PARAMS,
    PARAM_SCHEMA,
    TOONFACE_SCHEMA,
    ToonPart,
    check_params,
    default_params,
    render,
    sample_params,
    toonface_schema,
    with_param,
)
from editor_core.schema import LabelSchema

SIZE = 48


def _area_mask(mask: torch.Tensor, *parts: ToonPart) -> torch.Tensor:
    """Where ``mask`` is any of ``parts`` (bool, same shape)."""
    return torch.isin(mask, torch.tensor([int(p) for p in parts]))


def _area(mask: torch.Tensor, *parts: ToonPart) -> torch.Tensor:
    """Pixels per sample [B] labelled with any of ``parts``."""
    return _area_mask(mask, *parts).flatten(1).sum(1)


def _centroid(mask: torch.Tensor, part: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (row, column) [B] of the pixels of ``part``."""
    inside = (mask == part).float()
    rows = torch.arange(mask.shape[1], dtype=torch.float32).view(1, -1, 1)
    columns = torch.arange(mask.shape[2], dtype=torch.float32).view(1, 1, -1)
    count = inside.flatten(1).sum(1)
    return (inside * rows).flatten(1).sum(1) / count, (inside * columns).flatten(1).sum(1) / count


@pytest.fixture(scope="module")
def faces():
    """Random faces, upright (no roll) so that image rows are face rows for the geometric checks."""
    return with_param(sample_params(4, seed=11), "roll", 0.0)


@pytest.fixture(scope="module")
def sweep(faces):
    """``sweep(name)`` → masks of ``faces`` with parameter ``name`` at its low and at its high end (cached)."""
    cache = {}

    def masks(name):
        if name not in cache:
            spec = PARAM_SCHEMA[name]
            cache[name] = tuple(render(with_param(faces, name, value), SIZE)[1] for value in (spec.low, spec.high))
        return cache[name]

    return masks


# -- schema ------------------------------------------------------------------------------------------------------------


def test_schema_lists_the_part_classes_in_index_order():
    names = TOONFACE_SCHEMA["class_names"]
    assert 16 <= len(names) <= 20
    assert names == tuple(part.name.lower() for part in ToonPart)
    assert names[0] == "background"
    colours = TOONFACE_SCHEMA["colours"]
    assert len(set(colours)) == len(names)
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colours)


def test_toonface_schema_builds_a_label_schema():
    schema = toonface_schema()
    assert isinstance(schema, LabelSchema)
    assert schema.name == "toonface"
    assert schema.class_names == TOONFACE_SCHEMA["class_names"]
    assert schema.index_of("mouth_inside") == ToonPart.MOUTH_INSIDE


def test_param_schema_is_consistent():
    for name, spec in PARAM_SCHEMA.items():
        assert spec.low < spec.high and spec.low <= spec.default <= spec.high, name
        assert spec.description, name
    assert set(EDIT_PARAMS) <= set(PARAM_SCHEMA)


# -- parameters --------------------------------------------------------------------------------------------------------


def test_sample_params_is_reproducible_and_in_range():
    first, again, other = sample_params(16, 3), sample_params(16, 3), sample_params(16, 4)
    assert check_params(first) == 16
    assert all(torch.equal(first[name], again[name]) for name in PARAM_SCHEMA)
    assert not torch.equal(first["smile"], other["smile"])
    assert torch.equal(first["noise_seed"], first["noise_seed"].floor())
    from_generator = sample_params(16, torch.Generator().manual_seed(3))
    assert all(torch.equal(first[name], from_generator[name]) for name in PARAM_SCHEMA)


def test_with_param_changes_one_parameter_only(faces):
    edited = with_param(faces, "smile", 0.75)
    assert torch.equal(edited["smile"], torch.full((4,), 0.75))
    assert all(torch.equal(edited[name], faces[name]) for name in PARAM_SCHEMA if name != "smile")
    per_sample = with_param(faces, "eye_size", torch.linspace(0.8, 1.2, 4))
    assert torch.allclose(per_sample["eye_size"], torch.linspace(0.8, 1.2, 4))
    assert not torch.equal(faces["smile"], edited["smile"])  # the input is not modified


@pytest.mark.parametrize("name, value", [("smile", 1.5), ("eye_size", 0.1), ("mouth_open", -0.2),
                                         ("roll", float("nan"))])
def test_out_of_range_params_raise(faces, name, value):
    with pytest.raises(ValueError, match=name):
        with_param(faces, name, value)
    params = dict(faces)
    params[name] = torch.full((4,), value)
    with pytest.raises(ValueError, match=name):
        render(params, SIZE)


def test_malformed_params_raise_clear_errors(faces):
    missing = {name: value for name, value in faces.items() if name != "fringe"}
    with pytest.raises(ValueError, match="missing \\['fringe'\\]"):
        render(missing, SIZE)
    with pytest.raises(ValueError, match="unknown \\['moustache'\\]"):
        render({**faces, "moustache": torch.zeros(4)}, SIZE)
    with pytest.raises(ValueError, match="same length"):
        render({**faces, "smile": torch.zeros(3)}, SIZE)
    with pytest.raises(TypeError, match="smile"):
        render({**faces, "smile": [0.0] * 4}, SIZE)
    with pytest.raises(ValueError, match="unknown toon face param"):
        with_param(faces, "moustache", 0.0)
    with pytest.raises(ValueError, match="size"):
        render(faces, 8)


# -- rendering ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [SIZE, 67])
def test_render_shapes_dtypes_and_ranges(faces, size):
    rgb, mask = render(faces, size)
    assert rgb.shape == (4, 3, size, size) and rgb.dtype == torch.float32
    assert mask.shape == (4, size, size) and mask.dtype == torch.int64
    assert rgb.min() >= -1.0 and rgb.max() <= 1.0
    assert mask.min() >= 0 and mask.max() < len(ToonPart)
    assert rgb.std(dim=(2, 3)).min() > 0.05  # a picture, not a flat colour


def test_render_is_deterministic(faces):
    first, second = render(faces, SIZE), render(faces, SIZE)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_batch_renders_like_single_samples(faces):
    rgb, mask = render(faces, SIZE)
    for index in range(4):
        single_rgb, single_mask = render({name: value[index:index + 1] for name, value in faces.items()}, SIZE)
        assert torch.equal(single_mask[0], mask[index])
        assert torch.allclose(single_rgb[0], rgb[index], atol=1e-5)


def test_every_class_appears_across_a_batch():
    _, mask = render(sample_params(16, seed=0), SIZE)
    counts = torch.bincount(mask.flatten(), minlength=len(ToonPart))
    absent = [ToonPart(i).name for i in range(len(ToonPart)) if counts[i] == 0]
    assert not absent


def test_mask_matches_the_image_colours():
    """Pixels labelled as a part carry that part's look: white eyes and teeth, a dark mouth, blue default irises."""
    rgb, mask = render(with_param(default_params(1), "mouth_open", 1.0), 128)
    brightness = rgb.mean(1)

    def brightness_quantile(q, *parts):
        return brightness[_area_mask(mask, *parts)].quantile(q)

    eye_white = (ToonPart.LEFT_EYE_WHITE, ToonPart.RIGHT_EYE_WHITE)
    assert brightness_quantile(0.75, *eye_white) > 0.8  # at 128² the lash line and the outline take the rest
    assert brightness_quantile(0.5, *eye_white) > brightness_quantile(0.5, ToonPart.LEFT_IRIS, ToonPart.RIGHT_IRIS)
    assert brightness_quantile(0.5, ToonPart.TEETH) > 0.5
    assert brightness_quantile(0.5, ToonPart.MOUTH_INSIDE) < brightness_quantile(0.5, ToonPart.TEETH) - 0.5
    iris = _area_mask(mask, ToonPart.LEFT_IRIS, ToonPart.RIGHT_IRIS)
    assert (rgb[:, 2][iris] - rgb[:, 0][iris]).median() > 0.1


def test_noise_seed_changes_texture_but_not_the_mask(faces):
    rgb, mask = render(faces, SIZE)
    reseeded_rgb, reseeded_mask = render(with_param(faces, "noise_seed", 12345.0), SIZE)
    assert torch.equal(mask, reseeded_mask)
    assert not torch.allclose(rgb, reseeded_rgb, atol=1e-3)


# -- edit parameters ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EDIT_PARAMS))
def test_edit_changes_only_its_classes(sweep, name):
    low, high = sweep(name)
    changed = low != high
    assert changed.any()
    allowed = torch.zeros(len(ToonPart), dtype=torch.bool)
    allowed[[int(part) for part in EDIT_PARAMS[name]]] = True
    leaked = changed & ~(allowed[low] & allowed[high])
    assert not leaked.any(), f"{name} changed {int(leaked.sum())} pixels outside its classes"


@pytest.mark.parametrize("name, parts", [
    ("eye_size", (ToonPart.LEFT_EYE_WHITE, ToonPart.RIGHT_EYE_WHITE, ToonPart.LEFT_IRIS, ToonPart.RIGHT_IRIS)),
    ("nose_size", (ToonPart.NOSE,)),
    ("ear_size", (ToonPart.LEFT_EAR, ToonPart.RIGHT_EAR)),
    ("hair_length", (ToonPart.HAIR,)),
    ("fringe", (ToonPart.HAIR,)),
    ("head_width", (ToonPart.SKIN,)),
    ("jaw_roundness", (ToonPart.SKIN,)),
])
def test_edit_grows_its_parts(sweep, name, parts):
    low, high = sweep(name)
    assert (_area(high, *parts) > _area(low, *parts)).all()


def test_fringe_covers_the_forehead(sweep):
    low, high = sweep("fringe")
    assert (_area(high, ToonPart.SKIN) < _area(low, ToonPart.SKIN)).all()


def test_mouth_opening_shows_the_mouth_inside_and_teeth(sweep):
    closed, opened = sweep("mouth_open")
    assert (_area(closed, ToonPart.MOUTH_INSIDE, ToonPart.TEETH) == 0).all()
    assert (_area(opened, ToonPart.MOUTH_INSIDE) > 0).all() and (_area(opened, ToonPart.TEETH) > 0).all()


def test_smile_lifts_the_mouth_corners(faces):
    """The closed lips' outer columns sit higher than their middle for a smile, lower for a frown."""
    closed = with_param(faces, "mouth_open", 0.0)
    frown, smile = (render(with_param(closed, "smile", value), 96)[1] for value in (-1.0, 1.0))
    assert not torch.equal(frown, smile)

    def corner_lift(mask):
        lips = _area_mask(mask, ToonPart.UPPER_LIP, ToonPart.LOWER_LIP)
        rows = torch.arange(mask.shape[1], dtype=torch.float32).view(1, -1, 1).expand(mask.shape)
        columns = torch.arange(mask.shape[2], dtype=torch.float32).view(1, 1, -1).expand(mask.shape)
        offset = (columns - _centroid(lips.long(), 1)[1].view(-1, 1, 1)).abs() * lips
        offset = offset / offset.flatten(1).amax(1).view(-1, 1, 1)  # 0 at the middle, 1 at the corners

        def mean_row(where):
            return (rows * where).flatten(1).sum(1) / where.flatten(1).sum(1)

        # Rows grow downwards: positive = corners above the middle.
        return mean_row(lips & (offset < 0.25)) - mean_row(lips & (offset > 0.6))

    assert (corner_lift(smile) > corner_lift(frown) + 1.0).all()


def test_eyebrow_height_moves_the_eyebrows_up(sweep):
    low, high = sweep("eyebrow_height")
    for part in (ToonPart.LEFT_EYEBROW, ToonPart.RIGHT_EYEBROW):
        assert (_centroid(high, part)[0] < _centroid(low, part)[0] - 1.0).all()


def test_eyebrow_angle_raises_the_outer_ends(sweep):
    """Positive angle: the outer half of each eyebrow sits higher (smaller row) than the inner half."""
    low, high = sweep("eyebrow_angle")

    def outer_minus_inner_row(mask, part, outer_is_right):
        inside = (mask == part).float()
        rows = torch.arange(mask.shape[1], dtype=torch.float32).view(1, -1, 1)
        centre_column = _centroid(mask, part)[1].view(-1, 1, 1)
        columns = torch.arange(mask.shape[2], dtype=torch.float32).view(1, 1, -1)
        outer = inside * ((columns > centre_column) == outer_is_right)
        inner = inside - outer
        return ((outer * rows).flatten(1).sum(1) / outer.flatten(1).sum(1)
                - (inner * rows).flatten(1).sum(1) / inner.flatten(1).sum(1))

    for part, outer_is_right in ((ToonPart.LEFT_EYEBROW, False), (ToonPart.RIGHT_EYEBROW, True)):
        assert (outer_minus_inner_row(high, part, outer_is_right) < 0).all()
        assert (outer_minus_inner_row(low, part, outer_is_right) > 0).all()
