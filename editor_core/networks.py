"""StyleGAN2 generator and discriminator (config-f family) in plain torch.

Parameter and buffer names follow NVlabs ``stylegan2-ada-pytorch`` (``training/networks.py``) exactly, so an NVlabs
``G_ema.state_dict()`` loads strictly into :class:`Generator` and a ``D.state_dict()`` into :class:`Discriminator`:
``mapping.fc0.weight``, ``mapping.w_avg``, ``synthesis.b4.const``, ``synthesis.b8.conv0.affine.weight``,
``synthesis.b8.conv0.noise_const``, ``synthesis.b8.torgb.weight``, ``b64.fromrgb.weight``, ``b4.fc.weight``, ...

Everything is built from native batched ops (no custom CUDA kernels), so it runs on any torch device and compiles with
``torch.compile``. The FIR resampling filter is NVlabs' ``[1, 3, 3, 1]`` outer product; it is symmetric, so the
correlation that ``conv2d`` computes equals the convolution that NVlabs' ``upfirdn2d`` computes.

Shapes: ``z [B, z_dim]``, ``ws [B, num_ws, w_dim]`` (W+), images ``[B, img_channels, H, W]`` in about ``[-1, 1]``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)   # keeps the activation variance of leaky ReLU(0.2) at 1 (NVlabs ``def_gain``)
RESAMPLE_TAPS = (1, 3, 3, 1)
NOISE_MODES = ("const", "random", "none")
FP16_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def make_resample_filter(taps: tuple[int, ...] = RESAMPLE_TAPS) -> torch.Tensor:
    """The 2-D FIR low-pass filter ``[k, k]`` (outer product of ``taps``, unit DC gain), as NVlabs ``setup_filter``."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _depthwise_filter(f: torch.Tensor, channels: int, dtype: torch.dtype, gain: float) -> torch.Tensor:
    """``f [k, k]`` → ``[channels, 1, k, k]`` weight for a grouped (one filter per channel) convolution."""
    return (f * gain).to(dtype)[None, None].expand(channels, 1, -1, -1)


def fir_filter(x: torch.Tensor, f: torch.Tensor, padding: int, stride: int = 1, gain: float = 1.0) -> torch.Tensor:
    """Filter every channel of ``x [B, C, H, W]`` with ``f [k, k]`` after zero-padding by ``padding``, then keep every
    ``stride``-th pixel: ``[B, C, (H + 2p - k) // stride + 1, ...]``.

    On CUDA the filter runs as :func:`separable_fir_filter`: CUDA libraries run grouped (one filter per channel)
    convolutions slowly, above all in bfloat16 and channels-last, and with them the 128² trainer reached only
    ~31 TFLOP/s (docs/demo-model.md). On the CPU oneDNN's grouped convolution is the faster one (2–10x at batch 1).
    """
    if x.is_cuda:
        return separable_fir_filter(x, f, padding, stride, gain)
    channels = x.shape[1]
    return F.conv2d(x, _depthwise_filter(f, channels, x.dtype, gain), padding=padding, stride=stride, groups=channels)


def separable_fir_filter(x: torch.Tensor, f: torch.Tensor, padding: int, stride: int = 1,
                         gain: float = 1.0) -> torch.Tensor:
    """:func:`fir_filter` for a separable ``f = outer(t, t)`` (every resampling filter here is one): rows, then
    columns, each a float32 sum of ``k`` shifted slices. Only element-wise work, so ``torch.compile`` fuses it into
    a memory-bound kernel."""
    taps = f.sum(dim=1) * math.sqrt(gain)   # f = outer(t, t) with sum(f) = 1, so t = the row sums of f
    y = x.to(torch.promote_types(x.dtype, torch.float32))
    for dim in (3, 2):
        padded = F.pad(y, [padding, padding, 0, 0] if dim == 3 else [0, 0, padding, padding])
        length = (padded.shape[dim] - taps.shape[0]) // stride + 1
        index = [slice(None)] * padded.ndim
        y = 0
        for k in range(taps.shape[0]):
            index[dim] = slice(k, k + stride * (length - 1) + 1, stride)
            y = y + padded[tuple(index)] * taps[k]
    return y.to(x.dtype)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, C, 2H, 2W]``: zero insertion + FIR filter (NVlabs ``upfirdn2d.upsample2d``).

    A stride-2 transposed grouped convolution with the filter does both steps in one op; ``padding=1`` drops the one
    extra row/column on each side that the 4-tap filter produces.
    """
    channels = x.shape[1]
    weight = _depthwise_filter(f, channels, x.dtype, gain=4.0)   # gain = up² keeps the DC level
    return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=channels)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, C, H/2, W/2]``: FIR filter + decimation (NVlabs ``upfirdn2d.downsample2d``)."""
    return fir_filter(x, f, padding=1, stride=2)


