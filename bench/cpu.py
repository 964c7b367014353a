"""CPU benchmark at 128², as a 2-core laptop runs the studio: today's path timed beside the new one in the same run.

    .venv/bin/python bench/cpu.py [--baseline 846da88] [--items "mode 1" ...] [--rounds 2] [--json out.json]
    .venv/bin/python bench/cpu.py --quality [--json out.json]      # what the interactive defaults cost in quality
    .venv/bin/python bench/cpu.py --quality --only-retraining [--folds 1]   # the admin retraining, today vs new
    .venv/bin/python bench/cpu.py --synthetic [--items ...]        # the random-weight suite (bench/suite.py)

Every item runs on the demo bundle (``demo/``) in a fresh process, alternately with the baseline's code (``git
archive`` of ``--baseline``, default: main before issue 17) and its defaults ("today"), and with this tree's code and
the studio's CPU defaults ("new": ``gpu_worker.engine_cache``'s LPIPS net, loss and mask members, the admin page's
retraining settings). The machine may be shared, so each figure is the median over ``--rounds`` alternations and the
report gives the ratio today/new. ``--quality`` compares the results themselves: mode-3 edits whose target is the
segmentation of a library vector applied to an annotated sample (mIoU of the final mask against the target inside
the ROI, LPIPS-VGG and PSNR outside it), a mode-1 mask of a few members against the full ensemble's, and the held-out
mIoU and time of a segmentation retraining with today's admin settings and the CPU worker's (``CPU_RETRAIN``), both
with this tree's code.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "846da88"  # main before issue 17
# The admin page's retraining defaults (frontend/js/views/admin.js) before issue 17; after it the steps are the same
# and a CPU worker samples as gpu_worker.engine_cache.CPU_RETRAIN says.
TODAY_RETRAIN = {"steps": 300, "pixels_per_step": 16384}
EDITS = [(0, "smile"), (5, "bigger_eyes"), (9, "open_mouth")]  # (annotated sample, library vector) → target mask
HELD_OUT_FOLDS = [[13, 14, 15], [0, 1, 2]]  # annotated samples held out of a retraining


# --- worker side: one item, one code path, in its own process -----------------------------------------------------


def _setup(path: str):
    """The demo bundle's networks as the given path runs them: ``(bundle, editing models, options)``."""
    import torch

    from editor_core.bundle import load_bundle
    from editor_core.editing import EditingModels
    from editor_core.perceptual import get_perceptual_loss

    torch.manual_seed(0)
    bundle = load_bundle()
    options = {"lpips": "vgg", "loss_members": None, "mask_members": None, "retrain": TODAY_RETRAIN,
               "embed_steps": None}
    if path == "new":
        engine_cache = _engine_cache()
        options = {"lpips": engine_cache.CPU_LPIPS, "loss_members": engine_cache.CPU_LOSS_MEMBERS,
                   "mask_members": engine_cache.CPU_MODE1_MASK_MEMBERS,
                   "retrain": {"steps": TODAY_RETRAIN["steps"], **engine_cache.retrain_options(None)},
                   "embed_steps": engine_cache.CPU_EMBED_STEPS}
    models = EditingModels(bundle.generator, bundle.segmenter, get_perceptual_loss(options["lpips"], "cpu"),
                           bundle.generator_id)
    return bundle, models, options


