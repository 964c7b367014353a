"""Checkpoint files: project format, fp16 ships, fingerprints, NVlabs pickle and rosinality import, hostile files."""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import pickletools
import re
import warnings
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from editor_core.checkpoints import (PROJECT_FORMAT, CheckpointError, PersistentObject, detect_checkpoint_format,
                                     dump_nvlabs_pickle, generator_fingerprint, generator_to_rosinality,
                                     load_discriminator, load_generator, read_checkpoint, read_nvlabs_pickle,
                                     save_checkpoint, save_discriminator, save_generator,
                                     save_rosinality_checkpoint, write_nvlabs_style_pickle)
from editor_core.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

CONFIG = GeneratorConfig(resolution=32, z_dim=64, w_dim=64, channel_base=512, channel_max=64, mapping_layers=2,
                         conv_clamp=256)

# The globals of a real stylegan2-ada-pytorch snapshot pickle, listed with pickletools (docs/checkpoints.md); numpy
# pickles its scalars under numpy._core (numpy 2) or numpy.core (numpy 1).
NVLABS_PICKLE_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"), ("dnnlib.util", "EasyDict"),
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"), (np.float64(1).__reduce__()[0].__module__, "scalar"), ("numpy", "dtype"),
}


@pytest.fixture(scope="module")
def generator() -> Generator:
    """A tiny generator with non-zero noise strengths, biases and w_avg, so that every tensor matters."""
    torch.manual_seed(0)
    G = Generator(CONFIG).eval().requires_grad_(False)
    for name, p in G.named_parameters():
        if name.endswith(("noise_strength", "bias")):
            p.add_(0.2 * torch.randn_like(p))
    G.mapping.w_avg.normal_()
    return G


@pytest.fixture(scope="module")
def ws(generator) -> torch.Tensor:
    return generator.mapping(torch.randn(2, CONFIG.z_dim, generator=torch.Generator().manual_seed(1)))


def assert_same_generator(loaded: Generator, original: Generator, ws: torch.Tensor) -> None:
    assert loaded.config == original.config
    reference = original.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert torch.equal(loaded.synthesis(ws), original.synthesis(ws))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_project_format_round_trip(tmp_path, generator, ws):
    path = save_generator(tmp_path / "g.safetensors", generator, meta={"dataset": "toonface"})
    assert detect_checkpoint_format(path) == "editgan"
    state_dict, config, meta = read_checkpoint(path, expected_kind="generator")
    assert config == CONFIG.to_dict()
    assert meta == {"dataset": "toonface", "fingerprint": generator_fingerprint(generator)}
    assert set(state_dict) == set(generator.state_dict())
    assert_same_generator(load_generator(path), generator, ws)


def test_generic_checkpoint_kinds_and_wrong_kind(tmp_path):
    path = save_checkpoint(tmp_path / "v.safetensors", "edit_vector", {"delta": torch.randn(8, 64),
                                                                       "index": torch.arange(3)},
                           config={"num_ws": 8}, meta={"name": "smile", "scale_range": [0, 2]},
                           dtype=torch.float16)
    tensors, config, meta = read_checkpoint(path, expected_kind="edit_vector")
    assert tensors["delta"].dtype == torch.float16 and tensors["index"].dtype == torch.int64
    assert config == {"num_ws": 8} and meta == {"name": "smile", "scale_range": [0, 2]}
    with pytest.raises(CheckpointError, match="holds a 'edit_vector' checkpoint, expected a 'generator'"):
        read_checkpoint(path, expected_kind="generator")
    with pytest.raises(CheckpointError, match="holds a 'edit_vector' checkpoint"):
        load_generator(path)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "bad.safetensors", "generator", {}, config={"dtype": torch.float16})


def test_fp16_ship_keeps_the_fingerprint_on_every_load(tmp_path, generator, ws):
    fingerprint = generator_fingerprint(generator)
    full = save_generator(tmp_path / "full.safetensors", generator)
    ship = save_generator(tmp_path / "ship.safetensors", generator, dtype=torch.float16)
    assert os.path.getsize(ship) < 0.6 * os.path.getsize(full)
    tensors, _config, _meta = read_checkpoint(ship)
    assert all(t.dtype == torch.float16 for t in tensors.values())

    first, second = load_generator(ship), load_generator(ship)
    assert first.mapping.w_avg.dtype == torch.float32
    assert generator_fingerprint(first) == generator_fingerprint(second) == fingerprint
    reshipped = save_generator(tmp_path / "again.safetensors", first, dtype=torch.float16)
    assert generator_fingerprint(load_generator(reshipped)) == fingerprint
    assert torch.allclose(first.synthesis(ws), generator.synthesis(ws), atol=0.05)


