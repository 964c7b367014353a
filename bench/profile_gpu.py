"""What bounds issue 8's speed items on a GPU: device ceilings, the items' components, and their kernels.

    python3 bench/profile_gpu.py --json $OUT/profile.json [--precision bfloat16] [--trace $OUT/traces]
    .venv/bin/python bench/profile_gpu.py --device cpu --resolution 64 --channel-base 1024   (smoke test)

Same networks as ``bench/gpu.py`` (config-f, random weights, batch 1, 34 classes, 10-member ensemble, segmentation
at min(resolution, 512)²), built by ``bench.suite.Suite``. Three parts, each also in the JSON:

1. Ceilings, measured once: a 1 GiB device-to-device copy (GB/s counting bytes read + written) and an 8192² matmul
   (TFLOP/s) in float32 with TF32 and in bfloat16 (float16 too with ``--precision float16``).
2. Components, timed with ``bench.suite.time_call`` under the edit's autocast. Mode-3 step: (a) G synthesis with
   features, forward + backward to the latent (random upstream gradients on image and features); (b) LPIPS-VGG on
   the masked image against the edit's precomputed reference features, forward + backward to the image; (c) the
   segmentation branch at the ROI pixels and its CE, forward + backward to the features; (d) the L2 term; (e) the
   whole ``EditOptimizer.step`` — (a)–(d) should add up to about (e). Mode 1: (f) G forward with features; (g) the
   full-map ensemble and the softmax-mean-argmax labelling (``editing._labels``), (g1) of which the ensemble forward
   alone; (h) the whole ``apply_vectors`` —
   (f) + (g) ≈ (h). Each component's matrix FLOPs (``FlopCounterMode``: convolutions and matmuls, forward and
   backward) give its achieved TFLOP/s and a compute floor (FLOPs ÷ the matmul ceiling of its precision: TF32 for
   float32). For (g) the least memory traffic — every feature map read once, every full-resolution activation
   (E·w per hidden layer, E·K logits) written once and read once, the labels written once — gives a bandwidth
   floor (bytes ÷ the copy ceiling).
3. Kernels (CUDA only): ``torch.profiler`` over ``--steps`` mode-3 steps and mode-1 applications after warm-up.
   Kernel time per iteration by category, the 12 most expensive kernels, and the gap between the CUDA-event wall
   time of the item (part 2, unprofiled) and its summed kernel time: time the GPU waits for the host (launches,
   synchronisations). Categories are decided by the kernel's name in this order: copy/cat (memcpy, memset,
   direct_copy, CatArrayBatchedCopy, cuDNN layout transforms), then by the name before its template arguments:
   upsample/gather/scatter/index, GEMM/conv (gemm, conv, cutlass, sm90, xmma, cudnn, implicit, cublas), reduction
   (reduce), element-wise (elementwise, vectorized, unrolled, pointwise, multi_tensor_apply), copy/cat (copy, cat),
   other (softmax, CE, …).

The compact summary table is printed last. Without CUDA (``--device cpu``) the ceilings, floors and kernel profile
are skipped with a message; the components are still timed, so the script can be smoke-tested on a CPU.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.suite import Measurement, Suite, SuiteConfig, environment, time_call, write_json  # noqa: E402
from editor_core.editing import EditConfig, _labels, apply_vectors, prepare_edit, roi_cross_entropy  # noqa: E402
from editor_core.networks import GeneratorConfig  # noqa: E402

COPY_BYTES = 2 ** 30
MATMUL_SIDE = 8192
TOP_KERNELS = 12
CATEGORIES = ("GEMM/conv", "element-wise", "reduction", "upsample/gather/scatter/index", "copy/cat", "other")
MODE3, MODE1 = "mode-3 step", "mode 1"


@dataclass
class Component:
    """One timed piece of an item. ``role``: ``part`` (the parts add up to the item), ``whole`` or ``detail`` (a
    piece of a part). Floors are ``None`` without a measured ceiling (CPU)."""

    item: str
    key: str
    name: str
    role: str
    measurement: Measurement
    gflop: float
    achieved_tflops: float
    compute_floor_ms: Optional[float]
    min_bytes: Optional[int] = None
    bandwidth_floor_ms: Optional[float] = None


# ---------------------------------------------------------------------------------------------------------------------
# Ceilings


def measure_ceilings(device: torch.device, precision: str, warmup: int, repeats: int) -> dict:
    """Copy bandwidth (GB/s, read + written) and matmul throughput (TFLOP/s) per dtype, CUDA-event medians."""
    source = torch.rand(COPY_BYTES // 4, device=device)
    target = torch.empty_like(source)
    copy = time_call("copy", lambda: target.copy_(source), device, warmup, repeats)
    ceilings = {"copy_gbps": 2 * source.nbytes / copy.median_ms / 1e6, "copy_ms": copy.median_ms,
                "matmul_tflops": {}, "matmul_side": MATMUL_SIDE}
    del source, target
    dtypes = {"tf32": torch.float32, "bfloat16": torch.bfloat16}
    if precision == "float16":
        dtypes["float16"] = torch.float16
    for name, dtype in dtypes.items():
        a, b = (torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device, dtype=dtype) for _ in range(2))
        out = torch.empty_like(a)
        matmul = time_call(f"matmul {name}", lambda: torch.mm(a, b, out=out), device, warmup, repeats)
        ceilings["matmul_tflops"][name] = 2 * MATMUL_SIDE ** 3 / matmul.median_ms / 1e9
        del a, b, out
    ceilings["floor_basis"] = "tf32" if precision == "float32" else precision
    torch.cuda.empty_cache()
    return ceilings


# ---------------------------------------------------------------------------------------------------------------------
# Components


def count_flops(fn: Callable[[], object]) -> int:
    """Convolution and matmul FLOPs of one call (forward and, if ``fn`` runs it, backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def ensemble_min_bytes(segmenter: torch.nn.Module, features: list[torch.Tensor], activation_bytes: int) -> int:
    """Least memory traffic of a full-map ensemble pass and its labelling: every feature map read once, every
    full-resolution activation (``E·w`` channels per hidden layer, ``E·K`` logits) written once and read once, the
    int64 labels written once."""
    config = segmenter.config
    pixels = features[0].shape[0] * config.resolution ** 2
    feature_bytes = sum(f.numel() * f.element_size() for f in features)
    activation_channels = config.ensemble_size * (sum(config.hidden) + config.num_classes)
    return feature_bytes + 2 * pixels * activation_channels * activation_bytes + pixels * 8


def roi_pixel_count(suite: Suite) -> int:
    """Pixels in the ROI of the Suite's edit: the painted square plus every pixel of the classes it covered."""
    original, edited = suite.edit_masks()
    return int(prepare_edit(suite.models, suite.ws, original, edited, EditConfig()).roi.sum())


def mode3_pieces(suite: Suite) -> list[tuple[str, str, str, Callable[[], object]]]:
    """(key, name, role, callable) of the mode-3 step and its parts, on the Suite's latent and edit masks."""
    models, G = suite.models, suite.generator
    original, edited = suite.edit_masks()
    edit = prepare_edit(models, suite.ws, original, edited, EditConfig())
    with torch.no_grad(), models.autocast():
        image, features = G.synthesis(suite.ws, noise_mode="const", return_features=True)
    upstream = [torch.randn_like(t) for t in (image, *features)]
    roi = edit.roi_pixels

    def g_forward_backward():
        ws = suite.ws.detach().requires_grad_(True)
        with models.autocast():
            outputs = G.synthesis(ws, noise_mode="const", return_features=True)
        torch.autograd.backward([outputs[0], *outputs[1]], upstream)

    def lpips_term():
        x = image.detach().requires_grad_(True)
        with models.autocast():
            loss = models.perceptual(x * edit.outside, edit.lpips_target).mean()  # the step's precomputed reference
        loss.backward()

    def segmentation_term():
        maps = [f.detach().requires_grad_(True) for f in features]
        with models.autocast():
            ce = roi_cross_entropy(models, maps, roi)
        ce.backward()

    def l2_term():
        x = image.detach().requires_grad_(True)
        with models.autocast():
            loss = F.mse_loss(x * edit.outside, edit.masked_original)
        loss.backward()

    return [("a", "G synthesis fwd+bwd to latent", "part", g_forward_backward),
            ("b", "LPIPS-VGG fwd+bwd to image", "part", lpips_term),
            ("c", "seg at ROI pixels + CE fwd+bwd", "part", segmentation_term),
            ("d", "L2 fwd+bwd", "part", l2_term),
            ("e", "whole EditOptimizer.step", "whole", edit.step)]


def mode1_pieces(suite: Suite) -> tuple[list[tuple[str, str, str, Callable[[], object]]], list[torch.Tensor]]:
    """(key, name, role, callable) of one-vector mode 1 and its parts, and the features its ensemble reads."""
    models, G = suite.models, suite.generator
    vectors, scales = suite.vectors[:1], torch.ones(1, device=suite.device)
    edited_ws = apply_vectors(models, suite.ws, vectors, scales).ws

    @torch.no_grad()
    def g_forward():
        with models.autocast():
            return G.synthesis(edited_ws, noise_mode="const", return_features=True)

    features = g_forward()[1]

    @torch.no_grad()
    def ensemble_forward():
        with models.autocast():
            return models.segmenter(features)

    pieces = [("f", "G synthesis fwd with features", "part", g_forward),
              ("g", "ensemble full map + labels", "part", lambda: _labels(models, features)),
              ("g1", "of which segmenter(features)", "detail", ensemble_forward),
              ("h", "whole apply_vectors", "whole", lambda: apply_vectors(models, suite.ws, vectors, scales))]
    return pieces, features


def measure_components(suite: Suite, ceilings: Optional[dict], warmup: int, repeats: int,
                       log: Callable[[str], None]) -> tuple[list[Component], dict[str, Callable[[], object]]]:
    """Every component of both items, and the two whole items' callables (for the kernel profile)."""
    device = suite.device
    matmul_tflops = ceilings["matmul_tflops"][ceilings["floor_basis"]] if ceilings else None
    mode1, features = mode1_pieces(suite)
    with torch.no_grad(), suite.models.autocast():
        activation_bytes = suite.segmenter(features).element_size()
    min_bytes = {"g": ensemble_min_bytes(suite.segmenter, features, activation_bytes)}
    components, wholes = [], {}
    log(f"{'component':48s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s} {'peak MiB':>9s} {'GFLOP':>9s} "
        f"{'TFLOP/s':>8s}")
    for item, pieces in ((MODE3, mode3_pieces(suite)), (MODE1, mode1)):
        for key, name, role, fn in pieces:
            measurement = time_call(f"{item} ({key}) {name}", fn, device, warmup, repeats)
            flops = count_flops(fn)
            seconds = measurement.median_ms / 1e3
            component = Component(item, key, name, role, measurement, flops / 1e9, flops / seconds / 1e12,
                                  flops / matmul_tflops / 1e9 if matmul_tflops else None)
            if key in min_bytes:
                component.min_bytes = min_bytes[key]
                if ceilings:
                    component.bandwidth_floor_ms = min_bytes[key] / ceilings["copy_gbps"] / 1e6
            components.append(component)
            if role == "whole":
                wholes[item] = fn
            peak = f"{measurement.peak_mib:9.0f}" if measurement.peak_mib is not None else "        -"
            log(f"{measurement.name[:48]:48s} {measurement.median_ms:10.2f} {measurement.min_ms:8.2f} "
                f"{measurement.max_ms:8.2f} {peak} {component.gflop:9.2f} {component.achieved_tflops:8.3f}")
    return components, wholes


def parts_over_whole(components: list[Component]) -> dict[str, float]:
    """Per item: the sum of its parts' median times ÷ the whole item's median time."""
    ratios = {}
    for item in (MODE3, MODE1):
        parts = sum(c.measurement.median_ms for c in components if c.item == item and c.role == "part")
        whole = next(c.measurement.median_ms for c in components if c.item == item and c.role == "whole")
        ratios[item] = parts / whole
    return ratios


# ---------------------------------------------------------------------------------------------------------------------
# Kernels


_COPY_TOKENS = ("memcpy", "memset", "direct_copy_kernel", "catarraybatchedcopy", "nchwtonhwc", "nhwctonchw")
_HEAD_CATEGORIES = (
    ("upsample/gather/scatter/index", ("upsample", "gather", "scatter", "index")),
    ("GEMM/conv", ("gemm", "conv", "cutlass", "sm90", "xmma", "cudnn", "implicit", "cublas")),
    ("reduction", ("reduce",)),
    ("element-wise", ("elementwise", "vectorized", "unrolled", "pointwise", "multi_tensor_apply")),
    ("copy/cat", ("copy", "cat")),
)
_DISTINCT_TOKEN = re.compile(r"\b[A-Za-z_]\w*(?:Functor|functor|Ops)\b|\b[A-Za-z_]\w*_kernel\w*\b|\bcutlass_\w+")
_GENERIC_WRAPPERS = {"BinaryFunctor", "AUnaryFunctor", "BUnaryFunctor"}  # say nothing about the operation


def _kernel_head(name: str) -> tuple[str, str]:
    """A kernel's qualified name without ``void``, and the rest of it (template arguments, parameters)."""
    name = name.removeprefix("void ").replace("(anonymous namespace)::", "")
    head = re.split(r"[<(]", name, maxsplit=1)[0]
    return head.rstrip(), name[len(head):]


def kernel_category(name: str) -> str:
    """One of ``CATEGORIES`` for a CUDA kernel (or memcpy/memset) name; see the module docstring for the order."""
    lowered = name.lower()
    if any(token in lowered for token in _COPY_TOKENS):
        return "copy/cat"
    head = _kernel_head(lowered)[0]
    for category, tokens in _HEAD_CATEGORIES:
        if any(token in head for token in tokens):
            return category
    return "other"


def short_kernel_name(name: str, width: int = 60) -> str:
    """The kernel's unqualified name plus the first two functors / kernels named in its template arguments, e.g.
    ``vectorized_elementwise_kernel[MulFunctor]``, cut to ``width`` characters."""
    head, rest = _kernel_head(name)
    tokens = list(dict.fromkeys(t for t in _DISTINCT_TOKEN.findall(rest) if t not in _GENERIC_WRAPPERS))[:2]
    short = head.rsplit("::", 1)[-1] + (f"[{', '.join(tokens)}]" if tokens else "")
    return short if len(short) <= width else short[:width - 1] + "…"


def summarize_kernels(kernels: list[tuple[str, float]], iterations: int) -> dict:
    """Per-iteration kernel time by category and the most expensive kernels, from ``(name, µs)`` records."""
    total_us = sum(us for _, us in kernels)
    by_category: dict[str, float] = defaultdict(float)
    by_name: dict[str, list] = {}
    for name, us in kernels:
        category = kernel_category(name)
        by_category[category] += us
        entry = by_name.setdefault(short_kernel_name(name), [category, 0, 0.0])
        entry[1] += 1
        entry[2] += us
    top = sorted(by_name.items(), key=lambda item: -item[1][2])[:TOP_KERNELS]
    share = (lambda us: 100 * us / total_us) if total_us else (lambda us: 0.0)
    return {
        "iterations": iterations,
        "kernel_ms_per_iter": total_us / iterations / 1e3,
        "kernels_per_iter": len(kernels) / iterations,
        "categories": {c: {"ms_per_iter": by_category[c] / iterations / 1e3, "percent": share(by_category[c])}
                       for c in CATEGORIES},
        "top_kernels": [{"name": name, "category": category, "calls_per_iter": calls / iterations,
                         "ms_per_iter": us / iterations / 1e3, "percent": share(us)}
                        for name, (category, calls, us) in top],
    }


def profile_kernels(name: str, fn: Callable[[], object], device: torch.device, iterations: int,
                    trace_dir: Optional[Path]) -> dict:
    """CUDA kernels of ``iterations`` calls of ``fn`` (after two warm-up calls), summarised."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        fn()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        torch.cuda.synchronize(device)
        wall_ms = (time.perf_counter() - start) * 1e3 / iterations
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace_dir / f"{re.sub(r'[^a-z0-9]+', '_', name.lower())}.json"))
    kernels = [(event.name, event.time_range.elapsed_us()) for event in prof.events()
               if event.device_type == torch.autograd.DeviceType.CUDA and not event.is_user_annotation]
    summary = summarize_kernels(kernels, iterations)
    summary["profiled_wall_ms_per_iter"] = wall_ms
    return summary


# ---------------------------------------------------------------------------------------------------------------------
# Report


def _ms(value: Optional[float], width: int = 9) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}s}"


def print_profile(item: str, profile: dict) -> None:
    categories = "  ".join(f"{c} {v['percent']:.0f}%" for c, v in profile["categories"].items())
    print(f"\n-- kernels of {item}: {profile['kernel_ms_per_iter']:.2f} ms/iteration in "
          f"{profile['kernels_per_iter']:.0f} kernels; wall (events) {profile['event_wall_ms']:.2f} ms, "
          f"gap {profile['gap_ms']:.2f} ms; profiled wall {profile['profiled_wall_ms_per_iter']:.2f} ms --")
    print(f"   {categories}")
    print(f"   {'kernel':60s} {'category':>14s} {'calls/it':>8s} {'ms/it':>8s} {'%':>5s}")
    for kernel in profile["top_kernels"]:
        print(f"   {kernel['name']:60s} {kernel['category'][:14]:>14s} {kernel['calls_per_iter']:8.1f} "
              f"{kernel['ms_per_iter']:8.3f} {kernel['percent']:5.1f}")


def print_summary(report: dict) -> None:
    """The compact table printed last (the device returns only the tail of the output)."""
    config, ceilings = report["config"], report["ceilings"]
    env = report["environment"]
    print(f"\n== summary: {env.get('gpu', env.get('cpu'))}, {config.resolution}² G, seg {config.seg_resolution}², "
          f"{config.precision}, torch {env['torch']} ==")
    print(f"mode-3 ROI: {report['roi_pixels']} pixels ({report['roi_pixels'] / config.seg_resolution ** 2:.0%} of the "
          f"segmentation)")
    if ceilings:
        matmul = ", ".join(f"{name} {value:.0f}" for name, value in ceilings["matmul_tflops"].items())
        print(f"ceilings: copy {ceilings['copy_gbps']:.0f} GB/s (read+write); matmul TFLOP/s {matmul}; "
              f"compute floors use {ceilings['floor_basis']}")
    else:
        print(f"ceilings: {report['ceilings_skipped']}")
    print(f"{'component':48s} {'ms':>8s} {'MiB':>7s} {'GFLOP':>8s} {'TFLOP/s':>8s} {'cfloor ms':>9s} "
          f"{'bwfloor ms':>10s}")
    for c in report["components"]:
        m = c.measurement
        peak = f"{m.peak_mib:7.0f}" if m.peak_mib is not None else f"{'-':>7s}"
        print(f"{m.name[:48]:48s} {m.median_ms:8.2f} {peak} {c.gflop:8.1f} {c.achieved_tflops:8.2f} "
              f"{_ms(c.compute_floor_ms)} {_ms(c.bandwidth_floor_ms, 10)}")
    print("parts ÷ whole: " + ", ".join(f"{item} {ratio:.2f}" for item, ratio in report["parts_over_whole"].items()))
    if report["profiles"]:
        short = {"GEMM/conv": "GEMM", "element-wise": "elem", "reduction": "reduce",
                 "upsample/gather/scatter/index": "gather", "copy/cat": "copy", "other": "other"}
        print(f"{'kernels':12s} {'wall ms':>8s} {'kernel ms':>9s} {'gap ms':>7s} {'launch/it':>9s} "
              + " ".join(f"{short[c]:>6s}" for c in CATEGORIES))
        for item, p in report["profiles"].items():
            print(f"{item:12s} {p['event_wall_ms']:8.2f} {p['kernel_ms_per_iter']:9.2f} {p['gap_ms']:7.2f} "
                  f"{p['kernels_per_iter']:9.0f} "
                  + " ".join(f"{p['categories'][c]['percent']:5.0f}%" for c in CATEGORIES))
    else:
        print(f"kernels: {report['profiles_skipped']}")


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available, else cpu")
    parser.add_argument("--resolution", type=int, default=512, help="generator resolution (32..1024, power of two)")
    parser.add_argument("--seg-resolution", type=int, help="segmentation resolution (default min(resolution, 512))")
    parser.add_argument("--channel-base", type=int, default=32768, help="generator channel_base (32768 = config-f)")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="EditingModels.precision (autocast) of every component")
    parser.add_argument("--roi-pixel-chunk", type=_positive_int, default=None,
                        help="EditingModels.roi_pixel_chunk: segment the ROI this many pixels at a time (default: all)")
    parser.add_argument("--steps", type=_positive_int, default=10, help="profiled iterations of each item")
    parser.add_argument("--repeats", type=_positive_int, default=20, help="timed repeats of each component")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each component's repeats")
    parser.add_argument("--json", help="write every number to this JSON file")
    parser.add_argument("--trace", type=Path, help="also write a chrome trace of each profiled item into this folder")
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (use --device cpu for a smoke test)")
    try:
        GeneratorConfig(resolution=args.resolution, channel_base=args.channel_base)
    except ValueError as error:
        parser.error(str(error))
    if args.seg_resolution is None:
        args.seg_resolution = min(args.resolution, 512)
    if not 16 <= args.seg_resolution <= args.resolution:
        parser.error(f"--seg-resolution must be in 16..{args.resolution} (the resolution), got {args.seg_resolution}")
    if args.warmup < 0:
        parser.error(f"--warmup must be ≥ 0, got {args.warmup}")
    return args


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    print(environment(device))
    report: dict = {"environment": environment(device), "ceilings": None, "profiles": {}}
    if on_cuda:
        report["ceilings"] = measure_ceilings(device, args.precision, args.warmup, args.repeats)
        print(f"ceilings: {report['ceilings']}")
    else:
        report["ceilings_skipped"] = "no CUDA device: copy/matmul ceilings and compute/bandwidth floors skipped"
        report["profiles_skipped"] = "no CUDA device: kernel profile (torch.profiler CUDA activity) skipped"
        print(f"{report['ceilings_skipped']}; {report['profiles_skipped']}")

    config = SuiteConfig(resolution=args.resolution, seg_resolution=args.seg_resolution,
                         channel_base=args.channel_base, precision=args.precision,
                         roi_pixel_chunk=args.roi_pixel_chunk, warmup=args.warmup,
                         repeats=args.repeats)
    report["config"] = config
    suite = Suite(config, device)
    report["roi_pixels"] = roi_pixel_count(suite)
    print(f"\n== components: {args.resolution}² G, seg {args.seg_resolution}², {args.precision} ==")
    components, wholes = measure_components(suite, report["ceilings"], args.warmup, args.repeats, print)
    report["components"] = components
    report["parts_over_whole"] = parts_over_whole(components)

    if on_cuda:
        for item, fn in wholes.items():
            profile = profile_kernels(item, fn, device, args.steps, args.trace)
            whole = next(c for c in components if c.item == item and c.role == "whole")
            profile["event_wall_ms"] = whole.measurement.median_ms
            profile["gap_ms"] = whole.measurement.median_ms - profile["kernel_ms_per_iter"]
            report["profiles"][item] = profile
            print_profile(item, profile)
    elif args.trace:
        print("--trace: no chrome traces without CUDA")

    if args.json:
        write_json(args.json, [report])
    print_summary(report)
    return report


if __name__ == "__main__":
    main()