def _engine_cache():
    """This tree's ``gpu_worker.engine_cache`` (its CPU defaults), whichever engine the process runs."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django
    django.setup()
    from gpu_worker import engine_cache
    return engine_cache


def _edit_config(options: dict, **kwargs):
    from editor_core.editing import EditConfig
    if options["loss_members"] is not None:
        kwargs["loss_members"] = options["loss_members"]
    return EditConfig(**kwargs)


def _edit_masks(bundle, models, sample: int, vector: str):
    """``(ws, original mask, target mask, edited classes)``: the target is the segmentation after the vector, and the
    edit is about the vector's classes (else every class whose pixels moved a little — skin, background — would put
    the whole picture in the ROI)."""
    from editor_core.editing import apply_vectors, render_and_segment
    ws = bundle.annotations.latents[sample:sample + 1]
    _image, original = render_and_segment(models, ws)
    edited = bundle.vectors[vector]
    return ws, original, apply_vectors(models, ws, [edited], [1.0]).mask, list(edited.info.edited_classes)


def _items(path: str) -> dict:
    """name → (setup → callable, kind); kinds: 'short' (warm-up + repeats), 'long' (one run per round)."""
    import torch
    import torch.nn.functional as F

    from editor_core.editing import apply_vectors, optimize_edit, prepare_edit, refine_config, refine_vectors
    from editor_core.inversion import EmbedConfig, embed_image
    from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble

    bundle, models, options = _setup(path)
    G = bundle.generator
    mask_members = {} if options["mask_members"] is None else {"mask_members": options["mask_members"]}
    ws, original, target, classes = _edit_masks(bundle, models, *EDITS[0])
    vector = bundle.vectors["smile"]

    def g_forward():
        with torch.no_grad():
            G.synthesis(ws, noise_mode="const")

    def mode1():
        apply_vectors(models, ws, [vector], [1.0], **mask_members)

    def mode3_step():
        return prepare_edit(models, ws, original, target, _edit_config(options), classes).step

    def mode2_refine():
        refine_config_kwargs = {} if options["loss_members"] is None else {"loss_members": options["loss_members"]}
        refine_vectors(models, ws, [vector], [1.0], refine_config(10, **refine_config_kwargs))

    def mode3_edit():
        optimize_edit(models, ws, original, target, _edit_config(options, steps=30), classes)

    def embedding():
        with torch.no_grad():
            image = G.synthesis(bundle.annotations.latents[3:4], noise_mode="const")
        steps = {} if options["embed_steps"] is None else {"steps": options["embed_steps"]}  # today: its default
        embed_image(G, bundle.encoder, image, EmbedConfig(lpips_net=options["lpips"], **steps))

    def segmentation_step(pixel_count: int):
        ensemble = SegmentationEnsemble(SegmentationConfig.from_generator(G, bundle.schema.num_classes)).train()
        optimiser = torch.optim.Adam(ensemble.parameters(), lr=1e-3)
        with torch.no_grad():
            _image, features = G.synthesis(bundle.annotations.latents[:2], noise_mode="const", return_features=True)
        size = ensemble.config.resolution
        pixels = torch.randint(0, size * size, (2, pixel_count // 2))
        labels = bundle.annotations.masks[:2].flatten(1).gather(1, pixels)

        def step():
            logits = ensemble.forward_pixels(features, pixels)
            loss = F.cross_entropy(logits.transpose(1, 2), labels[:, None].expand(-1, logits.shape[1], -1))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        return step

    return {
        "G forward (load meter: same code both ways)": (lambda: g_forward, "short"),
        "mode 1, one vector (engine)": (lambda: mode1, "short"),
        "mode-3 step": (mode3_step, "short"),
        "segmentation training step (admin default pixels)": (
            lambda: segmentation_step(options["retrain"]["pixels_per_step"]), "short"),
        "segmentation training step (the CPU worker's pixels both ways)": (
            lambda: segmentation_step(_engine_cache().CPU_RETRAIN["pixels_per_step"]), "short"),
        "mode 2, 10 steps": (lambda: mode2_refine, "long"),
        "mode 3, 30 steps": (lambda: mode3_edit, "long"),
        "embedding (the CPU worker's default steps)": (lambda: embedding, "long"),
    }


def run_worker(name: str, path: str, repeats: int) -> None:
    factory, kind = _items(path)[name]
    fn = factory()
    warmup, repeats = (1, repeats) if kind == "short" else (0, 1)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    print(json.dumps({"median_ms": statistics.median(times), "times_ms": times}))


# --- parent side ----------------------------------------------------------------------------------------------------


def export_baseline(rev: str, into: Path) -> Path:
    """This repository's ``editor_core`` and ``demo`` at ``rev``, unpacked into ``into``."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "archive", "-o", str(archive), rev, "editor_core"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    (into / "tree" / "demo").symlink_to(ROOT / "demo")  # the same bundle (not in the archive: large files)
    return into / "tree"