def test_fingerprint_tracks_weights_and_computation_not_execution(generator):
    fingerprint = generator_fingerprint(generator)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert generator_fingerprint(generator) == fingerprint

    changed = Generator(CONFIG).eval()
    changed.load_state_dict(generator.state_dict())
    with torch.no_grad():
        changed.synthesis.b16.conv1.weight[0, 0, 0, 0] += 0.01
    assert generator_fingerprint(changed) != fingerprint

    unclamped = Generator(GeneratorConfig.from_dict({**CONFIG.to_dict(), "conv_clamp": None}))
    unclamped.load_state_dict(generator.state_dict())
    assert generator_fingerprint(unclamped) != fingerprint   # clamping changes what G computes

    mixed_precision = Generator(GeneratorConfig.from_dict({**CONFIG.to_dict(), "num_fp16_res": 2}))
    mixed_precision.load_state_dict(generator.state_dict())
    assert generator_fingerprint(mixed_precision) == fingerprint


def test_modified_project_file_is_detected(tmp_path, generator):
    path = save_checkpoint(tmp_path / "g.safetensors", "generator", generator.state_dict(), CONFIG.to_dict(),
                           meta={"fingerprint": "0123456789abcdef"})
    with pytest.raises(CheckpointError, match="do not match the fingerprint 0123456789abcdef"):
        load_generator(path)


def test_discriminator_round_trip(tmp_path):
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(resolution=32, channel_base=512, channel_max=64))
    loaded = load_discriminator(save_discriminator(tmp_path / "d.safetensors", D))
    img = torch.randn(4, 3, 32, 32)
    assert loaded.config == D.config and torch.equal(loaded(img), D(img))


def test_truncated_garbage_and_foreign_files(tmp_path, generator):
    path = save_generator(tmp_path / "g.safetensors", generator)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    for reader in (read_checkpoint, load_generator):
        with pytest.raises(CheckpointError, match="truncated"):
            reader(truncated)

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"GIF89a" + bytes(range(200)))
    with pytest.raises(CheckpointError, match="supported formats: .*NVlabs.*rosinality"):
        load_generator(garbage)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"not an EditGAN Studio checkpoint.*{PROJECT_FORMAT}"):
        load_generator(foreign)


# --- NVlabs pickles ---------------------------------------------------------------------------------------------


def pickle_globals(path) -> set[tuple[str, str]]:
    """(module, name) of every global a pickle references, read with pickletools (nothing is executed)."""
    found, pushed, memo = set(), [], []
    for opcode, arg, _pos in pickletools.genops(path.read_bytes()):
        if opcode.name == "MEMOIZE":
            memo.append(pushed[-1])
            continue
        if opcode.name in ("BINGET", "LONG_BINGET"):
            pushed.append(memo[arg])
            continue
        if opcode.name == "GLOBAL":
            found.add(tuple(arg.split(" ")))
        elif opcode.name == "STACK_GLOBAL":   # module and name are the two strings pushed just before
            found.add((pushed[-2], pushed[-1]))
        pushed.append(arg if isinstance(arg, str) else None)
    return found


def test_nvlabs_pickle_import(tmp_path, generator, ws):
    path = write_nvlabs_style_pickle(tmp_path / "network-snapshot.pkl", generator)
    assert detect_checkpoint_format(path) == "nvlabs-pickle"
    assert pickle_globals(path) == NVLABS_PICKLE_GLOBALS
    data = read_nvlabs_pickle(path)
    assert isinstance(data["G_ema"], PersistentObject) and data["G_ema"].class_name == "Generator"
    assert data["G_ema"].state["_init_kwargs"]["mapping_kwargs"]["num_layers"] == CONFIG.mapping_layers
    loaded = load_generator(path)
    assert_same_generator(loaded, generator, ws)
    assert generator_fingerprint(loaded) == generator_fingerprint(generator)