def bias_act(x: torch.Tensor, bias: Optional[torch.Tensor], lrelu: bool, gain: float = 1.0,
             clamp: Optional[float] = None) -> torch.Tensor:
    """NVlabs ``bias_act``: add a per-channel ``bias [C]``, leaky ReLU (times ``LRELU_GAIN``) when ``lrelu``, scale by
    ``gain``, clamp to ``±clamp``. Works on ``[B, C]`` and ``[B, C, H, W]``."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if lrelu:
        x = F.leaky_relu(x, LRELU_SLOPE)
        gain = gain * LRELU_GAIN
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pixel norm over features: ``x [B, F]`` scaled to unit mean square per sample."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: bool = False, resample_filter: Optional[torch.Tensor] = None,
                     fused: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    Args:
        x: ``[B, I, H, W]`` activations (float32, float16 or bfloat16).
        weight: ``[O, I, k, k]`` shared weight (float32), ``k`` odd.
        styles: ``[B, I]`` per-sample input-channel scales (float32).
        demodulate: normalise every output channel of the per-sample weight to unit L2 norm.
        up: 2x up-sample (transposed stride-2 conv followed by the FIR ``resample_filter [4, 4]``).
        fused: modulate the weights per sample and run one grouped convolution (NVlabs ``fused_modconv``; best for
            small batches). ``False`` scales the activations by the styles, runs one shared-weight convolution and
            scales the result by the demodulation coefficients (same maths; faster for training batches).

    Returns:
        ``[B, O, H', W']`` with ``H' = 2H`` when ``up`` else ``H``.
    """
    batch, in_channels = styles.shape
    out_channels, _, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Demodulation cancels any per-output-channel scale of the weight and any per-sample scale of the styles;
        # normalising both first keeps the float16 intermediate products from overflowing (NVlabs does the same).
        weight = weight * (1 / math.sqrt(in_channels * kh * kw)
                           / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = None
    if demodulate:
        # sum_{i,k} (w[o,i,k] * s[b,i])^2 = sum_i s[b,i]^2 * sum_k w[o,i,k]^2: a [B, I] x [I, O] product, so the
        # non-fused path never builds per-sample weights.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()   # [B, O]

    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, in_channels, 1, 1)
        w = weight.to(x.dtype)
        if up:
            x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
            x = fir_filter(x, resample_filter, padding=1, gain=4.0)
        else:
            x = F.conv2d(x, w, padding=kh // 2)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch, out_channels, 1, 1)
        return x

    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)   # [B, O, I, k, k]
    if dcoefs is not None:
        w = w * dcoefs.reshape(batch, out_channels, 1, 1, 1)
    w = w.to(x.dtype)
    x = x.reshape(1, batch * in_channels, *x.shape[2:])   # samples become groups of one grouped convolution
    if up:
        w = w.transpose(1, 2).reshape(batch * in_channels, out_channels, kh, kw)
        x = F.conv_transpose2d(x, w, stride=2, groups=batch)
        x = fir_filter(x, resample_filter, padding=1, gain=4.0)
    else:
        x = F.conv2d(x, w.reshape(batch * out_channels, in_channels, kh, kw), padding=kh // 2, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


def _check_power_of_two(name: str, value: int, low: int, high: int) -> None:
    if not (isinstance(value, int) and low <= value <= high and value & (value - 1) == 0):
        raise ValueError(f"{name} must be a power of two between {low} and {high}, got {value!r}")


def _normalise_floats(config, names: tuple[str, ...]) -> None:
    """Store float fields as floats, so that equal configs have equal JSON (``256`` and ``256.0`` alike)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            object.__setattr__(config, name, float(value))


def _config_from_dict(cls, data: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
    return cls(**data)


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyper-parameters of a StyleGAN2 generator; defaults are config-f (NVlabs ``stylegan2`` / ``paper256+``).

    ``num_fp16_res`` highest-resolution blocks run in ``fp16_dtype`` on CUDA (never on CPU); ``conv_clamp`` clamps
    every conv output to ``±conv_clamp`` (NVlabs uses 256 together with float16). ``architecture`` is kept for NVlabs
    compatibility; only ``'skip'`` (the config-f generator) is implemented.
    """

    resolution: int
    z_dim: int = 512
    w_dim: int = 512
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.995
    conv_clamp: Optional[float] = None
    num_fp16_res: int = 0
    fp16_dtype: str = "float16"
    architecture: str = "skip"

    def __post_init__(self) -> None:
        _normalise_floats(self, ("mapping_lr_multiplier", "w_avg_beta", "conv_clamp"))
        _check_power_of_two("resolution", self.resolution, 32, 1024)
        for name in ("z_dim", "w_dim", "img_channels", "channel_base", "channel_max", "mapping_layers"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.channel_base < self.resolution:
            raise ValueError(f"channel_base={self.channel_base} gives no channels at {self.resolution}px "
                             f"(channels = min(channel_base // res, channel_max)); use channel_base >= resolution")
        if not self.mapping_lr_multiplier > 0:
            raise ValueError(f"mapping_lr_multiplier must be > 0, got {self.mapping_lr_multiplier}")
        if not 0 <= self.w_avg_beta <= 1:
            raise ValueError(f"w_avg_beta must be in [0, 1], got {self.w_avg_beta}")
        _check_precision_fields(self)
        if self.architecture != "skip":
            raise ValueError(f"architecture {self.architecture!r} is not supported; only the 'skip' generator "
                             f"(StyleGAN2 config-e/f) is implemented")

    @property
    def block_resolutions(self) -> list[int]:
        """Synthesis block resolutions ``[4, 8, ..., resolution]``."""
        return [2 ** i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """W+ length: one w per conv layer plus one for the last toRGB (= 2·log2(resolution) − 2)."""
        return 2 * int(math.log2(self.resolution)) - 2

    def channels_at(self, res: int) -> int:
        """Feature channels of the synthesis block at ``res`` (NVlabs ``min(channel_base // res, channel_max)``)."""
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeneratorConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        return _config_from_dict(cls, data)


def _check_precision_fields(config: Any) -> None:
    """The reduced-precision fields that generator and discriminator configs share."""
    if config.conv_clamp is not None and not config.conv_clamp > 0:
        raise ValueError(f"conv_clamp must be None or > 0, got {config.conv_clamp}")
    if not (isinstance(config.num_fp16_res, int) and config.num_fp16_res >= 0):
        raise ValueError(f"num_fp16_res must be an integer >= 0, got {config.num_fp16_res!r}")
    if config.fp16_dtype not in FP16_DTYPES:
        raise ValueError(f"fp16_dtype must be one of {sorted(FP16_DTYPES)}, got {config.fp16_dtype!r}")


def _fp16_resolution(resolution: int, num_fp16_res: int) -> int:
    """Lowest resolution that runs in reduced precision: the ``num_fp16_res`` highest ones (never 4x4), as NVlabs."""
    return max(2 ** (int(math.log2(resolution)) + 1 - num_fp16_res), 8)


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: ``[B, in] → [B, out]`` (NVlabs ``FullyConnectedLayer``).

    Weights are stored divided by ``lr_multiplier`` and scaled back at run time, so that Adam's step on the stored
    value is ``lr_multiplier`` times smaller in effect (the mapping network uses 0.01).
    """

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0):
        super().__init__()
        self.lrelu = lrelu
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if not self.lrelu:
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, lrelu=True)


class MappingNetwork(nn.Module):
    """``z [B, z_dim]`` → ``ws [B, num_ws, w_dim]``: pixel norm, ``mapping_layers`` leaky-ReLU FC layers with a
    learning-rate multiplier, broadcast to every layer, optional truncation towards the tracked average ``w_avg``."""

    def __init__(self, config: GeneratorConfig, num_ws: int):
        super().__init__()
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.num_ws = num_ws
        self.num_layers = config.mapping_layers
        self.w_avg_beta = config.w_avg_beta
        for idx in range(config.mapping_layers):
            in_features = config.z_dim if idx == 0 else config.w_dim
            setattr(self, f"fc{idx}", FullyConnectedLayer(in_features, config.w_dim, lrelu=True,
                                                           lr_multiplier=config.mapping_lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([config.w_dim]))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                update_emas: bool = False) -> torch.Tensor:
        """Args:
            z: ``[B, z_dim]`` latents.
            truncation_psi: ``w ← w_avg + ψ·(w − w_avg)``; 1 disables truncation.
            truncation_cutoff: truncate only the first ``cutoff`` of the ``num_ws`` entries (coarse layers); ``None``
                truncates all.
            update_emas: move ``w_avg`` towards this batch's mean w (training only).

        Returns:
            ``ws [B, num_ws, w_dim]`` (float32; a real tensor, not a broadcast view, so it can be edited in place).
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], got {list(z.shape)}")
        x = normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1 and truncation_cutoff is None:
            ws = self.w_avg.lerp(ws, truncation_psi)
        elif truncation_psi != 1:
            truncated = self.w_avg.lerp(ws[:, :truncation_cutoff], truncation_psi)
            ws = torch.cat([truncated, ws[:, truncation_cutoff:]], dim=1)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up-sampling) + per-pixel noise + bias + leaky ReLU (NVlabs ``SynthesisLayer``).

    ``[B, in_channels, r, r]`` with ``w [B, w_dim]`` → ``[B, out_channels, resolution, resolution]`` where
    ``r = resolution / 2`` when ``up`` else ``resolution``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        # NVlabs registers the filter in every layer (also where it is unused), so it is part of the state_dict.
        self.register_buffer("resample_filter", make_resample_filter())
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, fused_modconv: bool) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, resample_filter=self.resample_filter,
                             fused=fused_modconv)
        if noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        elif noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        return bias_act(x, self.bias, lrelu=True, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv, no demodulation (NVlabs ``ToRGBLayer``): ``[B, C, r, r]`` → ``[B, img_channels, r, r]``."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: Optional[float] = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        return bias_act(x, self.bias, lrelu=False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator (NVlabs ``SynthesisBlock``, architecture ``'skip'``).

    The 4x4 block starts from the learned ``const`` and has one conv (``conv1``); higher blocks up-sample with
    ``conv0`` then apply ``conv1``. Every block adds its toRGB output to the up-sampled image of the block below.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 use_fp16: bool, fp16_dtype: torch.dtype, conv_clamp: Optional[float]):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.use_fp16 = use_fp16
        self.fp16_dtype = fp16_dtype
        self.register_buffer("resample_filter", make_resample_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor, noise_mode: str,
                fused_modconv: Optional[bool], force_fp32: bool
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Args:
            x: ``[B, in_channels, res/2, res/2]`` features of the block below (``None`` for the 4x4 block).
            img: ``[B, img_channels, res/2, res/2]`` float32 image so far (``None`` for the 4x4 block).
            ws: ``[B, num_conv + 1, w_dim]``: one w per conv, then the toRGB w.

        Returns:
            ``(x [B, out_channels, res, res], img [B, img_channels, res, res] float32, conv outputs)``.
        """
        use_fp16 = self.use_fp16 and not force_fp32 and ws.device.type == "cuda"
        dtype = self.fp16_dtype if use_fp16 else torch.float32
        if fused_modconv is None:
            # Grouped convs win for inference; for float16 batches NVlabs prefers the shared-weight conv.
            fused_modconv = not self.training and (dtype == torch.float32 or ws.shape[0] == 1)
        w_per_layer = ws.unbind(dim=1)
        layer_outputs = []
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x.to(dtype), w_per_layer[0], noise_mode, fused_modconv)
            layer_outputs.append(x)
        x = self.conv1(x, w_per_layer[self.num_conv - 1], noise_mode, fused_modconv)
        layer_outputs.append(x)
        rgb = self.torgb(x, w_per_layer[self.num_conv], fused_modconv).to(torch.float32)
        img = rgb if img is None else upsample2d(img, self.resample_filter) + rgb
        return x, img, layer_outputs


class SynthesisNetwork(nn.Module):
    """``ws [B, num_ws, w_dim]`` → image ``[B, img_channels, resolution, resolution]`` (NVlabs ``SynthesisNetwork``)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.w_dim = config.w_dim
        self.resolution = config.resolution
        self.block_resolutions = config.block_resolutions
        self.num_ws = config.num_ws
        fp16_resolution = _fp16_resolution(config.resolution, config.num_fp16_res)
        self.feature_channels: list[int] = []
        self.feature_resolutions: list[int] = []
        for res in self.block_resolutions:
            in_channels = config.channels_at(res // 2) if res > 4 else 0
            block = SynthesisBlock(in_channels, config.channels_at(res), config.w_dim, res, config.img_channels,
                                   use_fp16=res >= fp16_resolution, fp16_dtype=FP16_DTYPES[config.fp16_dtype],
                                   conv_clamp=config.conv_clamp)
            setattr(self, f"b{res}", block)
            self.feature_channels += [block.out_channels] * block.num_conv
            self.feature_resolutions += [res] * block.num_conv

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", return_features: bool = False,
                force_fp32: bool = False, fused_modconv: Optional[bool] = None):
        """Args:
            ws: ``[B, num_ws, w_dim]`` W+ latents.
            noise_mode: ``'const'`` (the stored ``noise_const`` maps: deterministic), ``'random'`` (fresh Gaussian
                noise per call) or ``'none'`` (no noise).
            return_features: also return every conv output.
            force_fp32: run the ``num_fp16_res`` blocks in float32 too.
            fused_modconv: ``None`` chooses per block like NVlabs (fused in eval mode unless a reduced-precision
                block sees a batch > 1); ``True``/``False`` forces the grouped / shared-weight path.

        Returns:
            ``img [B, img_channels, H, W]`` float32 in about ``[-1, 1]``; with ``return_features``
            ``(img, features)`` where ``features[i]`` is ``[B, feature_channels[i], r_i, r_i]`` with
            ``r_i = feature_resolutions[i]``: ``b4.conv1``, then ``conv0`` and ``conv1`` of every higher block,
            low → high resolution. They are the tensors the network computed (in the block's dtype, in the autograd
            graph), not copies.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        features: list[torch.Tensor] = []
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + 1)   # consecutive blocks share the toRGB/conv0 w
            x, img, layer_outputs = block(x, img, block_ws, noise_mode, fused_modconv, force_fp32)
            features += layer_outputs
            w_idx += block.num_conv
        return (img, features) if return_features else img


class Generator(nn.Module):
    """StyleGAN2 generator ``z → ws → image``; ``state_dict`` layout = NVlabs ``G_ema`` with ``c_dim = 0``.

    Attributes: ``config``, ``num_ws``, ``feature_channels`` and ``feature_resolutions`` (one entry per synthesis conv,
    matching the ``features`` of ``synthesis(..., return_features=True)``).
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(config)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config, self.num_ws)

    @property
    def feature_channels(self) -> list[int]:
        return self.synthesis.feature_channels

    @property
    def feature_resolutions(self) -> list[int]:
        return self.synthesis.feature_resolutions

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                noise_mode: str = "const") -> torch.Tensor:
        """``z [B, z_dim]`` → image ``[B, img_channels, H, W]`` in about ``[-1, 1]``."""
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Hyper-parameters of the StyleGAN2 residual discriminator (NVlabs ``Discriminator``, ``c_dim = 0``)."""

    resolution: int
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    num_fp16_res: int = 0
    conv_clamp: Optional[float] = None
    fp16_dtype: str = "float16"

    def __post_init__(self) -> None:
        _normalise_floats(self, ("conv_clamp",))
        _check_power_of_two("resolution", self.resolution, 32, 1024)
        for name in ("img_channels", "channel_base", "channel_max", "mbstd_group_size", "mbstd_num_channels"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.channel_base < self.resolution:
            raise ValueError(f"channel_base={self.channel_base} gives no channels at {self.resolution}px; "
                             f"use channel_base >= resolution")
        _check_precision_fields(self)

    def channels_at(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiscriminatorConfig":
        return _config_from_dict(cls, data)


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate conv with optional FIR 2x down-sampling, bias and leaky ReLU (NVlabs ``Conv2dLayer``).

    ``[B, in_channels, H, W]`` → ``[B, out_channels, H', W']``, ``H' = H/2`` when ``down``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, lrelu: bool = True,
                 down: bool = False, conv_clamp: Optional[float] = None):
        super().__init__()
        self.lrelu = lrelu
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", make_resample_filter())
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down and w.shape[-1] == 1:
            x = F.conv2d(downsample2d(x, self.resample_filter), w)   # 1x1: decimate first, 4x fewer MACs
        elif self.down:
            # Low-pass with the padding of the conv folded in (H + 4 - 3), then a stride-2 valid conv → H/2.
            x = F.conv2d(fir_filter(x, self.resample_filter, padding=self.padding + 1), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, lrelu=self.lrelu, gain=gain, clamp=clamp)


class DiscriminatorBlock(nn.Module):
    """Residual block at one resolution: ``[B, tmp, r, r]`` (or the image, for the first block) →
    ``[B, out_channels, r/2, r/2]`` (NVlabs ``DiscriminatorBlock``, architecture ``'resnet'``)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 use_fp16: bool, fp16_dtype: torch.dtype, conv_clamp: Optional[float]):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.use_fp16 = use_fp16
        self.fp16_dtype = fp16_dtype
        self.register_buffer("resample_filter", make_resample_filter())
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=True, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, lrelu=False, down=True)

    def forward(self, x: torch.Tensor, force_fp32: bool = False) -> torch.Tensor:
        use_fp16 = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        x = x.to(self.fp16_dtype if use_fp16 else torch.float32)
        if self.in_channels == 0:
            x = self.fromrgb(x)
        # Both branches are scaled by sqrt(1/2) so the residual sum keeps unit variance.
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Appends the mean std-dev over groups of ``group_size`` samples as ``num_channels`` extra feature maps:
    ``[B, C, H, W]`` → ``[B, C + num_channels, H, W]``. ``B`` must be divisible by ``min(group_size, B)``."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)      # [G, n, F, c, H, W]
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over each group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, 3x3 conv, FC, output logit: ``[B, C, 4, 4]`` → ``[B, 1]`` (NVlabs ``b4``)."""

    def __init__(self, in_channels: int, resolution: int, mbstd_group_size: int, mbstd_num_channels: int,
                 conv_clamp: Optional[float]):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, lrelu=True)
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x.to(torch.float32)))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: image ``[B, img_channels, R, R]`` → logits ``[B, 1]`` (float32).

    Blocks ``b{R}`` … ``b8`` halve the resolution; ``b4`` is the epilogue. With ``mbstd_group_size = G`` the batch
    size must be a multiple of ``min(G, B)``.
    """

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.img_resolution = config.resolution
        self.block_resolutions = [2 ** i for i in range(int(math.log2(config.resolution)), 2, -1)]
        fp16_resolution = _fp16_resolution(config.resolution, config.num_fp16_res)
        for res in self.block_resolutions:
            in_channels = config.channels_at(res) if res < config.resolution else 0
            block = DiscriminatorBlock(in_channels, config.channels_at(res), config.channels_at(res // 2), res,
                                       config.img_channels, use_fp16=res >= fp16_resolution,
                                       fp16_dtype=FP16_DTYPES[config.fp16_dtype], conv_clamp=config.conv_clamp)
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(config.channels_at(4), 4, config.mbstd_group_size,
                                        config.mbstd_num_channels, config.conv_clamp)

    def forward(self, img: torch.Tensor, force_fp32: bool = False) -> torch.Tensor:
        """``img [B, img_channels, R, R]`` in ``[-1, 1]`` → realness logits ``[B, 1]``."""
        x = img
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, force_fp32=force_fp32)
        return self.b4(x)
