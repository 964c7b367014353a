"""Do edits do what was painted? A ground-truth benchmark of mode 3, the inversion and the library vectors.

The demo domain knows the truth: the renderer can change one parameter of a face and nothing else. For held-out faces
(render seeds no other stage uses) and edits of the six shipped vectors' parameters plus six more, in both
directions at two magnitudes, the benchmark does what a studio user does, with the engine called as the worker calls
it (``gpu_worker/tasks.py``: ``_embed``, ``_optimize``):

* render ``x`` (8-bit, as an uploaded PNG) and the true edit ``x′`` with masks ``m``, ``m′``;
* embed ``x`` → ``w`` (``EmbedConfig`` defaults, the bundle's encoder), ``x̂ = G(w)``, ``ŝ`` its segmentation;
* paint the true change into ``ŝ``: target = ``ŝ`` with the pixels where ``m ≠ m′`` taken from ``m′``;
* mode 3 (``optimize_edit``, ``EditConfig`` defaults, no edited classes, no encoder term: the worker's
  ``EditingModels`` carry none) → ``x_e``, ``s_e``.

Per edit: **follow** (pixel accuracy of ``s_e`` against the target inside the ROI; ``follow_painted`` on the painted
pixels only), **truth** (mean IoU of the changed classes of ``s_e`` against ``m′``, before = ``ŝ``), **progress**
(``(p̂(x_e) − p̂(x̂)) / (p′ − p)`` with the bundle's parameter regressor ``p̂`` on the parameter's [0, 1] scale; the
regressor's own reading of the true edit, ``(p̂(x′) − p̂(x)) / (p′ − p)``, bounds it), LPIPS to ``x′`` (before:
``x̂``), PSNR and LPIPS outside the ROI against ``x̂``, ROI size. Per face: inversion PSNR, LPIPS, per-part IoU of
``ŝ`` vs ``m`` and the spread between two embeddings of the same render (the second one alone, as the studio embeds).
Library vectors: on other held-out faces, each vector at scale 1 (mode 1): how far it moves its parameter, as a
share of the renderer's edit behind it. Also seconds per embedding and per edit.

Variants (``--variant NAME:key=value,...``) change ``EditConfig`` fields and ``roi=classes`` (the old rule: whole
edited classes), ``encoder=1`` (the encoder-consistency term), ``embed_steps=N``, and ``pti=1`` (pivotal tuning,
``editor_core.pivotal``: every face's generator is tuned around its inversion, and the inversion figures and the
edits are measured on the tuned copies, whose features the segmentation branch reads) with ``pti_<field>=value``
for ``PivotalConfig`` fields (``pti_steps``, ``pti_lr``, ``pti_locality_weight``, …; any of them implies ``pti=1``).
All variants of a run share the inversions. ``--vector-pti NAME`` measures the library vectors a second time, on
each vector face's generator tuned as variant NAME tunes (vectors apply in the base's W+). Writes one JSON report
(``--json``) and a contact sheet per variant (``--sheet-dir``): rows are edits; columns x, x′, x̂, x_e, m, m′, ŝ,
target, s_e, ROI over x̂.

    python3 bench/edit_truth.py --json $OUT/edit_truth.json --sheet-dir $OUT            # GPU: 8 faces × 48 edits
    python3 bench/edit_truth.py --faces 1 --params hair_length eye_size --magnitudes 0.4 --edit-steps 10 \\
        --embed-steps 20 --vector-faces 2                                                # a small CPU case
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench import emit_report  # noqa: E402 (needs the path above when run as a script)
from editor_core.bundle import BundleLayout, ModelBundle, load_bundle, load_vectors  # noqa: E402
from editor_core.domains import toonface  # noqa: E402
from editor_core.domains.toonface import PARAM_SCHEMA, ToonFaceParams  # noqa: E402
from editor_core.editing import (EditConfig, EditingModels, apply_vectors, changed_classes, edit_roi,  # noqa
                                 optimize_edit, refine_config, refine_vectors, render_and_segment, resize_mask)
from editor_core.inversion import EmbedConfig, embed_image  # noqa: E402
from editor_core.metrics import class_iou, image_distances, masked_psnr, mean_iou, psnr  # noqa: E402
from editor_core.perceptual import get_perceptual_loss  # noqa: E402
from editor_core.pivotal import PivotalConfig, apply_delta, tune_generator  # noqa: E402
from editor_core.training.demo_bundle.edits import DEMO_EDITS, transfer_overrides  # noqa: E402
from editor_core.training.demo_bundle.report import mask_image  # noqa: E402
from editor_core.training.param_regressor import load_param_regressor, target_names  # noqa: E402

# Render seeds no stage of the bundle (RENDER_SEEDS 101–110, SEED_STREAMS) and no other study (111) uses.
EDIT_FACES_SEED = 121
VECTOR_FACES_SEED = 122
SHIPPED_PARAMS = tuple(edit.param for edit in DEMO_EDITS)
MORE_PARAMS = ("eyebrow_angle", "ear_size", "fringe", "head_width", "jaw_roundness", "gaze_x")
EDIT_PARAMS = SHIPPED_PARAMS + MORE_PARAMS
MIN_PART_PIXELS = 20  # parts smaller than this in the true mask are not scored by the per-part IoU
PTI_KEYS = {f"pti_{f.name}" for f in dataclasses.fields(PivotalConfig) if f.name != "tuned_prefixes"}
VARIANT_KEYS = {f.name for f in dataclasses.fields(EditConfig)} | {"roi", "encoder", "embed_steps", "pti"} | PTI_KEYS


@dataclasses.dataclass(frozen=True)
class Variant:
    """One setting of the studio to measure: ``EditConfig`` overrides plus the bench's own keys."""

    name: str
    config: EditConfig
    whole_classes: bool = False   # roi=classes: the changed classes join the ROI whole (the rule before issue 21)
    encoder: bool = False         # encoder=1: EditingModels with the bundle's encoder (consistency term)
    embed_steps: Optional[int] = None
    pivotal: Optional[PivotalConfig] = None   # pti=1: edit on each face's tuned generator

    @classmethod
    def parse(cls, text: str, steps: Optional[int]) -> "Variant":
        """``NAME`` or ``NAME:key=value,key=value``; ``steps`` (``--edit-steps``) overrides the config's steps."""
        name, _, spec = text.partition(":")
        if not name:
            raise ValueError(f"variant {text!r} has no name")
        fields: dict[str, Any] = {}
        options: dict[str, Any] = {}
        pti: dict[str, Any] = {}
        for item in filter(None, spec.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key not in VARIANT_KEYS:
                raise ValueError(f"variant {text!r}: {item!r} is not key=value with a key of {sorted(VARIANT_KEYS)}")
            if key == "roi":
                if value not in ("changed", "classes"):
                    raise ValueError(f"variant {text!r}: roi must be 'changed' or 'classes', got {value!r}")
                options["whole_classes"] = value == "classes"
            elif key == "encoder":
                options["encoder"] = value not in ("0", "false", "no")
            elif key == "embed_steps":
                options["embed_steps"] = int(value)
            elif key == "pti":
                options["pti"] = value not in ("0", "false", "no")
            elif key in PTI_KEYS:
                kind = type(getattr(PivotalConfig, key[4:]))
                pti[key[4:]] = kind(float(value)) if kind is int else kind(value)
            else:
                kind = type(getattr(EditConfig, key))
                fields[key] = kind(float(value)) if kind is int else kind(value)
        if steps is not None:
            fields["steps"] = steps
        enabled = options.pop("pti", None)
        if enabled is False and pti:
            raise ValueError(f"variant {text!r}: {sorted(pti)} set pivotal tuning, which pti=0 turns off")
        if enabled or pti:
            options["pivotal"] = PivotalConfig(**pti)
        return cls(name, EditConfig(**fields), **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="demo")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--faces", type=int, default=8, help="held-out faces for the edits")
    parser.add_argument("--params", nargs="+", default=list(EDIT_PARAMS), help="renderer parameters to edit")
    parser.add_argument("--magnitudes", type=float, nargs="+", default=[0.2, 0.4],
                        help="sizes of the change, as fractions of the parameter's range (each in both directions)")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME[:key=value,...] (repeatable; default: one 'studio' variant with the defaults)")
    parser.add_argument("--edit-steps", type=int, default=None, help="mode-3 steps of every variant (default: theirs)")
    parser.add_argument("--embed-steps", type=int, default=None, help=f"default: EmbedConfig ({EmbedConfig.steps})")
    parser.add_argument("--vector-faces", type=int, default=32, help="held-out faces for the library vectors (0: skip)")
    parser.add_argument("--vector-refine", type=int, default=0, metavar="STEPS",
                        help="also measure each vector applied and refined this many steps (mode 2; 0: mode 1 only)")
    parser.add_argument("--vector-pti", default=None, metavar="VARIANT",
                        help="also measure the vectors on each vector face's generator tuned as this pti variant "
                             "tunes")
    parser.add_argument("--vectors-from", type=Path, action="append", default=[], metavar="DIR",
                        help="also measure the vectors in this folder (*.safetensors of the bundle's generator) on "
                             "the same faces, e.g. an earlier bundle's vectors/ (repeatable)")
    parser.add_argument("--spread-faces", type=int, default=2, help="faces embedded a second time, alone")
    parser.add_argument("--edit-batch", type=int, default=48, help="edits optimised together (each its own loss)")
    parser.add_argument("--sheet-rows", type=int, default=12)
    parser.add_argument("--sheet-dir", type=Path, default=None, help="where the contact sheets go (PNG)")
    parser.add_argument("--seed", type=int, default=0, help="offsets the render seeds")
    parser.add_argument("--minutes", type=float, default=None,
                        help="start no further variant after this many minutes (the report says which ran)")
    parser.add_argument("--json", type=Path, default=None, help="the report; rewritten after every variant")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parsed and checked arguments (``SystemExit`` with a message on bad ones, like any argparse error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("faces", "edit_batch", "sheet_rows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1")
    for name in ("vector_faces", "spread_faces", "vector_refine"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 0")
    if args.spread_faces > args.faces:
        parser.error("--spread-faces cannot exceed --faces")
    unknown = [p for p in args.params if p not in PARAM_SCHEMA or p == "noise_seed" or p.endswith("_hue")]
    if unknown:
        parser.error(f"--params: {unknown} are not shape parameters of the renderer; e.g. {list(EDIT_PARAMS)}")
    if not all(0 < m <= 0.5 for m in args.magnitudes):
        parser.error("--magnitudes are fractions of a parameter's range in (0, 0.5]")
    for name in ("edit_steps", "embed_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1")
    try:
        args.variants = [Variant.parse(text, args.edit_steps) for text in (args.variant or ["studio"])]
    except (ValueError, TypeError) as bad:
        parser.error(str(bad))
    if len({v.name for v in args.variants}) != len(args.variants):
        parser.error("variant names must differ")
    missing = [str(folder) for folder in args.vectors_from if not any(folder.glob("*.safetensors"))]
    if missing:
        parser.error(f"--vectors-from: no *.safetensors in {missing}")
    if args.vectors_from and not args.vector_faces:
        parser.error("--vectors-from measures vectors on the --vector-faces: give at least one")
    tuned_variants = [v.name for v in args.variants if v.pivotal is not None]
    if args.vector_pti is not None and args.vector_pti not in tuned_variants:
        parser.error(f"--vector-pti must name a variant with pti=1: one of {tuned_variants}")
    return args


# ---------------------------------------------------------------------------------------------------------------------
# Faces and edits


@dataclasses.dataclass
class Face:
    params: ToonFaceParams   # one face: every value a Tensor[1]
    image: torch.Tensor      # [1, 3, R, R], 8-bit like an uploaded PNG
    mask: torch.Tensor       # [1, R, R]


@dataclasses.dataclass
class Edit:
    face: int
    param: str
    delta: float             # on the parameter's own scale
    magnitude: float         # fraction of its range
    image: torch.Tensor      # x′ [1, 3, R, R]
    mask: torch.Tensor       # m′ [1, R, R]


def eight_bit(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` rounded to what an 8-bit PNG holds (the studio embeds uploaded files)."""
    return ((images + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1


def draw_faces(count: int, seed: int, params: Sequence[str], reach: float, size: int, device: torch.device
               ) -> list[Face]:
    """``count`` random faces whose edited parameters sit in the middle of their range (``± reach`` of it stays
    inside), so that every face takes every edit in both directions."""
    drawn = toonface.sample_params(count, seed, device=device)
    rng = torch.Generator().manual_seed(seed + 1)
    for name in params:
        spec = PARAM_SCHEMA[name]
        span = spec.high - spec.low
        middle = spec.low + span * (reach + (1 - 2 * reach) * torch.rand(count, generator=rng))
        drawn = toonface.with_param(drawn, name, middle.to(device))
    images, masks = toonface.render(drawn, size)
    return [Face({k: v[i:i + 1] for k, v in drawn.items()}, eight_bit(images[i:i + 1]), masks[i:i + 1])
            for i in range(count)]


def true_edits(faces: list[Face], params: Sequence[str], magnitudes: Sequence[float], size: int) -> list[Edit]:
    """Every parameter × magnitude × direction of every face, rendered; edits that change no mask pixel are left
    out (nothing to paint)."""
    edits = []
    for index, face in enumerate(faces):
        for name in params:
            spec = PARAM_SCHEMA[name]
            for magnitude in magnitudes:
                for sign in (1, -1):
                    delta = sign * magnitude * (spec.high - spec.low)
                    value = (face.params[name] + delta).clamp(spec.low, spec.high)
                    image, mask = toonface.render(toonface.with_param(face.params, name, value), size)
                    if torch.equal(mask, face.mask):
                        continue
                    edits.append(Edit(index, name, delta, magnitude, eight_bit(image), mask))
    return edits


# ---------------------------------------------------------------------------------------------------------------------
# Measures


def studio_models(bundle: ModelBundle, device: torch.device, encoder: bool,
                  generator: Optional[torch.nn.Module] = None) -> EditingModels:
    """``EditingModels`` as ``gpu_worker.engine_cache.editing_models`` builds them (LPIPS-VGG, float32, no encoder),
    or with the bundle's encoder for the consistency term; ``generator``: a tuned copy of the bundle's (which keeps
    its id: vectors apply in the same W+)."""
    return EditingModels(generator=generator or bundle.generator, segmenter=bundle.segmenter,
                         perceptual=get_perceptual_loss("vgg", device), generator_id=bundle.generator_id,
                         encoder=bundle.encoder if encoder else None)


def embed(bundle: ModelBundle, images: torch.Tensor, steps: Optional[int]) -> tuple[torch.Tensor, Any, float]:
    """The worker's ``_embed``: ``EmbedConfig(steps=steps or EmbedConfig.steps)`` from the bundle's encoder.
    Returns ``(ws, result, seconds)``."""
    config = EmbedConfig(steps=steps or EmbedConfig.steps)
    began = time.perf_counter()
    result = embed_image(bundle.generator, bundle.encoder, images, config)
    _synchronise(images.device)
    return result.ws.detach(), result, time.perf_counter() - began


@contextlib.contextmanager
def batched_synthesis(generators: Sequence[torch.nn.Module]) -> Iterator[None]:
    """On CUDA, the generators' train mode for batches of edits: the shared-weight modulated convolution, the same
    maths as eval mode's per-sample grouped one and much faster for a batch (``DemoPipeline._batched_synthesis``).
    The single-edit timing runs in eval mode, as the worker does."""
    if next(generators[0].parameters()).device.type != "cuda":
        yield
        return
    for generator in generators:
        generator.train()
    try:
        yield
    finally:
        for generator in generators:
            generator.eval()


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ParamReader:
    """The bundle's render-parameter regressor, read on one parameter's [0, 1] target column."""

    def __init__(self, bundle_dir: Path, device: torch.device):
        self.regressor = load_param_regressor(BundleLayout(bundle_dir).regressor, device)
        self.columns = {name: index for index, name in enumerate(target_names())}

    @torch.no_grad()
    def read(self, images: torch.Tensor, param: str) -> torch.Tensor:
        """``[B]`` estimated ``(p − low) / (high − low)``."""
        return self.regressor(images)[:, self.columns[param]].float()

    @staticmethod
    def scaled(param: str, delta: float) -> float:
        spec = PARAM_SCHEMA[param]
        return delta / (spec.high - spec.low)


def part_ious(labels: torch.Tensor, truth: torch.Tensor, num_classes: int) -> dict[int, float]:
    """IoU of every part with ≥ ``MIN_PART_PIXELS`` pixels in ``truth`` ``[1, h, w]`` (one face)."""
    iou = class_iou(labels.cpu(), truth.cpu(), num_classes)
    counts = torch.bincount(truth.flatten().cpu(), minlength=num_classes)
    return {k: float(iou[k]) for k in range(num_classes) if counts[k] >= MIN_PART_PIXELS}


def summary(values: Sequence[float]) -> dict[str, Optional[float]]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"median": None, "mean": None, "n": 0}
    spread = {"p10": round(statistics.quantiles(finite, n=10)[0], 4)} if len(finite) >= 2 else {}
    return {"median": round(statistics.median(finite), 4), "mean": round(statistics.fmean(finite), 4),
            **spread, "n": len(finite)}


# ---------------------------------------------------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    bundle = load_bundle(args.bundle, device=device)
    if bundle.segmenter is None or bundle.encoder is None:
        raise SystemExit(f"{args.bundle} needs a segmentation branch and an encoder")
    size = bundle.generator.config.resolution
    seg_size = bundle.segmenter.config.resolution
    num_classes = bundle.segmenter.config.num_classes
    reader = ParamReader(args.bundle, device)
    perceptual = get_perceptual_loss("vgg", device)
    clock = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - clock:6.0f} s] {message}", file=sys.stderr, flush=True)

    faces = draw_faces(args.faces, EDIT_FACES_SEED + 1000 * args.seed, args.params, max(args.magnitudes), size,
                       device)
    edits = true_edits(faces, args.params, args.magnitudes, size)
    images = torch.cat([f.image for f in faces])
    masks = torch.cat([f.mask for f in faces])
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "bundle": str(args.bundle), "generator": bundle.generator_id,
        "faces": args.faces, "params": args.params, "magnitudes": args.magnitudes, "edits": len(edits),
        "seeds": {"edit_faces": EDIT_FACES_SEED + 1000 * args.seed,
                  "vector_faces": VECTOR_FACES_SEED + 1000 * args.seed},
        "variants": {}}

    inversions: dict[int, dict[str, Any]] = {}
    for embed_steps in sorted({v.embed_steps or args.embed_steps or EmbedConfig.steps for v in args.variants}):
        ws, result, seconds = embed(bundle, images, embed_steps)
        inversion = {"ws": ws, "steps": embed_steps, "seconds_per_image_batched": seconds / len(faces)}
        base_models = EditingModels(bundle.generator, bundle.segmenter, torch.nn.Identity(), bundle.generator_id)
        inversion["figures"] = measure_inversion([base_models] * len(faces), ws, result.psnr, result.lpips, masks,
                                                 seg_size, num_classes)
        spread = []
        for index in range(args.spread_faces):   # the studio embeds one image per job
            ws_alone, result_alone, seconds = embed(bundle, images[index:index + 1], embed_steps)
            with torch.no_grad():
                first, second = (bundle.generator.synthesis(w, noise_mode="const") for w in (ws[index:index + 1],
                                                                                           ws_alone))
            lpips, l2 = image_distances(perceptual, first, second, 256)
            spread.append({"psnr_between": float(psnr(l2)[0]), "lpips_between": float(lpips[0]),
                           "latent_rms": float((ws[index] - ws_alone[0]).square().mean().sqrt()),
                           "seconds": round(seconds, 3)})
        inversion["figures"]["spread"] = spread
        inversion["figures"]["seconds_per_embedding"] = (statistics.fmean(s["seconds"] for s in spread) if spread
                                                         else None)
        inversions[embed_steps] = inversion
        log(f"inversion, {embed_steps} steps: PSNR {inversion['figures']['psnr']['mean']}, "
            f"parts ≥ 0.5: {inversion['figures']['parts_at_least_0.5']}")
    report["inversion"] = {steps: inv["figures"] for steps, inv in inversions.items()}

    for variant in args.variants:
        if args.minutes is not None and time.monotonic() - clock > 60 * args.minutes:
            log(f"{variant.name}: not run (the --minutes budget is spent)")
            continue
        inversion = inversions[variant.embed_steps or args.embed_steps or EmbedConfig.steps]
        tuning: dict[str, Any] = {}
        if variant.pivotal is None:
            face_models = [studio_models(bundle, device, variant.encoder)] * len(faces)
        else:
            generators, tuned = tune_faces(bundle, variant.pivotal, inversion["ws"], images, perceptual)
            face_models = [studio_models(bundle, device, variant.encoder, g) for g in generators]
            tuning = {"seconds_per_image": tuned["seconds_per_image"],
                      "inversion": measure_inversion(face_models, inversion["ws"], tuned["psnr"], tuned["lpips"],
                                                     masks, seg_size, num_classes)}
            log(f"{variant.name}: tuned in {tuning['seconds_per_image']} s per face, PSNR "
                f"{tuning['inversion']['psnr']['mean']}, parts ≥ 0.5: {tuning['inversion']['parts_at_least_0.5']}")
        with batched_synthesis(list({id(m.generator): m.generator for m in face_models}.values())):
            entry = measure_edits(face_models, variant, faces, edits, inversion["ws"], reader, perceptual, args, log)
        if variant.pivotal is not None:
            entry["pivotal"] = {"config": dataclasses.asdict(variant.pivotal), **tuning}
        sheet = entry.pop("sheet")
        if args.sheet_dir is not None and sheet:
            save_sheet(sheet, args.sheet_dir / f"edit_truth_{variant.name}.png")
        report["variants"][variant.name] = entry
        log(f"{variant.name}: " + ", ".join(f"{k} {v['median']}" for k, v in entry["overall"].items()
                                            if isinstance(v, dict) and "median" in v))
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.vector_faces:
        vector_faces = embed_vector_faces(bundle, args, size, device)
        base_models = EditingModels(bundle.generator, bundle.segmenter, torch.nn.Identity(), bundle.generator_id)
        refining = EditingModels(bundle.generator, bundle.segmenter, perceptual, bundle.generator_id)
        report["vectors"] = measure_vectors(bundle, reader, vector_faces, [base_models] * args.vector_faces, size,
                                            refine=(refining, args.vector_refine) if args.vector_refine else None)
        log("vectors: " + ", ".join(f"{k} {v['share_statistic_at_least_0.7']}" for k, v in report["vectors"].items()
                                    if isinstance(v, dict)))
        for folder in args.vectors_from:
            vectors = load_vectors(sorted(folder.glob("*.safetensors")), bundle.generator_id)
            other = dataclasses.replace(bundle, vectors=vectors)
            report.setdefault("vectors_from", {})[str(folder)] = measure_vectors(
                other, reader, vector_faces, [base_models] * args.vector_faces, size)
        if args.vector_pti is not None:
            config = next(v.pivotal for v in args.variants if v.name == args.vector_pti)
            generators, tuning = tune_faces(bundle, config, vector_faces["ws"], vector_faces["images"], perceptual)
            tuned_models = [EditingModels(g, bundle.segmenter, torch.nn.Identity(), bundle.generator_id)
                            for g in generators]
            report["vectors_pti"] = {"variant": args.vector_pti, "seconds_per_image": tuning["seconds_per_image"],
                                     "psnr": summary(tuning["psnr"].tolist()),
                                     **measure_vectors(bundle, reader, vector_faces, tuned_models, size)}
            log("vectors on tuned copies: " + ", ".join(f"{k} {v['share_statistic_at_least_0.7']}"
                                                       for k, v in report["vectors_pti"].items()
                                                       if isinstance(v, dict) and "param" in v))
    report["minutes"] = round((time.monotonic() - clock) / 60, 2)
    return report


def tune_faces(bundle: ModelBundle, config: PivotalConfig, ws: torch.Tensor, images: torch.Tensor,
               perceptual: torch.nn.Module) -> tuple[list[torch.nn.Module], dict[str, Any]]:
    """Pivotal tuning of the bundle's generator around every face's inversion, one face at a time as the studio
    would: the tuned copies (``apply_delta`` of each delta) and ``seconds_per_image``, ``psnr`` and ``lpips`` ``[F]``
    of the tuned copies' reconstructions."""
    generators, seconds, psnrs, lpipses = [], [], [], []
    for index in range(len(ws)):
        began = time.perf_counter()
        result = tune_generator(bundle.generator, ws[index:index + 1], images[index:index + 1], config, perceptual)
        generators.append(apply_delta(bundle.generator, result.delta, bundle.generator_id))
        _synchronise(images.device)
        seconds.append(time.perf_counter() - began)
        psnrs.append(result.psnr)
        lpipses.append(result.lpips)
    return generators, {"seconds_per_image": round(statistics.fmean(seconds), 2), "psnr": torch.cat(psnrs),
                        "lpips": torch.cat(lpipses)}


def measure_inversion(face_models: Sequence[EditingModels], ws: torch.Tensor, psnrs: torch.Tensor,
                      lpipses: torch.Tensor, masks: torch.Tensor, seg_size: int, num_classes: int) -> dict[str, Any]:
    """PSNR and LPIPS ``[F]`` of the inversions as given; part IoUs of each face's segmentation (its models' ``ŝ``)
    against its true mask."""
    labels = torch.cat([render_and_segment(face_models[i], ws[i:i + 1])[1] for i in range(len(ws))])
    truth = resize_mask(masks, seg_size)
    per_face = [part_ious(labels[i:i + 1], truth[i:i + 1], num_classes) for i in range(len(ws))]
    names = toonface.TOONFACE_SCHEMA["class_names"]
    pooled = class_iou(labels.cpu(), truth.cpu(), num_classes)
    return {"psnr": summary(psnrs.tolist()), "lpips": summary(lpipses.tolist()),
            "miou": round(float(pooled.nanmean()), 4),
            "per_class_iou": {names[k]: round(float(v), 4) for k, v in enumerate(pooled.tolist()) if math.isfinite(v)},
            "parts_at_least_0.5": round(statistics.fmean(
                statistics.fmean(v >= 0.5 for v in face.values()) for face in per_face), 4),
            "worst_part_per_face": [{"class": names[min(face, key=face.get)], "iou": round(min(face.values()), 4)}
                                    for face in per_face]}


def edit_chunks(edits: list[Edit], face_models: Sequence[EditingModels], size: int) -> Iterator[list[Edit]]:
    """Runs of at most ``size`` consecutive edits whose faces share their models (all of them without pivotal
    tuning; one face's with it)."""
    chunk: list[Edit] = []
    for edit in edits:
        if chunk and (len(chunk) == size or face_models[edit.face] is not face_models[chunk[0].face]):
            yield chunk
            chunk = []
        chunk.append(edit)
    if chunk:
        yield chunk


def measure_edits(face_models: Sequence[EditingModels], variant: Variant, faces: list[Face], edits: list[Edit],
                  ws: torch.Tensor, reader: ParamReader, perceptual: torch.nn.Module, args: argparse.Namespace, log
                  ) -> dict[str, Any]:
    """Mode 3 on every edit (``args.edit_batch`` at a time; each image's loss is its own) with its face's models,
    and the figures."""
    device, size = face_models[0].device, face_models[0].generator.config.resolution
    seg_size, num_classes = face_models[0].seg_resolution, face_models[0].num_classes
    base_images, base_labels = zip(*(render_and_segment(face_models[i], ws[i:i + 1]) for i in range(len(faces))))
    rows, follow_curves, sheet = [], [], {}
    seconds, single_edit_seconds, done = 0.0, None, 0
    # Contact-sheet rows: (face, parameter, direction) at the largest magnitude, spread over faces and parameters.
    wanted = {(k % len(faces), args.params[k % len(args.params)], k % 2 == 0): k for k in range(args.sheet_rows)}
    for chunk in edit_chunks(edits, face_models, args.edit_batch):
        done += len(chunk)
        models = face_models[chunk[0].face]
        index = torch.tensor([e.face for e in chunk], device=device)
        original = torch.cat([base_labels[e.face] for e in chunk])
        true_before = resize_mask(torch.cat([faces[e.face].mask for e in chunk]), seg_size)
        true_after = resize_mask(torch.cat([e.mask for e in chunk]), seg_size)
        painted = true_before != true_after
        target = torch.where(painted, true_after, original)
        classes = [changed_classes(original[i:i + 1], target[i:i + 1]) for i in range(len(chunk))]
        keep = [i for i in range(len(chunk)) if classes[i]]   # the inversion may already show the change
        if not keep:
            continue
        chunk = [chunk[i] for i in keep]
        keep_t = torch.tensor(keep, device=device)
        index, original, target, painted = index[keep_t], original[keep_t], target[keep_t], painted[keep_t]
        true_after = true_after[keep_t]
        classes = [classes[i] for i in keep]
        # The old rule (roi=classes): every class the paint touches joins the ROI whole, as an explicit ROI.
        roi = (torch.cat([edit_roi(original[i:i + 1], target[i:i + 1], classes[i], variant.config.dilation_kernel,
                                   variant.config.dilation_iterations) for i in range(len(chunk))])
               if variant.whole_classes else None)
        began = time.perf_counter()
        result = optimize_edit(models, ws[index], original, target, variant.config, roi=roi)
        _synchronise(device)
        seconds += time.perf_counter() - began
        follow_curves.append((len(chunk), [step["follow"] for step in result.history]))
        if single_edit_seconds is None:   # what one studio job takes (warmed up by the batch)
            was_training = models.generator.training
            models.generator.eval()
            began = time.perf_counter()
            optimize_edit(models, ws[index[:1]], original[:1], target[:1], variant.config,
                          roi=None if roi is None else roi[:1])
            _synchronise(device)
            single_edit_seconds = time.perf_counter() - began
            models.generator.train(was_training)
        x_hat = torch.cat([base_images[e.face] for e in chunk])
        x_true = torch.cat([e.image for e in chunk])
        x_face = torch.cat([faces[e.face].image for e in chunk])
        with torch.no_grad():
            lpips_after = perceptual(result.image, x_true)
            lpips_before = perceptual(x_hat, x_true)
            outside = (~resize_mask(result.roi, size))[:, None].float()
            lpips_outside = perceptual(result.image * outside, x_hat * outside)
        reads = {name: {} for name in ("edited", "inverted", "true_after", "true_before")}
        for param in {e.param for e in chunk}:
            for name, images in (("edited", result.image), ("inverted", x_hat), ("true_after", x_true),
                                 ("true_before", x_face)):
                reads[name][param] = reader.read(images, param)
        for i, edit in enumerate(chunk):
            region = result.roi[i]
            scale = reader.scaled(edit.param, edit.delta)
            readable = float(reads["true_after"][edit.param][i] - reads["true_before"][edit.param][i]) / scale
            moved = float(reads["edited"][edit.param][i] - reads["inverted"][edit.param][i]) / scale
            changed = classes[i]
            rows.append({
                "face": edit.face, "param": edit.param, "delta": round(edit.delta, 4), "magnitude": edit.magnitude,
                "roi_pixels": int(region.sum()), "painted_pixels": int(painted[i].sum()),
                "follow": float((result.mask[i][region] == target[i][region]).float().mean()),
                "follow_before": float((original[i][region] == target[i][region]).float().mean()),
                "follow_painted": float((result.mask[i][painted[i]] == target[i][painted[i]]).float().mean()),
                "follow_painted_before": float((original[i][painted[i]] == target[i][painted[i]]).float().mean()),
                "truth": mean_iou(result.mask[i:i + 1], true_after[i:i + 1], num_classes, classes=changed),
                "truth_before": mean_iou(original[i:i + 1], true_after[i:i + 1], num_classes, classes=changed),
                "progress": moved, "regressor_reads": readable,
                "progress_of_readable": moved / readable if abs(readable) > 0.05 else None,
                "lpips_to_truth": float(lpips_after[i]), "lpips_to_truth_before": float(lpips_before[i]),
                "outside_psnr": float(masked_psnr(result.image[i:i + 1], x_hat[i:i + 1], outside[i:i + 1])),
                "outside_lpips": float(lpips_outside[i])})
            key = (edit.face, edit.param, edit.delta > 0)
            if edit.magnitude == max(args.magnitudes) and key in wanted:
                sheet[wanted[key]] = _sheet_row(faces[edit.face], edit, x_hat[i], result.image[i], original[i],
                                                target[i], result.mask[i], region, size)
        log(f"{variant.name}: {done}/{len(edits)} edits")
    return {"config": dataclasses.asdict(variant.config), "whole_classes": variant.whole_classes,
            "encoder": variant.encoder, "seconds_per_edit_batched": round(seconds / max(len(rows), 1), 4),
            "seconds_single_edit": None if single_edit_seconds is None else round(single_edit_seconds, 3),
            "overall": _aggregate(rows), "follow_curve": _mean_curve(follow_curves),
            "by_param": {p: _aggregate([r for r in rows if r["param"] == p]) for p in args.params},
            "by_magnitude": {str(m): _aggregate([r for r in rows if r["magnitude"] == m]) for m in args.magnitudes},
            "rows": rows, "sheet": [sheet[k] for k in sorted(sheet)]}


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("follow", "follow_before", "follow_painted", "follow_painted_before", "truth", "truth_before",
            "progress", "regressor_reads", "progress_of_readable", "lpips_to_truth", "lpips_to_truth_before",
            "outside_psnr", "outside_lpips", "roi_pixels", "painted_pixels")
    figures = {key: summary([r[key] for r in rows]) for key in keys}
    figures["edits"] = len(rows)
    figures["lpips_ratio_median"] = (round(figures["lpips_to_truth"]["median"] / figures["lpips_to_truth_before"]
                                           ["median"], 4) if rows else None)
    return figures


def _mean_curve(curves: list[tuple[int, list[float]]]) -> list[float]:
    """Edit-weighted mean follow (inside the ROI, before each step's update) per step."""
    if not curves:
        return []
    steps = min(len(c) for _, c in curves)
    total = sum(n for n, _ in curves)
    return [round(sum(n * c[s] for n, c in curves) / total, 4) for s in range(steps)]


def _sheet_row(face: Face, edit: Edit, inverted: torch.Tensor, edited: torch.Tensor, original: torch.Tensor,
               target: torch.Tensor, labels: torch.Tensor, roi: torch.Tensor, size: int) -> torch.Tensor:
    """``[10, 3, R, R]``: x, x′, x̂, x_e, m, m′, ŝ, target, s_e, ROI (tinted) over x̂."""
    def coloured(mask: torch.Tensor) -> torch.Tensor:
        return mask_image(resize_mask(mask[None], size)[0]).to(inverted.device)

    region = resize_mask(roi[None], size)[0].to(inverted.dtype)
    tint = torch.tensor([1.0, -1.0, 1.0], device=inverted.device)[:, None, None]
    highlighted = inverted * (1 - 0.5 * region) + tint * 0.5 * region
    return torch.stack([face.image[0], edit.image[0], inverted, edited, coloured(face.mask[0]),
                        coloured(edit.mask[0]), coloured(original), coloured(target), coloured(labels),
                        highlighted]).detach().cpu()


def embed_vector_faces(bundle: ModelBundle, args: argparse.Namespace, size: int, device: torch.device
                       ) -> dict[str, Any]:
    """The held-out faces of the vectors measure, whose parameters leave room for every vector's edit: their
    ``params``, 8-bit ``images``, ``true_masks`` and inversions ``ws``."""
    count = args.vector_faces
    seed = VECTOR_FACES_SEED + 1000 * args.seed
    params = toonface.sample_params(count, seed, device=device)
    for name, value in transfer_overrides(count, seed).items():
        params = toonface.with_param(params, name, value.to(device))
    images, true_masks = toonface.render(params, size)
    images = eight_bit(images)
    ws, _, _ = embed(bundle, images, args.embed_steps)
    return {"params": params, "images": images, "true_masks": true_masks, "ws": ws}


def face_runs(face_models: Sequence[EditingModels], size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of runs of at most ``size`` consecutive faces that share their models."""
    runs: list[tuple[int, int]] = []
    for index, models in enumerate(face_models):
        start = runs[-1][0] if runs else 0
        if runs and index - start < size and models is face_models[start]:
            runs[-1] = (start, index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def measure_vectors(bundle: ModelBundle, reader: ParamReader, faces: dict[str, Any],
                    face_models: Sequence[EditingModels], size: int,
                    refine: Optional[tuple[EditingModels, int]] = None) -> dict[str, Any]:
    """Each shipped vector at scale 1 (mode 1) on held-out faces (``embed_vector_faces``), with each face's models:
    how much of the renderer's edit (``after − before``) it makes. Read two ways: on the vector's mask statistic
    (``GroundTruthEdit.effect``: mouth width, eye area, eyebrow height, …) of the segmentation, against the
    statistic's change between the true masks (``statistic_ratio``); and by the parameter regressor (``moved``,
    bounded by what the regressor reads of the true edit, ``regressor_reads``). ``refine``: ``(models with LPIPS,
    steps)`` also reads each vector applied and refined that many steps (mode 2), under ``"refined"``."""
    params, images, true_masks, ws = faces["params"], faces["images"], faces["true_masks"], faces["ws"]
    runs = face_runs(face_models, 8)
    inverted, labels = (torch.cat(parts) for parts in zip(*(render_and_segment(face_models[a], ws[a:b])
                                                              for a, b in runs)))
    seg_size = face_models[0].seg_resolution
    figures: dict[str, Any] = {"faces": len(ws)}
    for edit in DEMO_EDITS:
        if edit.name not in bundle.vectors:
            continue
        vector = bundle.vectors[edit.name]
        truth, truth_masks = toonface.render(edit.applied_to(params), size)
        true_change = (edit.effect(resize_mask(truth_masks, seg_size))
                       - edit.effect(resize_mask(true_masks, seg_size)))
        scale = reader.scaled(edit.param, edit.delta)

        readable = (reader.read(truth, edit.param) - reader.read(images, edit.param)) / scale

        def reading(edited_images: torch.Tensor, edited_masks: torch.Tensor) -> dict[str, Any]:
            ratio = (edit.effect(edited_masks) - edit.effect(labels)) / true_change
            moved = (reader.read(edited_images, edit.param) - reader.read(inverted, edit.param)) / scale
            return {"statistic_ratio": summary(ratio.tolist()),
                    "share_statistic_at_least_0.7": round(float((ratio >= 0.7).float().mean()), 4),
                    "moved": summary(moved.tolist()),
                    "share_right_direction": round(float((moved > 0).float().mean()), 4),
                    "share_at_least_0.7": round(float((moved >= 0.7).float().mean()), 4),
                    "share_at_least_0.7_of_readable": round(float((moved >= 0.7 * readable).float().mean()), 4)}

        applied = [apply_vectors(face_models[a], ws[a:b], [vector], [1.0]) for a, b in runs]
        figures[edit.name] = {"param": edit.param, "renderer_delta": edit.delta,
                              "statistic": f"{edit.statistic} of {len(edit.measured_classes)} classes",
                              "regressor_reads": summary(readable.tolist()),
                              **reading(torch.cat([a.image for a in applied]), torch.cat([a.mask for a in applied]))}
        if refine is not None:
            models, steps = refine
            refined = [refine_vectors(models, ws[i:i + 1], [vector], [1.0], refine_config(steps))
                       for i in range(len(ws))]
            figures[edit.name]["refined"] = {"steps": steps, **reading(torch.cat([r.image for r in refined]),
                                                                          torch.cat([r.mask for r in refined]))}
    return figures


def save_sheet(rows: list[torch.Tensor], path: Path) -> None:
    from editor_core.training.gan import save_image_grid

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(torch.cat(rows), path, columns=rows[0].shape[0])


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run(args)
    emit_report(report, args.json)
    return report


if __name__ == "__main__":
    main()