def test_nvlabs_pickle_source_is_never_executed(tmp_path, generator):
    sentinel = tmp_path / "source-was-executed"
    hostile_source = f"open({str(sentinel)!r}, 'w').close()\n"
    path = write_nvlabs_style_pickle(tmp_path / "g.pkl", generator, module_src=hostile_source)
    load_generator(path)
    assert read_nvlabs_pickle(path)["G_ema"].module_src == hostile_source
    assert not sentinel.exists()


class _CallsOnLoad:
    """Pickles as a call of ``function(*args)``: what a hostile pickle does to run code when it is loaded."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("make_payload", [
    lambda sentinel: _CallsOnLoad(os.system, f"touch {sentinel}"),
    lambda sentinel: _CallsOnLoad(eval, f"open({str(sentinel)!r}, 'w')"),
    lambda sentinel: {"G_ema": _CallsOnLoad(os.system, f"touch {sentinel}")},
])
def test_malicious_pickle_is_refused_before_anything_runs(tmp_path, make_payload):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(make_payload(sentinel), protocol=4))
    with pytest.raises(CheckpointError, match="refusing to load it"):
        load_generator(path)
    assert not sentinel.exists()


def test_nvlabs_pickle_errors(tmp_path, generator):
    path = write_nvlabs_style_pickle(tmp_path / "g.pkl", generator)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="not a complete NVlabs network pickle"):
        load_generator(truncated)

    conditional = read_nvlabs_pickle(path)
    conditional["G_ema"].state["c_dim"] = 10
    with pytest.raises(CheckpointError, match="conditional generators"):
        load_generator(dump_nvlabs_pickle(tmp_path / "conditional.pkl", conditional))

    stylegan3 = read_nvlabs_pickle(path)   # StyleGAN3 synthesis: 'input' + 'L0_36_512'... layers, no 'b4' block
    synthesis = stylegan3["G_ema"].child("synthesis")
    layers = list(synthesis.state["_modules"].values())
    synthesis.state["_modules"] = collections.OrderedDict([("input", layers[0]), ("L0_36_64", layers[1])])
    with pytest.raises(CheckpointError, match="StyleGAN3 generators are not supported"):
        load_generator(dump_nvlabs_pickle(tmp_path / "sg3.pkl", stylegan3))

    tensorflow = tmp_path / "tf.pkl"   # legacy TF pickles reference dnnlib.tflib classes
    tensorflow.write_bytes(pickle.PROTO + b"\x02" + pickle.GLOBAL + b"dnnlib.tflib.network\nNetwork\n" + pickle.STOP)
    with pytest.raises(CheckpointError, match="TensorFlow StyleGAN2 pickle"):
        load_generator(tensorflow)


# --- rosinality checkpoints --------------------------------------------------------------------------------------


def test_rosinality_layout(generator):
    g_ema = generator_to_rosinality(generator)
    c4 = CONFIG.channels_at(4)
    assert g_ema["style.1.weight"].shape == (64, 64) and "style.0.weight" not in g_ema
    assert g_ema["input.input"].shape == (1, c4, 4, 4)
    assert g_ema["conv1.conv.weight"].shape == (1, c4, c4, 3, 3)
    assert g_ema["conv1.noise.weight"].shape == (1,)
    assert g_ema["to_rgb1.bias"].shape == (1, 3, 1, 1)
    assert g_ema["convs.0.conv.blur.kernel"].shape == (4, 4) and "convs.1.conv.blur.kernel" not in g_ema
    assert g_ema["to_rgbs.2.upsample.kernel"].sum() == pytest.approx(4.0)
    assert [g_ema[f"noises.noise_{i}"].shape[-1] for i in range(7)] == [4, 8, 8, 16, 16, 32, 32]
    with pytest.raises(ValueError, match="one style_dim"):
        generator_to_rosinality(Generator(GeneratorConfig.from_dict({**CONFIG.to_dict(), "z_dim": 32})))


def test_rosinality_import(tmp_path, generator, ws):
    path = save_rosinality_checkpoint(tmp_path / "550000.pt", generator)
    assert detect_checkpoint_format(path) == "rosinality"
    loaded = load_generator(path)
    assert loaded.config == GeneratorConfig.from_dict({**CONFIG.to_dict(), "conv_clamp": None})
    reference = generator.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    # rosinality has no conv clamp; with these weights no activation reaches ±256, so the images agree.
    assert torch.allclose(loaded.synthesis(ws), generator.synthesis(ws), atol=1e-6)


def test_rosinality_train_checkpoint_without_latent_avg(tmp_path, generator):
    """train.py saves g_ema next to its argparse options and no latent_avg: w_avg is then estimated."""
    path = tmp_path / "train.pt"
    torch.save({"g_ema": generator_to_rosinality(generator), "ada_aug_p": 0.1,
                "args": argparse.Namespace(size=32, latent=64, n_mlp=2, channel_multiplier=2)}, path)
    loaded = load_generator(path)
    w = generator.mapping(torch.randn(4096, CONFIG.z_dim))[:, 0]
    assert torch.allclose(loaded.mapping.w_avg, w.mean(0), atol=0.15 * w.std(0).max().item())
    assert generator_fingerprint(load_generator(path)) == generator_fingerprint(loaded)


def test_rosinality_hostile_or_foreign_torch_files(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "hook": _CallsOnLoad(os.system, f"touch {sentinel}")}, evil)
    with pytest.raises(CheckpointError, match="weights only"):
        load_generator(evil)
    assert not sentinel.exists()

    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, plain)
    with pytest.raises(CheckpointError, match="without a rosinality 'g_ema'"):
        load_generator(plain)


# --- hostile files: every one ends in CheckpointError before anything large is allocated -------------------------

SENTINEL = "hostile-value-goes-here"


def one_float_storage() -> torch.TypedStorage:
    with warnings.catch_warnings():   # TypedStorage is deprecated, but it is what NVlabs pickles hold
        warnings.simplefilter("ignore", UserWarning)
        return torch.ones(1).storage()


class _TensorView:
    """Pickles as torch's tensor rebuild with any storage layout (which torch itself never writes)."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (*self.args, False, collections.OrderedDict())


