"""Label schema: validation, presets, palette, serialisation, mask ↔ colour-image conversion."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

from editor_core.schema import (
    EDIT_GROUPS, MAX_CLASSES, PRESETS, LabelSchema, default_palette, parse_colour, preset)


def _three_class_schema() -> LabelSchema:
    return LabelSchema("toy", ("background", "eye", "nose"), ((0, 0, 0), (255, 0, 0), (0, 0, 255)))


# -- presets --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, count", [("car", 32), ("face", 34), ("cat", 16), ("bird", 16)])
def test_preset_class_counts_match_the_paper(name, count):
    schema = preset(name)
    assert schema.num_classes == count
    assert schema.class_names[0] == "background"
    assert len(set(schema.colours)) == count


def test_car_preset_follows_release_index_order():
    car = preset("car")
    assert car.index_of("car light right") == 4
    assert car.index_of("license plate back") == 14
    assert car.index_of("windshield") == 31
    assert preset("face").index_of("wrinkles") == 33


def test_car_edit_groups_name_the_release_classes():
    car, groups = preset("car"), EDIT_GROUPS["car"]
    assert [car.class_names[i] for i in groups["front light"]] == ["car light right", "car light left"]
    assert [car.class_names[i] for i in groups["license plate"]] == ["license plate front", "license plate back"]
    assert {car.class_names[i] for i in groups["wheel"]} == {
        "back wheel", "front wheel", "wheelhub back", "wheelhub front", "spoke back", "spoke front"}
    assert [car.class_names[i] for i in groups["handle"]] == ["back handle", "front handle"]


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(KeyError, match="available"):
        preset("horse")
    assert set(PRESETS) == {"car", "face", "cat", "bird"}


# -- palette --------------------------------------------------------------------------------------------------------


def test_default_palette_is_deterministic_distinct_and_readable():
    palette = default_palette(MAX_CLASSES)
    assert palette == default_palette(MAX_CLASSES)
    assert palette[0] == (0, 0, 0)
    assert len(set(palette)) == MAX_CLASSES
    # A shorter palette is a prefix: adding classes never recolours existing ones.
    assert default_palette(34) == palette[:34]
    # Every class colour stands out from the black background...
    assert min(max(c) for c in palette[1:]) >= 150
    # ...and the colours of a 34-class schema are far apart (RGB distance; 255·√3 ≈ 442 is the maximum).
    assert min(math.dist(a, b) for a, b in itertools.combinations(palette[:34], 2)) > 40


@pytest.mark.parametrize("count", [0, MAX_CLASSES + 1])
def test_default_palette_rejects_bad_sizes(count):
    with pytest.raises(ValueError, match="num_colours"):
        default_palette(count)


# -- validation -----------------------------------------------------------------------------------------------------


def test_parse_colour_accepts_tuples_and_hex():
    assert parse_colour((1, 2, 3)) == (1, 2, 3)
    assert parse_colour([255, 0, 16]) == (255, 0, 16)
    assert parse_colour("#ff0010") == (255, 0, 16)


@pytest.mark.parametrize("bad", [(256, 0, 0), (-1, 0, 0), (1, 2), (1.0, 2, 3), "#12345", "red", "#gg0000", None,
                                 (True, 0, 0)])
def test_parse_colour_rejects_bad_formats(bad):
    with pytest.raises(ValueError, match="colour"):
        parse_colour(bad)


@pytest.mark.parametrize("kwargs, message", [
    (dict(class_names=("background",), colours=((0, 0, 0),)), "2..256 classes"),
    (dict(class_names=("a", "b", "a"), colours=((0, 0, 0), (1, 1, 1), (2, 2, 2))), "unique"),
    (dict(class_names=("a", "b"), colours=((0, 0, 0), (0, 0, 0))), "colours must be unique"),
    (dict(class_names=("a", "b"), colours=((0, 0, 0),)), "one colour per class"),
    (dict(class_names=("a", ""), colours=((0, 0, 0), (1, 1, 1))), "non-empty name"),
    (dict(class_names=("a", "b"), colours=((0, 0, 0), (300, 1, 1))), "colour"),
])
def test_schema_validation_explains_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LabelSchema(name="bad", **kwargs)


def test_schema_rejects_too_many_classes_and_bad_version():
    with pytest.raises(ValueError, match="2..256"):
        LabelSchema.from_names("big", [f"c{i}" for i in range(MAX_CLASSES + 1)])
    with pytest.raises(ValueError, match="version"):
        LabelSchema("v", ("a", "b"), ((0, 0, 0), (1, 1, 1)), version=0)
    with pytest.raises(ValueError, match="name"):
        LabelSchema(" ", ("a", "b"), ((0, 0, 0), (1, 1, 1)))


def test_largest_schema_is_allowed():
    schema = LabelSchema.from_names("max", [f"c{i}" for i in range(MAX_CLASSES)])
    assert schema.num_classes == MAX_CLASSES


def test_index_of_unknown_class_raises_key_error():
    with pytest.raises(KeyError, match="mouth"):
        _three_class_schema().index_of("mouth")


# -- serialisation --------------------------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json():
    schema = LabelSchema("toy", ("background", "eye", "nose"), ((0, 0, 0), (255, 0, 0), (0, 0, 255)), version=3)
    restored = LabelSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert restored == schema
    assert isinstance(restored.class_names, tuple) and isinstance(restored.colours[1], tuple)


def test_from_dict_accepts_hex_colours_and_reports_missing_keys():
    schema = LabelSchema.from_dict({"name": "hex", "class_names": ["bg", "fg"], "colours": ["#000000", "#ff8000"]})
    assert schema.colours == ((0, 0, 0), (255, 128, 0)) and schema.version == 1
    with pytest.raises(ValueError, match="missing"):
        LabelSchema.from_dict({"name": "x", "class_names": ["a", "b"]})


# -- masks ↔ colour images ------------------------------------------------------------------------------------------


def test_colourise_maps_labels_to_schema_colours():
    schema = _three_class_schema()
    mask = torch.tensor([[0, 1], [2, 1]])
    image = schema.colourise(mask)
    assert image.dtype == torch.uint8 and image.shape == (2, 2, 3)
    assert image[0, 1].tolist() == [255, 0, 0] and image[1, 0].tolist() == [0, 0, 255]
    assert schema.colourise(mask[None]).shape == (1, 2, 2, 3)


def test_colourise_rejects_out_of_range_and_float_masks():
    schema = _three_class_schema()
    with pytest.raises(ValueError, match="0..2"):
        schema.colourise(torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="integer"):
        schema.colourise(torch.zeros(2, 2))


def test_mask_from_colour_image_inverts_colourise():
    schema = preset("face")
    mask = torch.randint(0, schema.num_classes, (17, 23), generator=torch.Generator().manual_seed(0))
    decoded = schema.mask_from_colour_image(schema.colourise(mask).numpy())
    assert decoded.dtype == torch.int64
    assert torch.equal(decoded, mask)


def test_unknown_colours_raise_with_colour_count_and_position():
    schema = _three_class_schema()
    image = schema.colourise(torch.zeros(4, 5, dtype=torch.long)).clone()
    image[2, 3] = torch.tensor([254, 0, 0], dtype=torch.uint8)  # anti-aliased red
    image[3, 4] = torch.tensor([254, 0, 0], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"2 pixels.*#fe0000 ×2.*y=2, x=3"):
        schema.mask_from_colour_image(image)


def test_mask_from_colour_image_rejects_bad_images():
    schema = _three_class_schema()
    with pytest.raises(ValueError, match="alpha"):
        schema.mask_from_colour_image(np.zeros((2, 2, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        schema.mask_from_colour_image(np.zeros((2, 2, 3), dtype=np.float32))
