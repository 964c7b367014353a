"""Batch command line: ``python -m editor_core <command> …`` (users of the original release asked for this).

Models come from a bundle folder (default: the shipped demo bundle) and can be overridden one by one with
``--generator`` / ``--segmenter`` / ``--encoder`` (NVlabs ``.pkl``, rosinality ``.pt`` or project ``.safetensors``).
Latents are written as project-format ``.safetensors`` files (``.npy`` too where asked), images and masks as PNG.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from editor_core.editing import EditConfig
from editor_core.inversion import EmbedConfig
from editor_core.progress import ProgressEvent


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------------------------------
# Helpers shared by the commands


class ProgressBar:
    """A progress callback that draws a tqdm bar with the latest losses."""

    def __init__(self, description: str):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.description = description
        self.bar = None

    def __call__(self, event: ProgressEvent) -> None:
        if self.bar is None or self.bar.total != event.total:
            self.close()
            self.bar = self._tqdm(total=event.total, desc=f"{self.description} ({event.stage})", unit="step",
                                  file=sys.stderr, dynamic_ncols=True)
        self.bar.update(event.step - self.bar.n)
        if event.losses:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in list(event.losses.items())[:4]}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


class Models:
    """Lazily loaded models for one command, from ``--bundle`` and the per-model overrides."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = _device(args.device)
        self._bundle = None

    @property
    def bundle(self):
        if self._bundle is None:
            from editor_core.bundle import load_bundle
            from editor_core.checkpoints import generator_fingerprint, load_generator

            args = self.args
            if args.generator:
                from editor_core.bundle import ModelBundle

                generator = load_generator(args.generator, device=self.device).eval().requires_grad_(False)
                self._bundle = ModelBundle(Path(args.generator).parent, generator, generator_fingerprint(generator),
                                           None, None, None, {}, None)
            else:
                self._bundle = load_bundle(args.bundle, device=self.device)
            if args.segmenter:
                from editor_core.segmentation import load_segmentation

                self._bundle.segmenter, self._bundle.schema, _ = load_segmentation(args.segmenter, self.device)
            if getattr(args, "encoder", None):
                from editor_core.encoder import load_encoder

                self._bundle.encoder = load_encoder(args.encoder, self._bundle.generator)
        return self._bundle

    @property
    def generator(self):
        return self.bundle.generator

    def editing(self):
        from editor_core.perceptual import get_perceptual_loss

        self.require_segmenter()
        return self.bundle.editing_models(get_perceptual_loss("vgg", self.device))

    def require_segmenter(self):
        from editor_core.bundle import BundleLayout

        if self.bundle.segmenter is None:
            raise CommandError("this command needs a segmentation branch: pass --segmenter FILE or a bundle that has "
                               f"{BundleLayout.SEGMENTATION}")
        return self.bundle.segmenter


def _out_dir(path: str) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_mask(path: Path, mask: torch.Tensor, schema) -> None:
    from editor_core.images import mask_to_png

    path.write_bytes(mask_to_png(mask.cpu(), schema))


def _read_mask(path: str, schema, size: int) -> torch.Tensor:
    from editor_core.editing import resize_mask
    from editor_core.images import png_to_mask

    try:
        mask = png_to_mask(path, schema)
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read mask {path}: {error}") from error
    return resize_mask(mask[None] if mask.ndim == 2 else mask, size)


def _read_latent(models: Models, path: str) -> torch.Tensor:
    from editor_core.bundle import load_latents

    ws = load_latents(path, models.bundle.generator_id).to(models.device)
    expected = (models.generator.num_ws, models.generator.config.w_dim)
    if ws.ndim == 2:
        ws = ws[None]
    if tuple(ws.shape[1:]) != expected:
        raise CommandError(f"{path}: latents of shape {tuple(ws.shape)} do not fit this generator "
                           f"([N, {expected[0]}, {expected[1]}])")
    return ws


