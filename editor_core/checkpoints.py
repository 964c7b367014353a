"""Checkpoint files: the project format, StyleGAN2 generator import, generator fingerprints.

Project format (``editgan-studio/1``): ONE ``.safetensors`` file. The tensors are the module's ``state_dict``; the
header metadata (string → string) holds

* ``format`` = ``"editgan-studio/1"``
* ``kind``: what the file holds (``"generator"``, ``"discriminator"``, ``"segmentation"``, ``"encoder"``,
  ``"edit_vector"``, ...)
* ``config``: JSON of the constructor config (e.g. :meth:`GeneratorConfig.to_dict`)
* ``meta``: JSON of free-form facts (training run, dataset, ...); generators add ``fingerprint``.

:func:`load_generator` also imports, by content (not by file name):

* NVlabs ``stylegan2-ada-pytorch`` / ``stylegan3`` network pickles (``G_ema`` must be a StyleGAN2 generator), read
  by a restricted unpickler that rebuilds NVlabs' ``torch_utils.persistence`` objects as plain data. The module source
  those pickles carry is never executed and no global outside a short allow-list is resolved, so a hostile pickle
  fails with :class:`CheckpointError` before any of its code can run.
* rosinality ``stylegan2-pytorch`` checkpoints (``torch.save({'g_ema': ...})``), read with ``weights_only=True`` and
  converted to the NVlabs layout.

``generator_fingerprint(G)`` is the generator id that edit vectors and caches are keyed by (rule in its docstring).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import math
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from editor_core.networks import (LRELU_GAIN, Discriminator, DiscriminatorConfig, FullyConnectedLayer, Generator,
                                  GeneratorConfig, MappingNetwork, SynthesisBlock, SynthesisLayer, SynthesisNetwork,
                                  ToRGBLayer, make_resample_filter)

PROJECT_FORMAT = "editgan-studio/1"
GENERATOR_KIND = "generator"
DISCRIMINATOR_KIND = "discriminator"
SUPPORTED_GENERATOR_FORMATS = (
    f"EditGAN Studio .safetensors ({PROJECT_FORMAT}, kind 'generator')",
    "NVlabs stylegan2-ada-pytorch / stylegan3 network pickle (.pkl) whose G_ema is a StyleGAN2 generator",
    "rosinality stylegan2-pytorch checkpoint (.pt) with a 'g_ema' state dict",
)
# Config fields that choose how a generator is executed, not what it computes; they do not enter the fingerprint.
EXECUTION_ONLY_FIELDS = ("num_fp16_res", "fp16_dtype")
FINGERPRINT_DTYPE = torch.float16

_TORCH_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-1.6, non-zip) files start with a protocol-2 pickle of this magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unknown format, wrong kind, truncated, unsafe or unsupported network."""


# --------------------------------------------------------------------------------------------------------------------
# Project format