def time_item(name: str, path: str, tree: Path, repeats: int) -> dict:
    # The script is this tree's; the engine it imports is the path's (``--tree`` goes first on sys.path).
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--path", path, "--tree", str(tree),
               "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{name} ({path}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_comparison(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        baseline = export_baseline(args.baseline, Path(tmp))
        names = [n for n in ITEM_NAMES if not args.items or any(n.startswith(p) for p in args.items)]
        print(f"{'item':52s} {'today ms':>10s} {'new ms':>10s} {'today/new':>9s}")
        for name in names:
            samples = {"today": [], "new": []}
            for _round in range(args.rounds):
                for path, tree in (("today", baseline), ("new", ROOT)):
                    samples[path].append(time_item(name, path, tree, args.repeats)["median_ms"])
            today, new = statistics.median(samples["today"]), statistics.median(samples["new"])
            rows.append({"item": name, "today_ms": today, "new_ms": new, "ratio": today / new, "rounds": samples})
            print(f"{name:52s} {today:10.1f} {new:10.1f} {today / new:9.2f}", flush=True)
    return rows


ITEM_NAMES = ["G forward (load meter: same code both ways)", "mode 1, one vector (engine)", "mode-3 step",
              "segmentation training step (admin default pixels)",
              "segmentation training step (the CPU worker's pixels both ways)", "mode 2, 10 steps", "mode 3, 30 steps",
              "embedding (the CPU worker's default steps)"]


# --- quality --------------------------------------------------------------------------------------------------------


def run_quality(args) -> dict:
    """Quality of the new interactive defaults beside today's, with this tree's code (its speed changes are exact)."""
    from editor_core.editing import EditConfig, EditingModels, apply_vectors, optimize_edit, render_and_segment
    from editor_core.metrics import masked_psnr, mean_iou
    from editor_core.perceptual import get_perceptual_loss

    _bundle, _models, new = _setup("new")
    bundle, models, today = _setup("today")
    vgg = get_perceptual_loss("vgg", "cpu")
    variants = {"today": (today["lpips"], None), "new": (new["lpips"], new["loss_members"])}
    if args.quality_variants:
        variants.update({f"{net}+{members or 'all'}": (net, None if members == "all" else int(members))
                         for net, members in (v.split("+") for v in args.quality_variants)})
    num_classes = bundle.schema.num_classes
    report = {"edits": [], "mode1_masks": [], "retraining": []}
    for sample, vector in EDITS[:0 if args.only_retraining else args.edits]:
        ws, original, target, classes = _edit_masks(bundle, models, sample, vector)
        original_image, _ = render_and_segment(models, ws)
        for name, (net, members) in variants.items():
            edit_models = EditingModels(bundle.generator, bundle.segmenter, get_perceptual_loss(net, "cpu"),
                                        bundle.generator_id)
            start = time.perf_counter()
            result = optimize_edit(edit_models, ws, original, target, EditConfig(loss_members=members), classes)
            seconds = time.perf_counter() - start
            roi, outside = result.roi, (~result.roi)[:, None].float()
            row = {"edit": f"sample {sample} + {vector}", "variant": name, "seconds": round(seconds, 1),
                   "roi_pixels": int(roi.sum()),
                   "roi_miou": round(mean_iou(result.mask[roi], target[roi], num_classes), 4),
                   "lpips_vgg_outside": round(vgg(result.image * outside, original_image * outside).item(), 4),
                   "psnr_outside_db": round(masked_psnr(result.image, original_image, outside).item(), 2)}
            report["edits"].append(row)
            print(json.dumps(row), flush=True)
    for sample, vector in EDITS[:0 if args.only_retraining else len(EDITS)]:  # mode-1 masks of k members vs all
        ws = bundle.annotations.latents[sample:sample + 1]
        full = apply_vectors(models, ws, [bundle.vectors[vector]], [1.0]).mask
        for members in sorted({1, 2, 3, 5, new["mask_members"]}):
            few = apply_vectors(models, ws, [bundle.vectors[vector]], [1.0], mask_members=members).mask
            row = {"edit": f"sample {sample} + {vector}", "mask_members": members,
                   "pixel_agreement": round((few == full).float().mean().item(), 4),
                   "miou_vs_full": round(mean_iou(few, full, num_classes), 4)}
            report["mode1_masks"].append(row)
            print(json.dumps(row), flush=True)
    if not args.skip_retraining:
        for held in HELD_OUT_FOLDS[:args.folds]:
            for name, settings in (("new", new["retrain"]), ("today", today["retrain"])):
                row = _retrain(bundle, settings, held)
                row["settings"] = name
                report["retraining"].append(row)
                print(json.dumps(row), flush=True)
    return report