class _StorageRecord:
    """Pickles as torch's nested legacy torch.save() of a storage, with the given bytes."""

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.data,)


def nvlabs_pickle_with(tmp_path, generator, edit, name="hostile.pkl"):
    """An NVlabs-style pickle of ``generator`` after ``edit(G_ema)`` changed its data."""
    data = read_nvlabs_pickle(write_nvlabs_style_pickle(tmp_path / "g.pkl", generator))
    edit(data["G_ema"])
    return dump_nvlabs_pickle(tmp_path / name, data)


def spliced(path, opcodes: bytes):
    """``path`` with the pickled string SENTINEL replaced by ``opcodes``: a value built opcode by opcode, because
    pickling a 10⁵-deep object would recurse (the unpickler does not: it is a stack machine). The protocol-4 frames
    (optional read-ahead hints whose lengths the splice would break) are dropped first."""
    sentinel = pickle.SHORT_BINUNICODE + bytes([len(SENTINEL)]) + SENTINEL.encode()
    data = path.read_bytes()
    for opcode, _arg, position in reversed(list(pickletools.genops(data))):
        if opcode.name == "FRAME":
            data = data[:position] + data[position + 9:]
    assert data.count(sentinel) == 1
    path.write_bytes(data.replace(sentinel, opcodes))
    return path


def short_str(text: str) -> bytes:
    return pickle.SHORT_BINUNICODE + bytes([len(text)]) + text.encode()


def deep_list(depth: int) -> bytes:
    """[[[...]]] ``depth`` lists deep."""
    return pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1)


def persistent_module_chain(depth: int) -> bytes:
    """``depth`` NVlabs persistent objects, each the only sub-module ('m') of the one before."""
    reconstruct = pickle.GLOBAL + b"torch_utils.persistence\n_reconstruct_persistent_obj\n"
    open_level = (reconstruct + pickle.EMPTY_DICT + pickle.MARK + short_str("state") + pickle.EMPTY_DICT + pickle.MARK
                  + short_str("_modules") + pickle.EMPTY_DICT + pickle.MARK + short_str("m"))
    close_level = pickle.SETITEMS * 3 + pickle.TUPLE1 + pickle.REDUCE
    innermost = (reconstruct + pickle.EMPTY_DICT + pickle.MARK + short_str("state") + pickle.EMPTY_DICT
                 + pickle.SETITEMS + pickle.TUPLE1 + pickle.REDUCE)
    return open_level * (depth - 1) + innermost + close_level * (depth - 1)