def save_checkpoint(path: str | Path, kind: str, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                    meta: Optional[dict[str, Any]] = None, dtype: Optional[torch.dtype] = None) -> Path:
    """Write ``state_dict`` as one project-format ``.safetensors`` file (atomically: readers never see half a file).

    ``config`` and ``meta`` must be JSON-serialisable. ``dtype`` (e.g. ``torch.float16`` for shipping) converts the
    floating-point tensors; integer tensors keep their dtype.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string such as {GENERATOR_KIND!r}, got {kind!r}")
    try:
        header = {"format": PROJECT_FORMAT, "kind": kind, "config": json.dumps(config),
                  "meta": json.dumps(meta if meta is not None else {})}
    except TypeError as err:
        raise ValueError(f"config and meta of a {kind} checkpoint must be JSON-serialisable: {err}") from err
    tensors = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"state_dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata=header)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return path


def read_checkpoint(path: str | Path, expected_kind: Optional[str] = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read a project-format file → ``(state_dict, config, meta)``; tensors on CPU in their stored dtype.

    Raises :class:`CheckpointError` for a file that is not a complete ``.safetensors`` file, not in the project format,
    or (with ``expected_kind``) of another kind.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            header = file.metadata() or {}
            if header.get("format") != PROJECT_FORMAT:
                raise CheckpointError(f"{path} is a .safetensors file but not an EditGAN Studio checkpoint "
                                      f"(its header has no format={PROJECT_FORMAT!r})")
            kind = header.get("kind")
            if expected_kind is not None and kind != expected_kind:
                raise CheckpointError(f"{path} holds a {kind!r} checkpoint, expected a {expected_kind!r} one")
            state_dict = {name: file.get_tensor(name) for name in file.keys()}
    except SafetensorError as err:
        raise CheckpointError(f"{path} is not a readable .safetensors file (truncated, corrupt or another "
                              f"format): {err}") from err
    try:
        config, meta = json.loads(header.get("config", "{}")), json.loads(header.get("meta", "{}"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: the config/meta JSON in its header is corrupt: {err}") from err
    except RecursionError:
        raise CheckpointError(f"{path}: the config/meta JSON in its header is nested too deeply") from None
    return state_dict, config, meta


def save_generator(path: str | Path, G: Generator, meta: Optional[dict[str, Any]] = None,
                   dtype: Optional[torch.dtype] = None) -> Path:
    """Save ``G`` in the project format (kind ``generator``); ``meta['fingerprint']`` records its id."""
    meta = {**(meta or {}), "fingerprint": generator_fingerprint(G)}
    return save_checkpoint(path, GENERATOR_KIND, G.state_dict(), G.config.to_dict(), meta, dtype=dtype)


def save_discriminator(path: str | Path, D: Discriminator, meta: Optional[dict[str, Any]] = None,
                       dtype: Optional[torch.dtype] = None) -> Path:
    """Save ``D`` in the project format (kind ``discriminator``)."""
    return save_checkpoint(path, DISCRIMINATOR_KIND, D.state_dict(), D.config.to_dict(), meta, dtype=dtype)


def load_discriminator(path: str | Path, device: str | torch.device = "cpu") -> Discriminator:
    """Load a project-format discriminator (float32, in train mode as a trainer expects)."""
    return _guarded(_load_project_discriminator, Path(path)).to(device)


def _load_project_discriminator(path: Path) -> Discriminator:
    state_dict, config, _meta = read_checkpoint(path, expected_kind=DISCRIMINATOR_KIND)
    return _build_checked(Discriminator, _parse_config(DiscriminatorConfig, config, path), state_dict, str(path))


def generator_fingerprint(G: Generator) -> str:
    """Stable 16-hex-digit id of what ``G`` computes.

    Rule: sha256 over the JSON of ``G.config`` without the execution-only fields (``num_fp16_res``, ``fp16_dtype``),
    then, for every ``state_dict`` entry in name order, its name, shape and values rounded to float16 (little-endian
    bytes); the first 16 hex digits. Rounding to float16 first makes the id independent of how the weights are
    stored: a generator, its float16 ship (``save_generator(..., dtype=torch.float16)``) and every reload of either
    have the same id, because rounding to float16 is idempotent. Weights that differ only below float16 precision
    share an id; a bfloat16 ship rounds more coarsely and gets its own id.
    """
    config = {k: v for k, v in G.config.to_dict().items() if k not in EXECUTION_ONLY_FIELDS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(G.state_dict().items()):
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(FINGERPRINT_DTYPE)
        values = tensor.contiguous().numpy()
        digest.update(f"{name}:{tuple(tensor.shape)}:".encode())
        digest.update(values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------------
# Generator import


def detect_checkpoint_format(path: str | Path) -> str:
    """``'editgan'``, ``'nvlabs-pickle'`` or ``'rosinality'`` from the first bytes of the file."""
    with open(path, "rb") as file:
        head = file.read(16)
    if head.startswith(_TORCH_ZIP_MAGIC) or head.startswith(_TORCH_LEGACY_MAGIC):
        return "rosinality"
    if head[:1] == b"\x80":   # PROTO opcode: a binary pickle, as NVlabs writes with pickle.dump
        return "nvlabs-pickle"
    if len(head) >= 9 and head[8:9] == b"{":   # safetensors: u64 header length, then the JSON header
        return "editgan"
    raise CheckpointError(f"{path} is not a generator checkpoint this project reads; supported formats: "
                          + "; ".join(SUPPORTED_GENERATOR_FORMATS))


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a generator from any supported format (detected from the content) → float32 ``Generator`` on
    ``device`` in eval mode with ``requires_grad=False`` (edits optimise latents, not weights; a trainer calls
    ``.train().requires_grad_(True)``)."""
    loaders: dict[str, Callable[[Path], Generator]] = {
        "editgan": _load_project_generator, "nvlabs-pickle": _load_nvlabs_generator,
        "rosinality": _load_rosinality_generator}
    G = _guarded(loaders[detect_checkpoint_format(path)], Path(path))
    return G.to(device).eval().requires_grad_(False)


def _guarded(load: Callable[[Path], torch.nn.Module], path: Path) -> torch.nn.Module:
    """``load(path)``, with every way a damaged or hostile file can make it fail ending in :class:`CheckpointError`
    (the loaders check what they know to check; this catches what slips through, e.g. a value of the wrong type)."""
    try:
        return load(path)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{path} could not be read: its content is nested too deeply") from None
    except MemoryError:
        raise CheckpointError(f"{path} could not be read: it asks for more memory than there is") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RuntimeError) as err:
        raise CheckpointError(f"{path} could not be read as a checkpoint ({type(err).__name__}: {err})") from err


def _load_project_generator(path: Path) -> Generator:
    state_dict, config, meta = read_checkpoint(path, expected_kind=GENERATOR_KIND)
    G = _build_generator(_parse_config(GeneratorConfig, config, path), state_dict, str(path))
    stored = meta.get("fingerprint")
    if stored is not None and stored != generator_fingerprint(G):
        raise CheckpointError(f"{path}: the weights do not match the fingerprint {stored} recorded when the file "
                              f"was saved; the file was modified or damaged")
    return G


def _parse_config(cls, config: dict[str, Any], where: str | Path):
    try:
        parsed = cls.from_dict(config)
    except (TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{where}: unsupported {cls.__name__}: {err}") from err
    for name, value in parsed.to_dict().items():
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{where}: unsupported {cls.__name__}: {name} is {value}")
    return parsed


def _load_state_dict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{where}: the weights do not fit a {type(module).__name__} built from the file's "
                              f"config: {err}") from err