def _parse_vector(models: Models, spec: str):
    """``PATH[:SCALE]`` or ``NAME[:SCALE]`` of a vector in the bundle → (EditVector, scale)."""
    from editor_core.vectors import EditVector

    name, _, scale_text = spec.rpartition(":") if ":" in spec else (spec, "", "1")
    try:
        scale = float(scale_text)
    except ValueError as error:
        raise CommandError(f"--vector {spec}: the scale after ':' must be a number") from error
    if name in models.bundle.vectors:
        return models.bundle.vectors[name], scale
    if not Path(name).is_file():
        known = ", ".join(sorted(models.bundle.vectors)) or "none"
        raise CommandError(f"--vector {spec}: no such file and no vector of that name in the bundle (has: {known})")
    vector = EditVector.load(name)
    vector.check_generator(models.bundle.generator_id)
    return vector, scale


def _save_latent_files(out: Path, stem: str, ws: torch.Tensor, generator_id: str, npy: bool, meta=None) -> None:
    from editor_core.bundle import save_latents

    save_latents(out / f"{stem}.latent.safetensors", ws, generator_id, meta)
    if npy:
        import numpy as np

        np.save(out / f"{stem}.latent.npy", ws.detach().cpu().numpy())


def _write_results(out: Path, stem: str, models: Models, images: torch.Tensor, masks: torch.Tensor,
                   ws: torch.Tensor, npy: bool) -> None:
    """``<stem>.png``, ``<stem>.mask.png`` (suffixed ``_i`` for batches) and ``<stem>.latent.safetensors``."""
    from editor_core.images import save_image

    for index in range(images.shape[0]):
        suffix = "" if images.shape[0] == 1 else f"_{index}"
        save_image(images[index], out / f"{stem}{suffix}.png")
        _write_mask(out / f"{stem}{suffix}.mask.png", masks[index], models.bundle.schema)
    _save_latent_files(out, stem, ws, models.bundle.generator_id, npy)