def set_w_avg(value):
    return lambda G_ema: G_ema.child("mapping").state["_buffers"].__setitem__("w_avg", value)


@pytest.mark.parametrize("offset, size, stride, message", [
    (0, (64,), (1,), r"size \[64\], stride \[1\], offset 0\) reaches element 63 of a storage of 1 elements"),
    (0, (2 ** 40,), (1,), r"reaches element 1099511627775 of a storage of 1 elements"),
    (5, (1,), (1,), r"offset 5\) reaches element 5 of a storage of 1"),
    (0, (64,), (-1,), "size, stride and offset must be non-negative integers"),
], ids=["64 floats over 1", "4 TiB over 1", "offset past the end", "negative stride"])
def test_nvlabs_tensor_outside_its_storage_is_refused(tmp_path, generator, offset, size, stride, message):
    """torch's set_() would grow the storage: w_avg would load silently with uninitialised memory (or allocate)."""
    path = nvlabs_pickle_with(tmp_path, generator, set_w_avg(_TensorView(one_float_storage(), offset, size, stride)))
    with pytest.raises(CheckpointError, match=message):
        load_generator(path)


def test_nvlabs_storage_declaring_more_bytes_than_it_holds(tmp_path, generator):
    record = one_float_storage().__reduce__()[1][0]   # a legacy torch.save() of 1 float: its element count is K\x01
    huge = pickle.LONG1 + bytes([6]) + (2 ** 40).to_bytes(6, "little")
    assert record.count(b"cpu") == 1
    head, tail = record.split(b"cpu")
    hostile = head + b"cpu" + re.sub(rb"^(q.)K\x01N", lambda m: m.group(1) + huge + b"N", tail, count=1)
    assert hostile != record
    path = nvlabs_pickle_with(tmp_path, generator,
                              set_w_avg(_TensorView(_StorageRecord(hostile), 0, (1,), (1,))))
    with pytest.raises(CheckpointError, match="declares 4398046511104 bytes of tensor data but holds only"):
        load_generator(path)


def test_rosinality_legacy_file_declaring_more_bytes_than_it_holds(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"g_ema": {"style.1.weight": torch.ones(1)}}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    huge = pickle.LONG1 + bytes([6]) + (2 ** 40).to_bytes(6, "little")
    hostile = re.sub(rb"(cpuq.)K\x01N", lambda m: m.group(1) + huge + b"N", data, count=1)
    assert hostile != data
    path.write_bytes(hostile)
    with pytest.raises(CheckpointError, match="declares 4398046511104 bytes of tensor data but holds only"):
        load_generator(path)


def set_attribute(module: str, name: str, value):
    def edit(G_ema):
        (G_ema.child(module) if module else G_ema).state[name] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (set_attribute("mapping", "num_layers", 10 ** 6), "mapping_layers=1000000, but the file stores 2 mapping layers"),
    (set_attribute("", "z_dim", 2 ** 31), r"mapping.fc0.weight has shape \[64, 64\] in the file, but a Generator "
                                          r"built from the file's config needs \[64, 2147483648\]"),
], ids=["num_layers", "z_dim"])
def test_nvlabs_config_values_are_checked_against_the_tensors(tmp_path, generator, edit, message):
    with pytest.raises(CheckpointError, match=message):
        load_generator(nvlabs_pickle_with(tmp_path, generator, edit))


@pytest.mark.parametrize("changes, message", [
    ({"mapping_layers": 10 ** 6}, "mapping_layers=1000000, but the file stores 2 mapping layers"),
    ({"z_dim": 2 ** 31}, r"mapping.fc0.weight has shape \[64, 64\] in the file, but a Generator built from the "
                         r"file's config needs \[64, 2147483648\]"),
    ({"z_dim": 2 ** 40, "w_dim": 2 ** 40}, "describes a Generator that cannot be built"),
    ({"mapping_lr_multiplier": float("inf")}, "mapping_lr_multiplier is inf"),
], ids=["mapping_layers", "z_dim", "overflowing sizes", "infinite lr multiplier"])
def test_project_config_values_are_checked_against_the_tensors(tmp_path, generator, changes, message):
    path = save_checkpoint(tmp_path / "g.safetensors", "generator", generator.state_dict(),
                           {**CONFIG.to_dict(), **changes})
    with pytest.raises(CheckpointError, match=message):
        load_generator(path)