def _channel_layout(channels: dict[int, int], where: str) -> tuple[int, int]:
    """``(channel_base, channel_max)`` that reproduce ``channels[res] = min(channel_base // res, channel_max)``."""
    channel_max = channels[4]
    narrower = [res for res in sorted(channels) if channels[res] < channel_max]
    channel_base = channels[narrower[0]] * narrower[0] if narrower else channel_max * max(channels)
    if any(min(channel_base // res, channel_max) != count for res, count in channels.items()):
        raise CheckpointError(f"{where}: channel counts per resolution {channels} do not follow "
                              f"min(channel_base // res, channel_max), which GeneratorConfig requires")
    return channel_base, channel_max


def _build_generator(config: GeneratorConfig, state_dict: dict[str, torch.Tensor], where: str) -> Generator:
    """The generator ``config`` describes, with ``state_dict`` loaded; refused unless the file's tensors are exactly
    the ones ``config`` asks for (see :func:`_build_checked`)."""
    # The module count is the one config value a meta-device build pays for: check it against the file first.
    stored_layers = sum(bool(re.fullmatch(r"mapping\.fc\d+\.weight", name)) for name in state_dict)
    if config.mapping_layers != stored_layers:
        raise CheckpointError(f"{where}: the config asks for mapping_layers={config.mapping_layers}, but the file "
                              f"stores {stored_layers} mapping layers")
    return _build_checked(Generator, config, state_dict, where)


def _build_checked(cls: type[torch.nn.Module], config: Any, state_dict: dict[str, Any], where: str):
    """``cls(config)`` with ``state_dict`` loaded strictly, allocated only once the file is known good.

    Every config value that sizes a tensor (``z_dim``, ``w_dim``, channels, ...) comes from the file, so ``cls`` is
    first built on the meta device (shapes, no memory) and every stored tensor must have the name and shape that
    build asks for: a config value that disagrees with the stored tensors is refused before anything is allocated.
    """
    try:
        with torch.device("meta"):
            expected = cls(config).state_dict()
    except (RuntimeError, ValueError, OverflowError) as err:   # e.g. sizes whose byte count overflows
        raise CheckpointError(f"{where}: its config describes a {cls.__name__} that cannot be built "
                              f"({type(err).__name__}: {err})") from err
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: the weights do not fit a {cls.__name__} built from the file's config "
                              f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})")
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{where}: {name} is a {type(tensor).__name__}, not a tensor")
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{where}: {name} has shape {list(tensor.shape)} in the file, but a {cls.__name__} "
                                  f"built from the file's config needs {list(expected[name].shape)}")
    module = cls(config)
    _load_state_dict(module, state_dict, where)
    return module


# --------------------------------------------------------------------------------------------------------------------
# NVlabs network pickles


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict subclass) in NVlabs pickles."""

    def __reduce__(self):
        return _PickleGlobal("dnnlib.util", "EasyDict"), (), None, None, iter(self.items())


class _PickleGlobal:
    """A module-level name referenced in a pickle we write, although the module is not importable here."""

    def __init__(self, module: str, name: str):
        self.module = module
        self.name = name

    def __call__(self, *args):   # pickle requires reduce functions to be callable; this one only names a function
        raise TypeError(f"{self.module}.{self.name} is only a name in a pickle")


class PersistentObject:
    """An NVlabs ``torch_utils.persistence`` object kept as data: ``class_name`` and its pickled ``state`` (the
    module's ``__dict__``: ``_parameters``, ``_buffers``, ``_modules``, attributes, ``_init_kwargs``).

    NVlabs pickles rebuild such objects by executing the module source stored next to them; here that source is
    only kept as ``module_src`` text and never executed.
    """

    PERSISTENCE_VERSION = 6

    def __init__(self, meta: dict[str, Any]):
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise CheckpointError("malformed NVlabs persistent object in pickle")
        self.class_name = meta.get("class_name")
        self.module_src = meta.get("module_src")
        self.state = meta["state"]

    def __reduce__(self):
        meta = dict(type="class", version=self.PERSISTENCE_VERSION, module_src=self.module_src,
                    class_name=self.class_name, state=self.state)
        return _PickleGlobal("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,)

    def child(self, name: str) -> "PersistentObject":
        child = self.state.get("_modules", {}).get(name)
        if not isinstance(child, PersistentObject):
            raise CheckpointError(f"NVlabs {self.class_name} has no persistent sub-module {name!r}")
        return child

    def state_dict(self, prefix: str = "", _visited: Optional[set[int]] = None) -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers of this object and its sub-modules, with ``module.state_dict()`` names.

        A sub-module reached twice is refused: a pickle can share one object under many names, and 30 levels of
        two names each would list 2³⁰ tensors."""
        visited = set() if _visited is None else _visited
        if id(self) in visited:
            raise CheckpointError(f"NVlabs {self.class_name} {prefix.rstrip('.')!r} is a sub-module twice over")
        visited.add(id(self))
        tensors = {}
        non_persistent = self.state.get("_non_persistent_buffers_set", set())
        for group in ("_parameters", "_buffers"):
            for name, tensor in self.state.get(group, {}).items():
                if tensor is not None and name not in non_persistent:
                    tensors[prefix + name] = tensor
        for name in self.state.get("_modules", {}):
            tensors.update(self.child(name).state_dict(prefix + name + ".", visited))
        return tensors


def _load_storage_from_bytes(data: bytes) -> torch.TypedStorage:
    # torch pickles a storage as a nested legacy torch.save() of it; torch's own weights-only unpickler reads that,
    # once the size it declares is known to be there (torch allocates the declared size before reading the bytes).
    if not isinstance(data, bytes):
        raise CheckpointError("malformed tensor storage in pickle")
    _check_legacy_storage_sizes(io.BytesIO(data), len(data), "a tensor storage in the pickle")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.TypedStorage):
        raise CheckpointError("malformed tensor storage in pickle")
    return storage


