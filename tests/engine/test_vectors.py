"""Edit vectors: metadata, the project file format, the generator-id check, composition."""
from __future__ import annotations

import pytest
import torch

from editor_core.checkpoints import CheckpointError
from editor_core.vectors import EditVector, EditVectorInfo, VectorGeneratorMismatch, combined_delta


def make_vector(name="smile", generator_id="a" * 16, seed=0, classes=(3, 1, 3)) -> EditVector:
    delta = torch.randn(6, 8, generator=torch.Generator().manual_seed(seed))
    return EditVector(delta, EditVectorInfo(name=name, generator_id=generator_id, edited_classes=list(classes),
                                            source={"kind": "sample", "seed": 4}, author="ann"))


def test_save_and_load_round_trip(tmp_path):
    vector = make_vector()
    path = vector.save(tmp_path / "smile.safetensors")
    loaded = EditVector.load(path)
    assert torch.equal(loaded.delta, vector.delta)
    assert loaded.info == vector.info
    assert loaded.info.edited_classes == [1, 3]
    assert loaded.info.scale_range == (-4.0, 4.0)


def test_fp16_storage_keeps_values_to_half_precision(tmp_path):
    vector = make_vector()
    loaded = EditVector.load(vector.save(tmp_path / "v.safetensors", dtype=torch.float16))
    assert loaded.delta.dtype == torch.float32
    torch.testing.assert_close(loaded.delta, vector.delta, atol=2e-3, rtol=1e-3)


def test_loading_a_file_of_another_kind_is_refused(tmp_path):
    from editor_core.checkpoints import save_checkpoint

    save_checkpoint(tmp_path / "g.safetensors", "generator", {"w": torch.zeros(2)}, config={}, meta={})
    with pytest.raises(CheckpointError):
        EditVector.load(tmp_path / "g.safetensors")


def test_combined_delta_is_the_weighted_sum_for_one_image_and_a_batch():
    v1, v2 = make_vector(seed=1), make_vector(seed=2, name="eyes")
    single = combined_delta([v1, v2], [2.0, -1.0], "a" * 16)
    torch.testing.assert_close(single, 2 * v1.delta - v2.delta)
    batch = combined_delta([v1, v2], torch.tensor([[2.0, -1.0], [0.0, 0.5]]), "a" * 16)
    assert batch.shape == (2, 6, 8)
    torch.testing.assert_close(batch[1], 0.5 * v2.delta)


def test_generator_id_is_checked():
    with pytest.raises(VectorGeneratorMismatch, match="learned on generator aaaa"):
        combined_delta([make_vector()], [1.0], "b" * 16)


def test_bad_vectors_are_refused():
    with pytest.raises(ValueError, match="name"):
        EditVectorInfo(name=" ", generator_id="x", edited_classes=[1])
    with pytest.raises(ValueError, match="low < high"):
        EditVectorInfo(name="v", generator_id="x", edited_classes=[1], scale_range=(2, -2))
    with pytest.raises(ValueError, match="num_ws, w_dim"):
        EditVector(torch.zeros(3), EditVectorInfo(name="v", generator_id="x", edited_classes=[]))
    with pytest.raises(ValueError, match="NaN"):
        EditVector(torch.full((2, 2), float("inf")), EditVectorInfo(name="v", generator_id="x", edited_classes=[]))
    with pytest.raises(ValueError, match="no edit vectors"):
        combined_delta([], [], "x")
    with pytest.raises(ValueError, match="different shapes"):
        v = make_vector()
        combined_delta([v, EditVector(torch.zeros(2, 2), v.info)], [1.0, 1.0], v.info.generator_id)


def test_scale_rows_stacks_requests_over_the_union_of_their_vectors():
    from editor_core.vectors import scale_rows

    smile, hair = make_vector("smile", seed=1), make_vector("hair", seed=2)
    vectors, scales = scale_rows([[(1, smile, 0.5), (2, hair, 1.0)], [(2, hair, -1.0), (2, hair, 0.25)]])
    assert [v is w for v, w in zip(vectors, [smile, hair])] == [True, True]
    torch.testing.assert_close(scales, torch.tensor([[0.5, 1.0], [0.0, -0.75]]))  # repeated vectors add up


def test_an_edit_vector_as_bytes_is_its_file(tmp_path):
    vector = make_vector()
    path = tmp_path / "v.safetensors"
    path.write_bytes(vector.to_bytes())
    loaded = EditVector.load(path)
    assert torch.equal(loaded.delta, vector.delta) and loaded.info == vector.info