def test_project_discriminator_config_is_checked_against_the_tensors(tmp_path):
    D = Discriminator(DiscriminatorConfig(resolution=32, channel_base=512, channel_max=64))
    path = save_checkpoint(tmp_path / "d.safetensors", "discriminator", D.state_dict(),
                           {**D.config.to_dict(), "channel_max": 2 ** 16, "channel_base": 2 ** 22})
    with pytest.raises(CheckpointError, match="has shape .* in the file, but a Discriminator built from"):
        load_discriminator(path)


@pytest.mark.parametrize("edit, value, message", [
    (lambda G_ema, value: G_ema.child("synthesis").child("b4").state.__setitem__("architecture", value),
     deep_list(10 ** 5), "nested more than 100 levels deep"),
    (lambda G_ema, value: G_ema.child("synthesis").state["_modules"].__setitem__("deep", value),
     persistent_module_chain(10 ** 5), "nested more than 100 levels deep"),
], ids=["attribute", "sub-modules"])
def test_nvlabs_deeply_nested_pickles_are_refused(tmp_path, generator, edit, value, message):
    path = spliced(nvlabs_pickle_with(tmp_path, generator, lambda G_ema: edit(G_ema, SENTINEL)), value)
    with pytest.raises(CheckpointError, match=message):
        load_generator(path)


def test_nvlabs_pickle_referring_to_itself_is_refused(tmp_path, generator):
    loop = []
    loop.append(loop)
    path = nvlabs_pickle_with(tmp_path, generator, set_attribute("synthesis", "loop", loop))
    with pytest.raises(CheckpointError, match="refers to itself"):
        load_generator(path)


def test_project_file_with_deeply_nested_config_is_refused(tmp_path, generator):
    path = tmp_path / "deep.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in generator.state_dict().items()}, str(path),
              metadata={"format": PROJECT_FORMAT, "kind": "generator", "config": "[" * 10 ** 5 + "]" * 10 ** 5,
                        "meta": "{}"})
    with pytest.raises(CheckpointError, match="config/meta JSON in its header is nested too deeply"):
        load_generator(path)


def test_rosinality_values_that_are_not_tensors_are_refused(tmp_path, generator):
    path = tmp_path / "not-tensors.pt"
    torch.save({"g_ema": {**generator_to_rosinality(generator), "style.1.weight": [[1.0, 2.0]]}}, path)
    with pytest.raises(CheckpointError, match=r"hold only tensors; these are not: \['style.1.weight'\]"):
        load_generator(path)


def test_rosinality_zip_whose_entries_inflate_beyond_the_file_is_refused(tmp_path, generator):
    """torch inflates compressed zip entries (torch.save never writes them): 16 MiB of padding from 16 KiB here."""
    saved = tmp_path / "saved.pt"
    torch.save({"g_ema": {**generator_to_rosinality(generator), "padding": torch.zeros(2 ** 22)}}, saved)
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(saved) as original, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as deflated:
        for entry in original.infolist():
            deflated.writestr(entry.filename, original.read(entry.filename))
    assert os.path.getsize(path) < 2 ** 22
    with pytest.raises(CheckpointError, match=r"its zip entries unpack to \d+ bytes, more than the \d+ bytes"):
        load_generator(path)


def test_nvlabs_sub_module_shared_under_many_names_is_refused(tmp_path, generator):
    """30 levels of one object under two names: a small pickle whose module tree lists 2³⁰ tensors."""
    shared = PersistentObject(dict(class_name="Leaf", state={"_parameters": {"weight": torch.zeros(1)}}))
    for _ in range(30):
        shared = PersistentObject(dict(class_name="Twice", state={"_modules": {"a": shared, "b": shared}}))
    path = nvlabs_pickle_with(tmp_path, generator, lambda G_ema: G_ema.child("synthesis").state["_modules"]
                              .__setitem__("shared", shared))
    with pytest.raises(CheckpointError, match=r"NVlabs Leaf 'synthesis\.shared(\.a){29}\.b' is a sub-module twice"):
        load_generator(path)