_LEGACY_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool}


class _Inert:
    """What a pickle builds while :class:`_StorageDeclarations` reads it: takes every pickle operation, keeps nothing,
    so no code and no allocation the file asks for happens."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _StorageDeclarations(pickle.Unpickler):
    """Reads the pickles of a legacy (non-zip) ``torch.save`` file and records the byte size each storage declares."""

    def __init__(self, file):
        super().__init__(file)
        self.storage_bytes: dict[Any, int] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _LEGACY_STORAGE_DTYPES:
            return _LEGACY_STORAGE_DTYPES[name]
        return _Inert

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count[, view metadata]), as torch.save writes it
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            dtype, key, numel = pid[1], pid[2], pid[4]
            if not (isinstance(dtype, torch.dtype) and type(numel) is int and numel >= 0):
                raise CheckpointError("malformed tensor storage declaration")
            self.storage_bytes[key] = numel * torch._utils._element_size(dtype)
        return _Inert()


def _check_legacy_storage_sizes(file, available: int, what: str) -> None:
    """Refuse a legacy ``torch.save`` stream whose storages declare more bytes than the ``available`` ones."""
    reader = _StorageDeclarations(file)
    try:
        for _ in range(4):   # magic number, protocol version, system info, then the object with its storages
            reader.load()
    except CheckpointError:
        raise
    except Exception as err:   # truncated or not a torch.save stream: EOFError, UnpicklingError, ...
        raise CheckpointError(f"{what} is not a complete torch.save() stream ({type(err).__name__}: {err})") from err
    declared = sum(reader.storage_bytes.values())
    if declared > available:
        raise CheckpointError(f"{what} declares {declared} bytes of tensor data but holds only {available} bytes")


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    # Hooks and metadata are dropped: only the values are needed.
    if not isinstance(storage, torch.TypedStorage):
        raise CheckpointError("malformed tensor in pickle")
    _check_view_fits(storage._size(), storage_offset, size, stride)   # (size() warns that TypedStorage is deprecated)
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))


MAX_TENSOR_DIMS = 16


def _check_view_fits(numel: int, offset, size, stride) -> None:
    """A tensor in a pickle is a view (offset, size, stride) of a storage of ``numel`` elements; it must lie inside
    it, or torch would grow the storage with uninitialised memory (or allocate whatever the file asks for)."""
    if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) and len(size) == len(stride)
            and len(size) <= MAX_TENSOR_DIMS and all(type(v) is int and v >= 0 for v in (offset, *size, *stride))):
        raise CheckpointError("malformed tensor in pickle: its size, stride and offset must be non-negative integers")
    extent = offset + (1 + sum((n - 1) * step for n, step in zip(size, stride)) if all(size) else 0)
    if extent > numel:
        raise CheckpointError(f"a tensor in the pickle (size {list(size)}, stride {list(stride)}, offset {offset}) "
                              f"reaches element {extent - 1} of a storage of {numel} elements")


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


_NUMPY_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray


def _reconstruct_ndarray(subtype, shape, dtype):
    # numpy pickles an array as an empty one, then sets its shape and bytes from the pickle's state (which checks that
    # the bytes are there); a non-empty shape here would only allocate memory that the file does not hold.
    if subtype is not np.ndarray or shape != (0,):
        raise CheckpointError("malformed numpy array in pickle")
    return _NUMPY_MULTIARRAY._reconstruct(subtype, shape, dtype)

# Every global an NVlabs StyleGAN2 network pickle references, mapped to a safe implementation.
_NVLABS_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentObject,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,   # StyleGAN3 modules keep numpy arrays as attributes
    **{(module, name): function for module in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name, function in (("scalar", _NUMPY_MULTIARRAY.scalar), ("_reconstruct", _reconstruct_ndarray))},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_NVLABS_PICKLE_GLOBALS``; anything else stops loading before it is called."""

    def find_class(self, module: str, name: str):
        try:
            return _NVLABS_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            pass
        if module.startswith("dnnlib.tflib"):
            raise CheckpointError("this is a TensorFlow StyleGAN2 pickle; convert it with NVlabs "
                                  "stylegan2-ada-pytorch's legacy.py first")
        raise CheckpointError(f"the pickle references {module}.{name}, which NVlabs StyleGAN2 network pickles do not "
                              f"use; refusing to load it (nothing from the file was executed)")