def _retrain(bundle, settings: dict, held: list[int]) -> dict:
    """Retrain the branch on the annotated samples not in ``held`` as the worker does; held-out mIoU and time."""
    import torch

    from editor_core.metrics import mean_iou
    from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, SegTrainConfig, train_segmentation

    G, annotations = bundle.generator, bundle.annotations
    train = [i for i in range(len(annotations.latents)) if i not in held]
    ensemble = SegmentationEnsemble(SegmentationConfig.from_generator(G, bundle.schema.num_classes))
    options = dict(settings)
    steps = options.pop("steps")
    config = SegTrainConfig(max_steps=steps, min_steps=min(200, steps), **options)  # as gpu_worker.tasks builds it
    start, cpu_start = time.perf_counter(), time.process_time()
    outcome = train_segmentation(G, ensemble, annotations.latents[train], annotations.masks[train], config)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    with torch.no_grad():
        _image, features = G.synthesis(annotations.latents[held], noise_mode="const", return_features=True)
        predicted = ensemble.predict(features).labels
    miou = mean_iou(predicted, annotations.masks[held], bundle.schema.num_classes)
    # CPU seconds beside wall seconds: on a shared machine they say what the run itself cost.
    return {"held_out": held, "steps": outcome.steps, **options, "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1), "heldout_miou": round(miou, 4)}


# --- main -----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--items", nargs="*", default=[], help="only items whose name starts with one of these")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of today's path (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="today/new alternations per item")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of a short item per process")
    parser.add_argument("--quality", action="store_true", help="compare results, not times")
    parser.add_argument("--quality-variants", nargs="*", default=[], help="extra mode-3 variants, e.g. alex+1 vgg+3")
    parser.add_argument("--skip-retraining", action="store_true", help="--quality without the retrainings")
    parser.add_argument("--only-retraining", action="store_true", help="--quality: only the retrainings")
    parser.add_argument("--folds", type=int, default=len(HELD_OUT_FOLDS),
                        help="--quality: retrain with the first N held-out folds (today's setting takes 36 minutes "
                             "a fold on two cores)")
    parser.add_argument("--edits", type=int, default=len(EDITS), help="--quality: how many of the demo edits")
    parser.add_argument("--synthetic", action="store_true", help="the random-weight suite of bench/suite.py")
    parser.add_argument("--classes", type=int, default=18, help="--synthetic: segmentation classes")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT))  # bench/, webapp/ and gpu_worker/ of this tree …
        sys.path.insert(0, args.tree)  # … and the engine of the path being timed
        run_worker(args.worker, args.path, args.repeats)
        return
    sys.path.insert(0, str(ROOT))
    if args.synthetic:
        run_synthetic(args)
        return
    import torch
    environment = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(), "baseline": args.baseline}
    print(json.dumps(environment))
    results = run_quality(args) if args.quality else run_comparison(args)
    environment["load_average_at_end"] = os.getloadavg()
    print(json.dumps({"load_average_at_end": environment["load_average_at_end"]}))
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": environment, "results": results}, indent=2))


def run_synthetic(args) -> None:
    import torch

    from bench.suite import Suite, SuiteConfig, environment, header, write_json

    device = torch.device("cpu")
    config = SuiteConfig(resolution=128, seg_resolution=128, num_classes=args.classes, channel_base=4096,
                         channel_max=256, w_dim=256, mapping_layers=4, warmup=1, repeats=5, long_repeats=1,
                         items=tuple(args.items))
    print(environment(device))
    print(header())
    results = Suite(config, device).run()
    if args.json:
        write_json(args.json, [{"environment": environment(device), "config": config, "results": results}])


if __name__ == "__main__":
    main()