def _parse_range(text: str) -> list[int]:
    """``"0-3,7"`` → ``[0, 1, 2, 3, 7]``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError as error:
        raise CommandError(f"--seeds {text!r}: expected numbers and ranges like 0-3,7") from error
    return seeds


# ---------------------------------------------------------------------------------------------------------------------
# Commands


def cmd_sample(args: argparse.Namespace) -> None:
    from editor_core.images import save_image

    models = Models(args)
    out = _out_dir(args.out)
    G = models.generator
    for seed in _parse_range(args.seeds):
        z = torch.randn(1, G.config.z_dim, generator=torch.Generator().manual_seed(seed)).to(models.device)
        with torch.no_grad():
            ws = G.mapping(z, truncation_psi=args.truncation)
            image, features = G.synthesis(ws, return_features=True)
            save_image(image[0], out / f"seed{seed:04d}.png")
            if models.bundle.segmenter is not None:
                _write_mask(out / f"seed{seed:04d}.mask.png",
                            models.bundle.segmenter.predict(features).labels[0], models.bundle.schema)
        _save_latent_files(out, f"seed{seed:04d}", ws, models.bundle.generator_id, args.npy,
                           {"seed": seed, "truncation_psi": args.truncation})
    print(f"wrote {len(_parse_range(args.seeds))} samples to {out}")


def cmd_embed(args: argparse.Namespace) -> None:
    from editor_core.images import ImageInputError, load_image, save_image
    from editor_core.inversion import EmbedConfig, embed_image

    models = Models(args)
    out = _out_dir(args.out)
    size = models.generator.config.resolution
    box = tuple(int(v) for v in args.box.split(",")) if args.box else None
    if box is not None and len(box) != 4:
        raise CommandError("--box takes x,y,width,height in source pixels")
    for path in args.images:
        try:
            image = load_image(path, size, box=box).to(models.device)
        except (ImageInputError, OSError) as error:
            raise CommandError(f"{path}: {error}") from error
        bar = ProgressBar(Path(path).name)
        result = embed_image(models.generator, models.bundle.encoder, image, EmbedConfig(steps=args.steps),
                             progress=bar)
        bar.close()
        stem = Path(path).stem
        save_image(result.image[0], out / f"{stem}.embedded.png")
        _save_latent_files(out, stem, result.ws, models.bundle.generator_id, args.npy,
                           {"source": str(path), "lpips": float(result.lpips[0]), "psnr": float(result.psnr[0])})
        print(f"{path}: LPIPS {float(result.lpips[0]):.4f}, PSNR {float(result.psnr[0]):.2f} dB "
              f"(best step {int(result.best_step[0])}) → {out / (stem + '.latent.safetensors')}")


def cmd_segment(args: argparse.Namespace) -> None:
    from editor_core.segmentation import image_uncertainty

    models = Models(args)
    segmenter = models.require_segmenter()
    out = _out_dir(args.out)
    for path in args.latents:
        ws = _read_latent(models, path)
        with torch.no_grad():
            _, features = models.generator.synthesis(ws, return_features=True)
            prediction = segmenter.predict(features)
        stem = Path(path).name.split(".")[0]
        for index in range(ws.shape[0]):
            suffix = "" if ws.shape[0] == 1 else f"_{index}"
            _write_mask(out / f"{stem}{suffix}.mask.png", prediction.labels[index], models.bundle.schema)
            if args.npy:
                import numpy as np

                np.save(out / f"{stem}{suffix}.mask.npy", prediction.labels[index].cpu().numpy())
        scores = image_uncertainty(prediction)
        print(f"{path}: segmented {ws.shape[0]} image(s); uncertainty {', '.join(f'{s:.4f}' for s in scores.tolist())}")


def cmd_edit(args: argparse.Namespace) -> None:
    from editor_core.editing import EditConfig, optimize_edit, render_and_segment
    from editor_core.vectors import EditVector, EditVectorInfo

    models = Models(args)
    editing = models.editing()
    ws = _read_latent(models, args.latent)[:1]
    size = editing.seg_resolution
    edited = _read_mask(args.mask, models.bundle.schema, size).to(models.device)
    if args.original_mask:
        original = _read_mask(args.original_mask, models.bundle.schema, size).to(models.device)
    else:
        _, original = render_and_segment(editing, ws)
    config = EditConfig(steps=args.steps, lr=args.lr)
    bar = ProgressBar("edit")
    result = optimize_edit(editing, ws, original, edited, config, edited_classes=args.classes, progress=bar)
    bar.close()
    out = _out_dir(args.out)
    _write_results(out, "edited", models, result.image, result.mask, result.ws, args.npy)
    vector = EditVector(result.delta[0].cpu(), EditVectorInfo(
        name=args.name, generator_id=models.bundle.generator_id, edited_classes=result.edited_classes,
        source={"kind": "latent", "path": str(args.latent)}, author=args.author))
    vector.save(out / f"{args.name}.vector.safetensors")
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.final_losses.items())
    print(f"edited classes {result.edited_classes}; final losses: {losses}; wrote {out}")


def _vectors_and_scales(models: Models, specs: Sequence[str]):
    if not specs:
        raise CommandError("give at least one --vector PATH[:SCALE]")
    pairs = [_parse_vector(models, spec) for spec in specs]
    return [vector for vector, _ in pairs], [scale for _, scale in pairs]


def cmd_apply(args: argparse.Namespace) -> None:
    from editor_core.editing import apply_vectors

    models = Models(args)
    editing = models.editing()
    ws = _read_latent(models, args.latent)
    vectors, scales = _vectors_and_scales(models, args.vector)
    result = apply_vectors(editing, ws, vectors, scales)
    out = _out_dir(args.out)
    _write_results(out, "applied", models, result.image, result.mask, result.ws, args.npy)
    print(f"applied {', '.join(f'{v.name}×{s:g}' for v, s in zip(vectors, scales))} → {out}")


def cmd_refine(args: argparse.Namespace) -> None:
    from editor_core.editing import refine_config, refine_vectors

    models = Models(args)
    editing = models.editing()
    ws = _read_latent(models, args.latent)[:1]
    vectors, scales = _vectors_and_scales(models, args.vector)
    bar = ProgressBar("refine")
    result = refine_vectors(editing, ws, vectors, scales, refine_config(args.steps), progress=bar)
    bar.close()
    out = _out_dir(args.out)
    _write_results(out, "refined", models, result.image, result.mask, result.ws, args.npy)
    print(f"refined {len(vectors)} vector(s) for {args.steps} steps → {out}")


def cmd_train_seg(args: argparse.Namespace) -> None:
    from editor_core.bundle import AnnotatedSamples
    from editor_core.segmentation import (SegmentationConfig, SegmentationEnsemble, SegTrainConfig, save_segmentation,
                                          train_segmentation)

    if args.feature_cache_mb < 0:
        raise CommandError(f"--feature-cache-mb must be ≥ 0 (0: synthesise every step's samples), got "
                           f"{args.feature_cache_mb}")
    models = Models(args)
    samples = AnnotatedSamples.load(args.annotations)
    G = models.generator
    resolution = args.resolution or samples.masks.shape[-1]
    config = SegmentationConfig.from_generator(G, samples.schema.num_classes, resolution,
                                               ensemble_size=args.ensemble)
    ensemble = SegmentationEnsemble(config, seed=args.seed)
    bar = ProgressBar("train-seg")
    result = train_segmentation(G, ensemble, samples.latents.to(models.device), samples.masks.to(models.device),
                                SegTrainConfig(max_steps=args.steps, seed=args.seed, val_fraction=args.val_fraction,
                                               feature_cache_bytes=args.feature_cache_mb << 20),
                                progress=bar)
    bar.close()
    save_segmentation(args.out, ensemble, samples.schema,
                      {"generator_fingerprint": models.bundle.generator_id, "steps": result.steps,
                       "mean_iou": result.mean_iou, "evaluated_on": result.evaluated_on,
                       "annotated_samples": len(samples.latents)})
    features = "kept" if result.cached_features else "synthesised each step (raise --feature-cache-mb to keep them)"
    print(f"trained {result.steps} steps (early stop: {result.stopped_early}; features {features}); mIoU "
          f"{result.mean_iou:.3f} on {result.evaluated_on} → {args.out}")


def cmd_train_encoder(args: argparse.Namespace) -> None:
    from editor_core.encoder import Encoder, EncoderConfig, save_encoder
    from editor_core.encoder_training import EncoderTrainConfig, train_encoder

    models = Models(args)
    G = models.generator
    encoder = Encoder(EncoderConfig.for_generator(G)).to(models.device)
    real_images: Optional[Callable[[], torch.Tensor]] = None
    if args.real_images:
        from editor_core.images import load_image

        paths = sorted(p for p in Path(args.real_images).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg",
                                                                                             ".webp"})
        if not paths:
            raise CommandError(f"--real-images {args.real_images}: no PNG/JPEG/WebP files there")
        size = G.config.resolution
        cursor = iter(range(sys.maxsize))

        def next_real_batch() -> torch.Tensor:
            start = next(cursor) * args.batch
            return torch.cat([load_image(paths[(start + i) % len(paths)], size) for i in range(args.batch)])

        real_images = next_real_batch
    config = EncoderTrainConfig(steps=args.steps, batch_size=args.batch, checkpoint_path=args.checkpoint)
    bar = ProgressBar("train-encoder")
    history = train_encoder(G, encoder, real_images, config, progress=bar, resume=args.resume)
    bar.close()
    save_encoder(args.out, encoder, G, {"steps": args.steps})
    print(f"trained the encoder for {len(history)} steps; last losses "
          f"{ {k: round(v, 4) for k, v in history[-1].items()} } → {args.out}")


def cmd_fetch_weights(args: argparse.Namespace) -> None:
    from editor_core.perceptual import fetch_backbone_weights

    for net, path in fetch_backbone_weights(args.dir).items():
        print(f"{net}: {path}")


# ---------------------------------------------------------------------------------------------------------------------
# Parser


def _model_options(parser: argparse.ArgumentParser, encoder: bool = False) -> None:
    from editor_core.bundle import DEMO_BUNDLE

    group = parser.add_argument_group("models")
    group.add_argument("--bundle", default=str(DEMO_BUNDLE), help="model bundle folder (default: the demo bundle)")
    group.add_argument("--generator", help="generator checkpoint (.pkl NVlabs, .pt rosinality, .safetensors)")
    group.add_argument("--segmenter", help="segmentation branch (.safetensors)")
    if encoder:
        group.add_argument("--encoder", help="encoder (.safetensors)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda if available)")


def plain_text(docstring: str) -> str:
    """A reStructuredText docstring as ``--help`` shows it: ````literal```` → literal."""
    return re.sub(r"``(.+?)``", r"\1", docstring)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m editor_core", description=plain_text(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable, help_text: str, encoder: bool = False, models: bool = True):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if models:
            _model_options(sub, encoder)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("sample", cmd_sample, "generate samples (PNG, mask PNG, latent)")
    sub.add_argument("--seeds", default="0-3", help="seeds, e.g. 0-3,7")
    sub.add_argument("--truncation", type=float, default=0.7)
    sub.add_argument("--out", required=True)
    sub.add_argument("--npy", action="store_true", help="also write latents as .npy")

    sub = command("embed", cmd_embed, "embed real images into W+ (encoder + optimisation)", encoder=True)
    sub.add_argument("images", nargs="+")
    sub.add_argument("--steps", type=int, default=EmbedConfig.steps, help="optimisation steps (default %(default)s, "
                                                                           "as in the studio)")
    sub.add_argument("--box", help="crop box x,y,width,height in source pixels (default: centre crop)")
    sub.add_argument("--out", required=True)
    sub.add_argument("--npy", action="store_true")

    sub = command("segment", cmd_segment, "segment latents with the segmentation branch")
    sub.add_argument("latents", nargs="+")
    sub.add_argument("--out", required=True)
    sub.add_argument("--npy", action="store_true")

    sub = command("edit", cmd_edit, "mode 3: edit a latent to match an edited mask; writes the edit vector",
                  encoder=True)
    sub.add_argument("--latent", required=True)
    sub.add_argument("--mask", required=True, help="the edited segmentation (PNG)")
    sub.add_argument("--original-mask", help="the original segmentation (default: the branch's prediction)")
    sub.add_argument("--classes", type=int, nargs="*", help="edited classes (default: those the edit changed)")
    sub.add_argument("--steps", type=int, default=EditConfig.steps)
    sub.add_argument("--lr", type=float, default=EditConfig.lr)
    sub.add_argument("--name", default="edit", help="name of the edit vector")
    sub.add_argument("--author", default="")
    sub.add_argument("--out", required=True)
    sub.add_argument("--npy", action="store_true")

    for name, handler, text in (("apply", cmd_apply, "mode 1: apply edit vectors with scales"),
                                ("refine", cmd_refine, "mode 2: apply edit vectors, then refine self-supervised")):
        sub = command(name, handler, text)
        sub.add_argument("--latent", required=True)
        sub.add_argument("--vector", action="append", default=[], help="PATH[:SCALE] or a bundle vector NAME[:SCALE]")
        if name == "refine":
            sub.add_argument("--steps", type=int, default=10, choices=range(1, 501), metavar="STEPS")
        sub.add_argument("--out", required=True)
        sub.add_argument("--npy", action="store_true")

    sub = command("train-seg", cmd_train_seg, "train the segmentation branch on annotated samples")
    sub.add_argument("--annotations", required=True, help="annotations .safetensors (latents + masks + schema)")
    sub.add_argument("--resolution", type=int, help="segmentation resolution (default: the masks')")
    sub.add_argument("--ensemble", type=int, default=10)
    sub.add_argument("--steps", type=int, default=2000)
    sub.add_argument("--val-fraction", type=float, default=0.0)
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--feature-cache-mb", type=int, default=4096,
                     help="keep every sample's generator features when they fit in this many MiB (default: "
                          "%(default)s, as the studio's training workers; 512² config-f takes 123 MiB a sample)")
    sub.add_argument("--out", required=True)

    sub = command("train-encoder", cmd_train_encoder, "train an encoder (image → W+) for a generator")
    sub.add_argument("--steps", type=int, default=10000)
    sub.add_argument("--batch", type=int, default=4)
    sub.add_argument("--real-images", help="a folder of real images mixed into training")
    sub.add_argument("--checkpoint", help="write a resumable training state here")
    sub.add_argument("--resume", help="resume from this training state")
    sub.add_argument("--out", required=True)

    sub = command("fetch-weights", cmd_fetch_weights, "fetch and convert the LPIPS backbone weights", models=False)
    sub.add_argument("--dir", help="weights folder (default: $EDITGAN_WEIGHTS_DIR or ~/.cache/editgan-studio/weights)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        # Engine validation errors are written for users: show them without a traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