def read_nvlabs_pickle(path: str | Path) -> dict[str, Any]:
    """Unpickle an NVlabs network pickle without running code from it → its top-level dict, with networks as
    :class:`PersistentObject` (``'G'``, ``'D'``, ``'G_ema'``, ``'augment_pipe'``, ``'training_set_kwargs'``)."""
    try:
        with open(path, "rb") as file:
            data = _RestrictedUnpickler(file).load()
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except Exception as err:   # truncated or corrupt: EOFError, UnpicklingError, ValueError, ...
        raise CheckpointError(f"{path} is not a complete NVlabs network pickle ({type(err).__name__}: {err}); "
                              f"supported formats: " + "; ".join(SUPPORTED_GENERATOR_FORMATS)) from err
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentObject):
        raise CheckpointError(f"{path} is a pickle without an NVlabs 'G_ema' network")
    _check_nesting(data, f"{path}")
    return data


MAX_PICKLE_NESTING = 100   # containers in containers; an NVlabs StyleGAN2 snapshot nests about 20 deep


def _check_nesting(root: Any, where: str) -> None:
    """Refuse unpickled data nested deeper than ``MAX_PICKLE_NESTING`` or referring to itself.

    Unpickling builds any depth without recursion, but everything that walks the result afterwards recurses (the
    module tree, ``repr`` in a message). This walk is iterative and visits each container once.
    """
    height: dict[int, int] = {}   # id → containers on the longest chain from it down, itself included
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        obj, children_done = stack.pop()
        children = _pickled_children(obj)
        if children is None or (not children_done and id(obj) in height):
            continue
        if children_done:
            on_path.discard(id(obj))
            height[id(obj)] = 1 + max((height.get(id(child), 0) for child in children), default=0)
            if height[id(obj)] > MAX_PICKLE_NESTING:
                raise CheckpointError(f"{where}: its content is nested more than {MAX_PICKLE_NESTING} levels deep")
            continue
        if id(obj) in on_path:
            raise CheckpointError(f"{where}: its content refers to itself")
        on_path.add(id(obj))
        stack.append((obj, True))
        stack.extend((child, False) for child in children)


def _pickled_children(obj: Any) -> Optional[list]:
    """What a container the restricted unpickler can build holds (None for a leaf)."""
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, PersistentObject):
        return [obj.state]
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return list(obj.flat)
    return None


def _load_nvlabs_generator(path: Path) -> Generator:
    G_ema = read_nvlabs_pickle(path)["G_ema"]
    try:
        config_fields = _nvlabs_generator_config(G_ema, path)
    except (KeyError, TypeError, AttributeError) as err:   # an attribute or tensor NVlabs always stores is missing
        raise CheckpointError(f"{path}: malformed NVlabs generator ({type(err).__name__}: {err})") from err
    return _build_generator(_parse_config(GeneratorConfig, config_fields, path), G_ema.state_dict(), str(path))


def _nvlabs_generator_config(G_ema: PersistentObject, path: Path) -> dict[str, Any]:
    """GeneratorConfig fields from the attributes NVlabs modules store on themselves.

    The attributes (not the constructor kwargs) are read because stylegan2-ada-pytorch and stylegan3 use different
    defaults (e.g. ``conv_clamp``, ``num_fp16_res``), which the kwargs of a pickle leave implicit.
    """
    state = G_ema.state
    if G_ema.class_name != "Generator":
        raise CheckpointError(f"{path}: G_ema is a {G_ema.class_name}, not a Generator")
    synthesis = G_ema.child("synthesis")
    blocks = {int(name[1:]): synthesis.child(name) for name in synthesis.state.get("_modules", {})
              if re.fullmatch(r"b\d+", name)}
    if 4 not in blocks:
        raise CheckpointError(f"{path}: G_ema is not a StyleGAN2 generator (its synthesis network has no 4x4 block "
                              f"'b4'; StyleGAN3 generators are not supported, only StyleGAN2 ones)")
    if state.get("c_dim", 0):
        raise CheckpointError(f"{path}: conditional generators (c_dim={state['c_dim']}) are not supported; "
                              f"only unconditional StyleGAN2 generators (c_dim=0) are")
    mapping = G_ema.child("mapping")
    first_layer = blocks[4].child("conv1").state
    if first_layer.get("activation", "lrelu") != "lrelu" or not first_layer.get("use_noise", True):
        raise CheckpointError(f"{path}: only StyleGAN2 layers with leaky ReLU and noise inputs are supported")
    expected_filter = make_resample_filter()
    for name, tensor in G_ema.state_dict().items():
        if name.endswith("resample_filter") and not torch.allclose(tensor.float(), expected_filter):
            raise CheckpointError(f"{path}: {name} is not the [1,3,3,1] filter this project implements")
    channels = {res: block.child("conv1").state["_parameters"]["weight"].shape[0] for res, block in blocks.items()}
    channel_base, channel_max = _channel_layout(channels, str(path))
    return dict(
        resolution=int(state["img_resolution"]), z_dim=int(state["z_dim"]), w_dim=int(state["w_dim"]),
        img_channels=int(state["img_channels"]), channel_base=channel_base, channel_max=channel_max,
        mapping_layers=int(mapping.state["num_layers"]),
        mapping_lr_multiplier=float(mapping.child("fc0").state["bias_gain"]),
        w_avg_beta=float(mapping.state["w_avg_beta"]),
        conv_clamp=None if first_layer.get("conv_clamp") is None else float(first_layer["conv_clamp"]),
        num_fp16_res=sum(bool(block.state.get("use_fp16", False)) for block in blocks.values()),
        architecture=str(blocks[4].state.get("architecture", "skip")),
    )


def write_nvlabs_style_pickle(path: str | Path, G: Generator, module_src: str = "# module source omitted\n") -> Path:
    """Write ``G`` with the structure of an NVlabs ``stylegan2-ada-pytorch`` snapshot pickle (test fixture writer).

    The file holds ``{'training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe'}`` like ``training_loop.py`` writes
    it; every network module is a ``torch_utils.persistence`` object (class name, ``module_src``, module ``__dict__``
    with NVlabs attributes, ``EasyDict`` init kwargs, parameters pickled by torch, numpy scalar gains). NVlabs code
    cannot run it, because ``module_src`` is not their source; this project's loader never runs it either.
    """
    record = _persistent_record(G, module_src)
    return dump_nvlabs_pickle(path, {"training_set_kwargs": _EasyDict(resolution=G.img_resolution), "G": record,
                                     "D": None, "G_ema": record, "augment_pipe": None})


def dump_nvlabs_pickle(path: str | Path, data: dict[str, Any]) -> Path:
    """Pickle ``data`` (as :func:`read_nvlabs_pickle` returns it, possibly modified) back into an NVlabs-style
    network pickle: :class:`PersistentObject` values become ``torch_utils.persistence`` objects again."""
    buffer = io.BytesIO()
    _ForeignNamePickler(buffer, protocol=4).dump(data)
    path = Path(path)
    path.write_bytes(buffer.getvalue())
    return path


class _ForeignNamePickler(pickle._Pickler):
    """Pure-python pickler that can write :class:`_PickleGlobal` names (the C pickler insists on importing them)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_pickle_global(self, obj: _PickleGlobal) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch[_PickleGlobal] = _save_pickle_global


def _nvlabs_attributes(module: torch.nn.Module) -> dict[str, Any]:
    """The attributes NVlabs' constructors store on the module that corresponds to ``module``."""
    if isinstance(module, Generator):
        config = module.config
        init_kwargs = _EasyDict(
            z_dim=config.z_dim, w_dim=config.w_dim,
            mapping_kwargs=_EasyDict(num_layers=config.mapping_layers, lr_multiplier=config.mapping_lr_multiplier,
                                     w_avg_beta=config.w_avg_beta),
            synthesis_kwargs=_EasyDict(channel_base=config.channel_base, channel_max=config.channel_max,
                                       num_fp16_res=config.num_fp16_res, conv_clamp=config.conv_clamp),
            c_dim=0, img_resolution=config.resolution, img_channels=config.img_channels)
        return dict(z_dim=module.z_dim, c_dim=0, w_dim=module.w_dim, img_resolution=module.img_resolution,
                    img_channels=module.img_channels, num_ws=module.num_ws, _init_kwargs=init_kwargs)
    if isinstance(module, MappingNetwork):
        return dict(z_dim=module.z_dim, c_dim=0, w_dim=module.w_dim, num_ws=module.num_ws,
                    num_layers=module.num_layers, w_avg_beta=module.w_avg_beta)
    if isinstance(module, FullyConnectedLayer):
        return dict(activation="lrelu" if module.lrelu else "linear", weight_gain=np.float64(module.weight_gain),
                    bias_gain=module.bias_gain)
    if isinstance(module, SynthesisNetwork):
        return dict(w_dim=module.w_dim, img_resolution=module.resolution, num_ws=module.num_ws,
                    img_resolution_log2=int(math.log2(module.resolution)), block_resolutions=module.block_resolutions)
    if isinstance(module, SynthesisBlock):
        return dict(in_channels=module.in_channels, resolution=module.resolution, architecture="skip",
                    use_fp16=module.use_fp16, channels_last=False, num_conv=module.num_conv, num_torgb=1)
    if isinstance(module, SynthesisLayer):
        return dict(resolution=module.resolution, up=2 if module.up else 1, use_noise=True, activation="lrelu",
                    conv_clamp=module.conv_clamp, padding=1, act_gain=np.float64(LRELU_GAIN))
    if isinstance(module, ToRGBLayer):
        return dict(conv_clamp=module.conv_clamp, weight_gain=np.float64(module.weight_gain))
    raise TypeError(f"no NVlabs counterpart for {type(module).__name__}")


def _persistent_record(module: torch.nn.Module, module_src: str) -> PersistentObject:
    parameters = collections.OrderedDict(
        (name, torch.nn.Parameter(p.detach(), requires_grad=False)) for name, p in module._parameters.items())
    state = {
        "training": False,
        "_parameters": parameters,
        "_buffers": collections.OrderedDict((name, b.detach()) for name, b in module._buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict(
            (name, _persistent_record(child, module_src)) for name, child in module._modules.items()),
        "_init_args": (),
        "_init_kwargs": _EasyDict(),
        **_nvlabs_attributes(module),
    }
    return PersistentObject(dict(class_name=type(module).__name__, module_src=module_src, state=state))


# --------------------------------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch checkpoints

ROSINALITY_LR_MLP = 0.01   # rosinality's Generator(lr_mlp=0.01) default; not stored in its checkpoints
W_AVG_SAMPLES = 4096        # rosinality's generate.py --truncation_mean default


def _check_torch_file_sizes(path: Path) -> None:
    """Refuse a ``torch.save`` file whose tensor data would unpack to more bytes than the file holds (torch allocates
    what a file declares before reading it)."""
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        if file.read(len(_TORCH_LEGACY_MAGIC)) == _TORCH_LEGACY_MAGIC:
            file.seek(0)
            _check_legacy_storage_sizes(file, size, str(path))
            return
    # torch compares each storage with its zip entry, but it also inflates compressed entries, which torch.save
    # never writes: their total unpacked size must fit in the file.
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} is not a complete torch zip file ({err})") from err
    if unpacked > size:
        raise CheckpointError(f"{path}: its zip entries unpack to {unpacked} bytes, more than the {size} bytes of the "
                              f"file (torch.save writes them uncompressed)")


def _load_rosinality_generator(path: Path) -> Generator:
    _check_torch_file_sizes(path)
    try:
        # train.py stores its argparse options next to the weights; a Namespace holds only plain values.
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # truncated zip, disallowed global, ...
        raise CheckpointError(f"{path} could not be read as a torch checkpoint with weights only "
                              f"({type(err).__name__}: {err}); supported formats: "
                              + "; ".join(SUPPORTED_GENERATOR_FORMATS)) from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("g_ema"), dict):
        raise CheckpointError(f"{path} is a torch checkpoint without a rosinality 'g_ema' state dict; supported "
                              f"formats: " + "; ".join(SUPPORTED_GENERATOR_FORMATS))
    return generator_from_rosinality(checkpoint["g_ema"], checkpoint.get("latent_avg"), where=str(path))


def generator_from_rosinality(g_ema: dict[str, torch.Tensor], latent_avg: Optional[torch.Tensor] = None,
                              where: str = "rosinality state dict") -> Generator:
    """Convert a rosinality ``g_ema`` state dict to a :class:`Generator`.

    The size, style dim, ``n_mlp`` and channel layout are read from the tensor shapes. Name and layout changes:
    ``style.{i+1}`` → ``mapping.fc{i}``; ``input.input [1,C,4,4]`` → ``b4.const``; ``conv1``/``convs.{2k,2k+1}`` →
    ``b{res}.conv0/conv1`` (``conv.weight [1,O,I,3,3]`` → ``weight``, ``conv.modulation`` → ``affine``,
    ``noise.weight [1]`` → ``noise_strength []``, ``activate.bias`` → ``bias``); ``to_rgb1``/``to_rgbs.{k}`` →
    ``torgb`` (``bias [1,3,1,1]`` → ``[3]``); ``noises.noise_{i} [1,1,r,r]`` → ``noise_const [r,r]``. Equalised-lr
    scales, the transposed-conv + blur up-sampling and the toRGB skip up-sampling compute the same functions in both
    code bases, so no weight needs rescaling or flipping. ``latent_avg`` becomes ``mapping.w_avg``; when absent
    (train.py does not save it) it is the mean w of ``W_AVG_SAMPLES`` latents drawn with seed 0.
    """
    def tensor(name: str) -> torch.Tensor:
        if name not in g_ema:
            raise CheckpointError(f"{where}: rosinality key {name!r} is missing")
        return g_ema[name]

    not_tensors = [name for name, value in g_ema.items() if not isinstance(value, torch.Tensor)]
    if not_tensors or not (latent_avg is None or isinstance(latent_avg, torch.Tensor)):
        raise CheckpointError(f"{where}: a rosinality g_ema state dict and latent_avg hold only tensors; these are "
                              f"not: {(not_tensors or ['latent_avg'])[:5]}")

    n_mlp = len([k for k in g_ema if re.fullmatch(r"style\.\d+\.weight", k)])
    num_upsampling_blocks = len([k for k in g_ema if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    resolution = 4 * 2 ** num_upsampling_blocks
    w_dim, z_dim = tensor("style.1.weight").shape   # rosinality's style_dim is both
    expected_filter = make_resample_filter()
    for name in g_ema:
        if name.endswith(("blur.kernel", "upsample.kernel")) and not torch.allclose(g_ema[name] / 4,
                                                                                     expected_filter):
            raise CheckpointError(f"{where}: {name} is not the [1,3,3,1] blur kernel this project implements")

    layers = {4: {"conv1": "conv1", "torgb": "to_rgb1"}}   # our layer → rosinality module, per resolution
    for k in range(num_upsampling_blocks):
        layers[8 * 2 ** k] = {"conv0": f"convs.{2 * k}", "conv1": f"convs.{2 * k + 1}", "torgb": f"to_rgbs.{k}"}
    converted = {f"mapping.fc{i}.{p}": tensor(f"style.{i + 1}.{p}") for i in range(n_mlp) for p in ("weight", "bias")}
    converted["synthesis.b4.const"] = tensor("input.input")[0]
    noise_index = 0
    for res, modules in layers.items():
        for ours, theirs in modules.items():
            prefix = f"synthesis.b{res}.{ours}"
            converted[f"{prefix}.weight"] = tensor(f"{theirs}.conv.weight")[0]
            converted[f"{prefix}.affine.weight"] = tensor(f"{theirs}.conv.modulation.weight")
            converted[f"{prefix}.affine.bias"] = tensor(f"{theirs}.conv.modulation.bias")
            if ours == "torgb":
                converted[f"{prefix}.bias"] = tensor(f"{theirs}.bias").reshape(-1)
                continue
            converted[f"{prefix}.bias"] = tensor(f"{theirs}.activate.bias")
            converted[f"{prefix}.noise_strength"] = tensor(f"{theirs}.noise.weight").reshape([])
            converted[f"{prefix}.noise_const"] = tensor(f"noises.noise_{noise_index}")[0, 0]
            converted[f"{prefix}.resample_filter"] = expected_filter
            noise_index += 1
        converted[f"synthesis.b{res}.resample_filter"] = expected_filter

    channels = {res: converted[f"synthesis.b{res}.conv1.weight"].shape[0] for res in layers}
    channel_base, channel_max = _channel_layout(channels, where)
    w_avg_missing = latent_avg is None
    converted["mapping.w_avg"] = torch.zeros(w_dim) if w_avg_missing else latent_avg.reshape(-1)
    config = _parse_config(GeneratorConfig, dict(
        resolution=resolution, z_dim=z_dim, w_dim=w_dim, channel_base=channel_base, channel_max=channel_max,
        mapping_layers=n_mlp, mapping_lr_multiplier=ROSINALITY_LR_MLP), where)
    G = _build_generator(config, converted, where)
    if w_avg_missing:
        with torch.no_grad():
            z = torch.randn(W_AVG_SAMPLES, z_dim, generator=torch.Generator().manual_seed(0))
            G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(dim=0))
    return G


def generator_to_rosinality(G: Generator) -> dict[str, torch.Tensor]:
    """Inverse of :func:`generator_from_rosinality`: ``G`` → rosinality ``g_ema`` state dict (also the blur and
    up-sampling kernels rosinality registers as buffers). Requires the mapping learning-rate multiplier rosinality
    hard-codes (0.01) and ``z_dim == w_dim`` (its ``style_dim``); rosinality has no ``conv_clamp``."""
    if G.z_dim != G.w_dim:
        raise ValueError(f"rosinality generators have one style_dim for z and w; this one has z_dim={G.z_dim}, "
                         f"w_dim={G.w_dim}")
    if G.config.mapping_lr_multiplier != ROSINALITY_LR_MLP:
        raise ValueError(f"rosinality generators use a mapping lr multiplier of {ROSINALITY_LR_MLP}, this one uses "
                         f"{G.config.mapping_lr_multiplier}")
    sd = {k: v.detach() for k, v in G.state_dict().items()}
    blur_kernel = make_resample_filter() * 4   # rosinality stores its up-sampling kernels with the gain folded in
    out = {}
    for i in range(G.config.mapping_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    layers = {"conv1": ("synthesis.b4.conv1", False), "to_rgb1": ("synthesis.b4.torgb", False)}
    for k, res in enumerate(G.config.block_resolutions[1:]):
        layers[f"convs.{2 * k}"] = (f"synthesis.b{res}.conv0", True)
        layers[f"convs.{2 * k + 1}"] = (f"synthesis.b{res}.conv1", False)
        layers[f"to_rgbs.{k}"] = (f"synthesis.b{res}.torgb", True)
    noise_index = 0
    for theirs, (ours, upsamples) in layers.items():
        out[f"{theirs}.conv.weight"] = sd[f"{ours}.weight"][None]
        out[f"{theirs}.conv.modulation.weight"] = sd[f"{ours}.affine.weight"]
        out[f"{theirs}.conv.modulation.bias"] = sd[f"{ours}.affine.bias"]
        if theirs.startswith("to_rgb"):
            out[f"{theirs}.bias"] = sd[f"{ours}.bias"].reshape(1, -1, 1, 1)
            if upsamples:
                out[f"{theirs}.upsample.kernel"] = blur_kernel
            continue
        out[f"{theirs}.noise.weight"] = sd[f"{ours}.noise_strength"].reshape(1)
        out[f"{theirs}.activate.bias"] = sd[f"{ours}.bias"]
        out[f"noises.noise_{noise_index}"] = sd[f"{ours}.noise_const"][None, None]
        if upsamples:
            out[f"{theirs}.conv.blur.kernel"] = blur_kernel
        noise_index += 1
    return out


def save_rosinality_checkpoint(path: str | Path, G: Generator) -> Path:
    """Write ``G`` as rosinality's ``convert_weight.py`` does: ``torch.save({'g_ema': ..., 'latent_avg': ...})``."""
    path = Path(path)
    torch.save({"g_ema": generator_to_rosinality(G), "latent_avg": G.mapping.w_avg.detach().clone()}, path)
    return path
