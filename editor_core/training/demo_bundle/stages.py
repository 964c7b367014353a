"""The demo pipeline's stages (see the package docstring) over one bundle folder: ``PipelineConfig``,
``DemoPipeline``."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from editor_core.bundle import AnnotatedSamples, BundleLayout, ModelBundle, load_bundle
from editor_core.checkpoints import generator_fingerprint, load_generator, read_checkpoint
from editor_core.domains import toonface
from editor_core.domains.toonface import ToonFaceParams, toonface_schema
from editor_core.editing import (EditConfig, EditingModels, apply_vectors, dilate, optimize_edit, refine_config,
                                 refine_vectors, render_and_segment, resize_mask)
from editor_core.encoder import ENCODER_KIND, Encoder, EncoderConfig, load_encoder, save_encoder
from editor_core.encoder_training import ENCODER_TRAINING_KIND, EncoderTrainConfig, train_encoder
from editor_core.inversion import BATCH_EMBED_STEPS, EmbedConfig, embed_image
from editor_core.metrics import class_iou, mean_abs_change, mean_and_std, mean_iou, named_iou, reconstruction_quality
from editor_core.networks import Generator
from editor_core.perceptual import get_perceptual_loss
from editor_core.segmentation import (SegmentationConfig, SegmentationEnsemble, SegTrainConfig, save_segmentation,
                                      train_segmentation)
from editor_core.training.demo_bundle.edits import DEMO_EDITS, VECTOR_SCALE_RANGE, in_classes, transfer_overrides
from editor_core.training.demo_bundle.renders import (RENDER_SEEDS, SAMPLE_SEEDS, SEED_STREAMS, RenderStream, chunks,
                                                      render_faces, render_features, sample_features)
from editor_core.training.demo_bundle.report import headline_figures, report_markdown, write_figures
from editor_core.training.gan import enable_cuda_fast_math, save_image_grid
from editor_core.training.param_regressor import (REGRESSOR_KIND, ParamRegressor, RegressorConfig,
                                                  RegressorTrainConfig, frechet_distance, load_param_regressor,
                                                  regression_r2, regression_targets, save_param_regressor,
                                                  target_names, train_param_regressor)
from editor_core.vectors import EditVector, EditVectorInfo

STAGES = ("encoder", "regressor", "annotate", "segmentation", "vectors", "calibrate", "evaluate", "figures")
ENCODER_STATE_FILE = "encoder-training.safetensors"


VECTOR_ROIS = ("changed", "classes")


@dataclass(frozen=True)
class PipelineConfig:
    """Budgets and sizes of every stage; the defaults build the shipped bundle on one GPU in about ten minutes."""

    encoder_steps: int = 50_000
    encoder_minutes: float = 3.0
    encoder_batch: int = 32
    encoder_lr: float = 2e-4
    encoder_chunk: int = 250            # steps between training-state checkpoints (and time-budget checks)
    encoder_check_renders: int = 64     # held-out renders that decide whether the encoder ships in float16
    encoder_widths: tuple[tuple[str, int], ...] = ()   # EncoderConfig width overrides, e.g. (("channel_max", 128),)
    regressor_steps: int = 50_000
    regressor_minutes: float = 1.0
    regressor_batch: int = 64
    regressor_check_renders: int = 512
    annotated_samples: int = 16
    annotate_steps: int = BATCH_EMBED_STEPS
    seg_ensemble: int = 10
    seg_hidden: tuple[int, ...] = (256, 128, 32)
    seg_resolution: Optional[int] = None   # None: the generator's resolution
    seg_steps: int = 3000
    vector_sources: int = 8
    vector_steps: int = 200
    # The vectors' mode-3 region of interest: "changed" (the changed pixels, dilated: the studio's default) or
    # "classes" (also every pixel of the vector's classes).
    vector_roi: str = "changed"
    calibration_faces: int = 16         # fresh faces on which the calibrate stage sets each vector's unit scale
    calibration_embed_steps: int = 300  # their inversion: the studio's (a GPU worker's) default
    eval_renders: int = 200
    transfer_renders: int = 100
    eval_embed_steps: int = 300
    refine_steps: int = 10
    direction_samples: int = 64
    fd_samples: int = 5000
    embed_batch: int = 150              # images per embed_image call
    forward_batch: int = 25             # images per segmentation / edit forward pass
    lpips_net: str = "vgg"
    seed: int = 0

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and item.name != "seed" and value <= 0:
                raise ValueError(f"{item.name} must be > 0, got {value}")
        if self.vector_roi not in VECTOR_ROIS:
            raise ValueError(f"vector_roi must be one of {VECTOR_ROIS}, got {self.vector_roi!r}")
        object.__setattr__(self, "seg_hidden", tuple(int(h) for h in self.seg_hidden))
        object.__setattr__(self, "encoder_widths", tuple((str(k), int(v)) for k, v in self.encoder_widths))


def unit_scale_factor(models: EditingModels, ws: torch.Tensor, delta: torch.Tensor, edit, before: torch.Tensor,
                      after: torch.Tensor, rounds: int = 3, bounds: tuple[float, float] = (0.5, 4.0)
                      ) -> tuple[float, Optional[float]]:
    """The factor ``f`` for which ``w + f·δ`` (mode 1 on inverted faces ``ws [N, L, w_dim]``) changes ``edit``'s
    mask statistic by the true masks' change (``before``/``after``, ``[N, H, W]``), as a median over the faces: a
    mean of several sources' δW+ is shorter than each (their particular parts cancel), so unit scale would otherwise
    make only part of the renderer's edit. A few fixed-point rounds (the response is close to linear in the scale
    here), ``f`` kept within ``bounds``; of the factors tried, the one whose share came nearest the whole change (a
    statistic of a few pixels, such as the mouth's width, moves in steps, and a round can overshoot). Returns ``(f,
    the median share reached)``; ``(1, None)`` when the statistic cannot be read (no true change, or the vector moves
    it the wrong way)."""
    size = models.seg_resolution
    true_change = edit.effect(resize_mask(after, size)) - edit.effect(resize_mask(before, size))
    unedited = edit.effect(render_and_segment(models, ws)[1])
    factor, tried = 1.0, []
    for _ in range(rounds):
        edited = render_and_segment(models, ws + factor * delta)[1]
        share = float(torch.nanmedian((edit.effect(edited) - unedited) / true_change))
        if not share > 0.05:  # NaN, the wrong way, or (almost) no effect: nothing to calibrate by
            break
        tried.append((factor, round(share, 4)))
        if abs(share - 1) < 0.05:
            break
        factor = min(max(factor / share, bounds[0]), bounds[1])
    return min(tried, key=lambda pair: abs(pair[1] - 1), default=(1.0, None))


class DemoPipeline:
    """The stages, over one bundle folder ``out`` (which holds the generator) and a scratch folder ``work``."""

    def __init__(self, out: Path, work: Path, config: PipelineConfig, device: torch.device,
                 figures: Optional[Path] = None, log: Callable[[str], None] = print,
                 encoder_init: Optional[Path] = None):
        self.out, self.work, self.config, self.device = Path(out), Path(work), config, torch.device(device)
        # An encoder of a related generator (e.g. the bundle's earlier one) to start the encoder stage from.
        self.encoder_init = None if encoder_init is None else Path(encoder_init)
        self.figures = Path(figures) if figures is not None else self.work / "figures"
        self.log = log
        self.layout = BundleLayout(self.out)
        if not self.layout.generator.is_file():
            raise FileNotFoundError(f"{self.out} has no {BundleLayout.GENERATOR}: train and export the generator "
                                    f"first (python -m editor_core.training.gan export ...)")
        self.generator: Generator = load_generator(self.layout.generator, device=self.device)
        self.generator_id = generator_fingerprint(self.generator)
        self.resolution = self.generator.config.resolution
        if self.device.type == "cuda":
            enable_cuda_fast_math()

    # -- helpers of the stages, public for the studies that must measure as they do (bench/demo_miou_factors.py) -----

    def render(self, count: int, purpose: str, overrides: Optional[dict[str, torch.Tensor]] = None):
        """``count`` faces of ``purpose``'s own seed (``RENDER_SEEDS``): ``(params, images, masks)``."""
        return render_faces(count, self.config.seed * 1000 + RENDER_SEEDS[purpose], self.resolution, self.device,
                            overrides)

    @contextlib.contextmanager
    def _batched_synthesis(self) -> Iterator[None]:
        """Run the generator in train mode for a while: on CUDA that selects the shared-weight modulated convolution,
        the same maths as eval mode's per-sample grouped one and much faster for batches (train mode changes nothing
        else in ``Generator``). On the CPU the grouped path is kept."""
        if self.device.type != "cuda":
            yield
            return
        self.generator.train()
        try:
            yield
        finally:
            self.generator.eval()

    def embed(self, images: torch.Tensor, encoder: Encoder, steps: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder + optimisation inversion of ``images``, ``embed_batch`` at a time → ``(ws, psnr, lpips)``."""
        config = EmbedConfig(steps=steps, lpips_net=self.config.lpips_net, preview_every=steps)
        ws, psnrs, lpipses = [], [], []
        for part in chunks(len(images), self.config.embed_batch):
            with self._batched_synthesis():
                result = embed_image(self.generator, encoder, images[part], config)
            ws.append(result.ws.detach())
            psnrs.append(result.psnr.detach())
            lpipses.append(result.lpips.detach())
        return torch.cat(ws), torch.cat(psnrs).cpu(), torch.cat(lpipses).cpu()

    @torch.no_grad()
    def _reconstruction(self, ws: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(psnr [N], lpips [N])`` of ``G(ws)`` against ``images``."""
        perceptual = get_perceptual_loss(self.config.lpips_net, self.device)
        return reconstruction_quality(self.generator, ws, images, perceptual, self.config.forward_batch)

    @torch.no_grad()
    def _encode(self, encoder: Encoder, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder(images[part]) for part in chunks(len(images), self.config.forward_batch)])

    def segment(self, models: EditingModels, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of latents, ``forward_batch`` at a time."""
        images, labels = zip(*(render_and_segment(models, ws[part])
                               for part in chunks(len(ws), self.config.forward_batch)))
        return torch.cat(images), torch.cat(labels)

    def segmentation_iou(self, models: EditingModels, ws: torch.Tensor, masks: torch.Tensor) -> dict[str, Any]:
        """How the segmentation of latents ``ws`` matches the true ``masks``: per-class IoU pooled over the faces
        (``None`` for a class in neither) and their mean, ``{"miou", "per_class"}``."""
        schema = toonface_schema()
        labels = self.segment(models, ws)[1].cpu()
        iou = class_iou(labels, resize_mask(masks, models.seg_resolution).cpu(), schema.num_classes)
        return {"miou": float(iou.nanmean()), "per_class": named_iou(iou, schema.class_names)}

    def _load(self) -> ModelBundle:
        return load_bundle(self.out, device=self.device)

    def _skip(self, path: Path, force: bool) -> bool:
        if path.exists() and not force:
            self.log(f"{path} exists: skipped (use --force to rebuild it)")
            return True
        return False

    def _update_manifest(self, files: dict[str, dict[str, Any]], figures: Optional[dict[str, Any]] = None) -> None:
        """Merge entries into ``bundle.json``: what each file is and how it was made, sizes, hashes, figures."""
        path = self.layout.manifest
        manifest = json.loads(path.read_text()) if path.exists() else {
            "name": "toonface-demo", "description": "EditGAN Studio demo bundle: a StyleGAN2 generator of procedural "
            "toon faces with everything the studio learns for it.", "files": {}, "figures": {}}
        generator_meta = read_checkpoint(self.layout.generator)[2]
        manifest["files"][BundleLayout.GENERATOR] = {
            "what": "StyleGAN2 generator (128² toon faces), fp16", "how": "editor_core.training.gan, see "
            "docs/demo-model.md", "kimg": generator_meta.get("kimg"), "fingerprint": self.generator_id}
        manifest["files"].update(files)
        for name, entry in manifest["files"].items():
            file = self.out / name
            if file.is_file():
                entry["bytes"] = file.stat().st_size
                entry["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
        manifest["figures"].update(figures or {})
        manifest["updated"] = _now()
        manifest["total_bytes"] = sum(e.get("bytes", 0) for e in manifest["files"].values())
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    # -- stages -------------------------------------------------------------------------------------------------------

    def encoder_stage(self, force: bool = False) -> None:
        """Train the encoder on generator samples and renders; ship it in fp16 if that costs < 0.05 dB PSNR."""
        path = self.layout.encoder
        if self._skip(path, force):
            return
        cfg, G = self.config, self.generator
        self.work.mkdir(parents=True, exist_ok=True)
        state = self.work / ENCODER_STATE_FILE
        encoder = Encoder(EncoderConfig.for_generator(G, **dict(cfg.encoder_widths))).to(self.device)
        if self.encoder_init is not None and not state.exists():
            self._initialise_encoder(encoder)
        stream = RenderStream(cfg.encoder_batch, self.resolution, SEED_STREAMS["encoder_reals"], self.device)
        train_config = EncoderTrainConfig(steps=cfg.encoder_steps, batch_size=cfg.encoder_batch, lr=cfg.encoder_lr,
                                          lpips_net=cfg.lpips_net, seed=cfg.seed, checkpoint_path=str(state),
                                          checkpoint_every=cfg.encoder_chunk, preview_every=cfg.encoder_steps)
        done = len(read_checkpoint(state, ENCODER_TRAINING_KIND)[2]["history"]) if state.exists() else 0
        start = time.monotonic()
        deadline = start + cfg.encoder_minutes * 60
        history: list[dict[str, float]] = []
        # Chunks of steps, each resuming from the last checkpoint: the time budget is honoured at chunk boundaries and
        # the shipped encoder is always a consistent checkpoint.
        while done < cfg.encoder_steps and time.monotonic() < deadline:
            stream.position = done
            # float32 (TF32 on CUDA): bf16 autocast would also catch the mapping network, whose w_avg is float32.
            with self._batched_synthesis():
                history = train_encoder(G, encoder, stream, dataclasses.replace(
                    train_config, steps=min(done + cfg.encoder_chunk, cfg.encoder_steps)),
                    resume=state if state.exists() else None)
            done = len(history)
            self.log(f"encoder: step {done}, " + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items()))
        if done == 0:
            raise RuntimeError("the encoder time budget ended before the first training step")
        if not history:   # the budget was already spent by an earlier run: ship its last checkpoint
            history = train_encoder(G, encoder, stream, dataclasses.replace(train_config, steps=done), resume=state)
        encoder.eval().requires_grad_(False)

        _, images, _ = self.render(cfg.encoder_check_renders, "encoder_check")
        psnr32 = self._reconstruction(self._encode(encoder, images), images)[0].mean().item()
        rounded = _rounded_to_fp16(encoder)
        psnr16 = self._reconstruction(self._encode(rounded, images), images)[0].mean().item()
        ship_fp16 = abs(psnr32 - psnr16) < 0.05
        last = {k: round(sum(row[k] for row in history[-100:]) / len(history[-100:]), 5) for k in history[-1]}
        meta = {"created": _now(), "device": _device_name(self.device), "steps": done, "batch_size": cfg.encoder_batch,
                "lr": cfg.encoder_lr, "lpips_net": cfg.lpips_net, "real_images": "toon-face renders, a fresh batch "
                "per step", "session_minutes": round((time.monotonic() - start) / 60, 2), "final_losses": last,
                "encoder_only_psnr_fp32": round(psnr32, 3), "encoder_only_psnr_fp16": round(psnr16, 3),
                "dtype": "float16" if ship_fp16 else "float32",
                "initialised_from": None if self.encoder_init is None else str(self.encoder_init)}
        save_encoder(path, copy.deepcopy(encoder).half() if ship_fp16 else encoder, G, meta)
        self.log(f"encoder: saved {path} ({meta['dtype']}; encoder-only PSNR {psnr32:.2f} dB fp32, "
                 f"{psnr16:.2f} dB fp16)")
        self._update_manifest({BundleLayout.ENCODER: {
            "what": f"image → W+ encoder ({meta['dtype']})", "how": f"train_encoder, {done} steps of batch "
            f"{cfg.encoder_batch} generator samples + {cfg.encoder_batch} renders", "created": meta["created"]}})

    def _initialise_encoder(self, encoder: Encoder) -> None:
        """Start from ``encoder_init``'s weights (same architecture; its generator may differ: ``train_encoder``
        replaces ``w_avg`` with this generator's)."""
        tensors, config, meta = read_checkpoint(self.encoder_init, ENCODER_KIND)
        if EncoderConfig.from_dict(config) != encoder.config:
            raise ValueError(f"{self.encoder_init} is an encoder of another architecture ({config}); the encoder "
                             f"stage builds {encoder.config.to_dict()}")
        encoder.load_state_dict({name: t.float() for name, t in tensors.items()})
        self.log(f"encoder: starting from {self.encoder_init} (trained {meta.get('steps', '?')} steps for "
                 f"generator {meta.get('generator_fingerprint', '?')})")

    def regressor_stage(self, force: bool = False) -> None:
        """Train the render-parameter regressor (the Fréchet-distance features) on fresh renders."""
        path = self.layout.regressor
        if self._skip(path, force):
            # The regressor sees renders only, so one copied in from another generator's bundle serves this one as
            # well (and keeps Fréchet distances comparable across generators); it still needs its manifest entry.
            self._record_regressor(path)
            return
        cfg = self.config
        regressor = ParamRegressor(RegressorConfig(self.resolution, len(target_names()))).to(self.device)
        size, device, batch = self.resolution, self.device, cfg.regressor_batch

        def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            params = toonface.sample_params(batch, SEED_STREAMS["regressor"] + step, device=device)
            return toonface.render(params, size)[0], regression_targets(params)

        start = time.monotonic()
        history = train_param_regressor(regressor, batches, RegressorTrainConfig(
            steps=cfg.regressor_steps, minutes=cfg.regressor_minutes))
        params, images, _ = self.render(cfg.regressor_check_renders, "regressor_check")
        r2 = regression_r2(regressor, images, regression_targets(params))
        per_target = {name: round(float(value), 4) for name, value in zip(target_names(), r2)}
        meta = {"created": _now(), "device": _device_name(self.device), "steps": history[-1]["step"],
                "minutes": round((time.monotonic() - start) / 60, 2), "final_loss": history[-1]["loss"],
                "held_out_renders": cfg.regressor_check_renders, "r2": per_target,
                "r2_mean": round(float(r2.mean()), 4)}
        save_param_regressor(path, regressor, meta, dtype=torch.float16)
        self.log(f"regressor: saved {path}; held-out R² mean {meta['r2_mean']:.3f}")
        self._record_regressor(path)

    def _record_regressor(self, path: Path) -> None:
        """The manifest entry of the regressor file at ``path``, once it is checked to fit this bundle's renders."""
        resolution = load_param_regressor(path).config.resolution
        if resolution != self.resolution:
            raise ValueError(f"{path} regresses {resolution}² renders, not this generator's {self.resolution}²; "
                             f"delete it or rebuild it with --force")
        meta = read_checkpoint(path, REGRESSOR_KIND)[2]
        self._update_manifest({BundleLayout.REGRESSOR: {
            "what": "render-parameter regressor (fp16): feature network of the Fréchet distance",
            "how": "editor_core.training.param_regressor on fresh renders", "created": meta["created"]}},
            {"regressor_r2_mean": meta["r2_mean"]})

    def annotate_stage(self, force: bool = False) -> None:
        """Invert ``annotated_samples`` renders; their true masks become the annotations of the inverted latents."""
        path = self.layout.annotations
        if self._skip(path, force):
            return
        cfg = self.config
        encoder = load_encoder(self.layout.encoder, self.generator)
        params, images, masks = self.render(cfg.annotated_samples, "annotate")
        ws, psnrs, lpipses = self.embed(images, encoder, cfg.annotate_steps)
        meta = {
            "created": _now(), "device": _device_name(self.device), "source": "inverted renders with their true masks",
            "description": "Each latent is the inversion (encoder + optimisation) of a toon-face render; its mask is "
                           "the renderer's exact part mask of that render, not a segmentation of the inverted image. "
                           "They seed the demo data set: annotators correct them and add more.",
            "render_seed": cfg.seed * 1000 + RENDER_SEEDS["annotate"],
            "render_params": {name: value.tolist() for name, value in params.items()},
            "inversion": {"steps": cfg.annotate_steps, "lpips_net": cfg.lpips_net,
                          "psnr": [round(v, 3) for v in psnrs.tolist()],
                          "lpips": [round(v, 4) for v in lpipses.tolist()]}}
        AnnotatedSamples(ws.cpu(), masks.cpu(), toonface_schema(), meta).save(path)
        self.log(f"annotate: saved {path}; inversion PSNR {psnrs.mean():.2f} dB, LPIPS {lpipses.mean():.4f}")
        self._update_manifest({BundleLayout.ANNOTATIONS: {
            "what": f"{cfg.annotated_samples} annotated samples: inverted renders (W+) with their true masks",
            "how": f"embed_image, {cfg.annotate_steps} steps from the encoder's guess", "created": meta["created"]}})

    def segmentation_stage(self, force: bool = False) -> None:
        """Train the segmentation ensemble on the annotated samples; ship it in fp16."""
        path = self.layout.segmentation
        if self._skip(path, force):
            return
        cfg = self.config
        samples = AnnotatedSamples.load(self.layout.annotations)
        schema = toonface_schema()
        seg_config = SegmentationConfig.from_generator(self.generator, schema.num_classes, cfg.seg_resolution,
                                                       hidden=cfg.seg_hidden, ensemble_size=cfg.seg_ensemble)
        ensemble = SegmentationEnsemble(seg_config, seed=cfg.seed).to(self.device)
        start = time.monotonic()
        result = train_segmentation(self.generator, ensemble, samples.latents, samples.masks,
                                    SegTrainConfig(max_steps=cfg.seg_steps, seed=cfg.seed))
        meta = {"created": _now(), "device": _device_name(self.device), "annotated_samples": len(samples.latents),
                "steps": result.steps, "stopped_early": result.stopped_early,
                "minutes": round((time.monotonic() - start) / 60, 2),
                "training_miou": round(result.mean_iou, 4), "dtype": "float16"}
        # Stored in fp16 (half the bytes); loading casts back to float32 parameters.
        save_segmentation(path, copy.deepcopy(ensemble).half(), schema, meta)
        self.log(f"segmentation: saved {path}; {result.steps} steps, training mIoU {result.mean_iou:.3f}")
        self._update_manifest({BundleLayout.SEGMENTATION: {
            "what": f"segmentation branch: {cfg.seg_ensemble}-member MLP ensemble on synthesis features, "
                    f"{seg_config.resolution}², toonface schema (18 classes), fp16",
            "how": f"train_segmentation on the {len(samples.latents)} annotated samples", "created": meta["created"]}})

    def vectors_stage(self, force: bool = False) -> None:
        """Learn one vector per ``DEMO_EDITS`` entry with mode 3 from ground-truth edits, with thumbnails."""
        cfg = self.config
        pending = [edit for edit in DEMO_EDITS
                   if not self._skip(self.layout.vector(edit.name), force)]
        if not pending:
            return
        bundle = self._load()
        models = bundle.editing_models(get_perceptual_loss(cfg.lpips_net, self.device))
        sources = []
        for edit in pending:
            seed = cfg.seed * 1000 + RENDER_SEEDS["vector_sources"] + 10_000 * (DEMO_EDITS.index(edit) + 1)
            before_value = torch.full((cfg.vector_sources,), edit.before)
            params, images, before = render_faces(cfg.vector_sources, seed, self.resolution, self.device,
                                                  {edit.param: before_value})
            after = toonface.render(toonface.with_param(params, edit.param, edit.after), self.resolution)[1]
            sources.append((edit, seed, images, before, after))
        ws_all, psnrs, _ = self.embed(torch.cat([images for _, _, images, _, _ in sources]), bundle.encoder,
                                      cfg.annotate_steps)
        files = {}
        for index, (edit, seed, images, before, after) in enumerate(sources):
            ws = ws_all[index * cfg.vector_sources:(index + 1) * cfg.vector_sources]
            result = optimize_edit(models, ws, before, after, EditConfig(steps=cfg.vector_steps),
                                   edited_classes=edit.classes if cfg.vector_roi == "classes" else None)
            info = EditVectorInfo(
                name=edit.name, generator_id=self.generator_id, edited_classes=list(edit.classes),
                source={"kind": "ground-truth render edit, mode 3", "param": edit.param, "before": edit.before,
                        "after": edit.after, "sources": cfg.vector_sources, "render_seed": seed,
                        "steps": cfg.vector_steps, "roi": cfg.vector_roi,
                        "inversion_psnr": round(float(psnrs.mean()), 3),
                        "final_losses": {k: round(v, 5) for k, v in result.final_losses.items()}},
                scale_range=VECTOR_SCALE_RANGE, author="editor_core.training.demo_bundle",
                description=edit.description)
            vector = EditVector(result.delta.mean(0).cpu(), info)
            relative = BundleLayout.vector_name(edit.name)
            vector.save(self.out / relative)
            files.update(self._save_thumbnails(models, ws[:1], vector, "a source face, vector at scale 1"))
            files[relative] = {"what": f"edit vector '{edit.name}': {edit.description}",
                               "how": f"mode 3 on {cfg.vector_sources} inverted renders, {edit.param} "
                                      f"{edit.before} → {edit.after}, mean δW+", "created": info.created}
            self.log(f"vectors: saved {relative}; final losses {info.source['final_losses']}")
        self._update_manifest(files)

    def calibrate_stage(self, force: bool = False) -> None:
        """Rescale each vector so that scale 1 makes its renderer edit (``unit_scale_factor``) on fresh faces, drawn
        as the evaluation's transfer faces (each edit's parameter where its change fits) from a seed of their own and
        inverted as the studio inverts: a mean of several sources' δW+ is shorter than each, so unscaled it makes
        only part of the edit. A vector calibrated before is left alone unless ``force`` (then it is rescaled from
        where it stands)."""
        cfg = self.config
        bundle = self._load()
        pending = [edit for edit in DEMO_EDITS if edit.name in bundle.vectors
                   and (force or "calibration" not in bundle.vectors[edit.name].info.source)]
        if not pending:
            self.log("calibrate: every vector is calibrated already: skipped (use --force to calibrate again)")
            return
        models = bundle.editing_models(get_perceptual_loss(cfg.lpips_net, self.device))
        count, seed = cfg.calibration_faces, cfg.seed * 1000 + RENDER_SEEDS["vector_calibration"]
        params, images, before = render_faces(count, seed, self.resolution, self.device,
                                              transfer_overrides(count, seed))
        ws, psnrs, _ = self.embed(images, bundle.encoder, cfg.calibration_embed_steps)
        files = {}
        for edit in pending:
            vector = bundle.vectors[edit.name]
            after = toonface.render(edit.applied_to(params), self.resolution)[1]
            factor, reached = unit_scale_factor(models, ws, vector.delta.to(self.device), edit, before, after)
            source = {**vector.info.source, "unit_scale_factor": round(
                factor * vector.info.source.get("unit_scale_factor", 1.0), 4), "calibration": {
                "faces": count, "render_seed": seed, "embed_steps": cfg.calibration_embed_steps,
                "inversion_psnr": round(float(psnrs.mean()), 3), "factor": round(factor, 4),
                "median_share_of_true_change": reached}}
            calibrated = EditVector((factor * vector.delta).cpu(), dataclasses.replace(vector.info, source=source))
            relative = BundleLayout.vector_name(edit.name)
            calibrated.save(self.out / relative)
            files.update(self._save_thumbnails(models, ws[:1], calibrated, "a calibration face, vector at scale 1"))
            files[relative] = {"what": f"edit vector '{edit.name}': {edit.description}",
                               "how": f"mode 3 on inverted renders, {edit.param} {edit.before} → {edit.after}, "
                                      f"mean δW+ scaled ×{source['unit_scale_factor']} so that scale 1 makes the "
                                      f"renderer's edit on {count} fresh faces", "created": calibrated.info.created}
            self.log(f"calibrate: {relative} ×{factor:.3f} (median share of the true change on {count} fresh faces: "
                     f"{reached})")
        self._update_manifest(files)

    def _save_thumbnails(self, models: EditingModels, w: torch.Tensor, vector: EditVector, how: str
                         ) -> dict[str, dict[str, str]]:
        """Before/after thumbnails of ``vector`` on the face of latent ``w`` ``[1, L, w_dim]``: manifest entries."""
        (self.out / BundleLayout.THUMBNAILS).mkdir(parents=True, exist_ok=True)
        files = {}
        for suffix, image in (("before", self.generator.synthesis(w, noise_mode="const")),
                              ("after", apply_vectors(models, w, [vector], [1.0]).image)):
            save_image_grid(image, self.layout.thumbnail(vector.info.name, suffix), columns=1)
            files[BundleLayout.thumbnail_name(vector.info.name, suffix)] = {
                "what": f"thumbnail of '{vector.info.name}', {suffix}", "how": how}
        return files

    def evaluate_stage(self, force: bool = False) -> dict[str, Any]:
        """Measure the bundle (see the module docstring); writes ``evaluation.json``, the markdown table, figures."""
        path = self.layout.evaluation
        if self._skip(path, force):
            return json.loads(path.read_text())
        cfg = self.config
        start = time.monotonic()
        bundle = self._load()
        perceptual = get_perceptual_loss(cfg.lpips_net, self.device)
        models = bundle.editing_models(perceptual)
        report: dict[str, Any] = {"created": _now(), "device": _device_name(self.device),
                                  "generator": self.generator_id, "config": dataclasses.asdict(cfg)}

        eval_params, eval_images, eval_masks = self.render(cfg.eval_renders, "evaluate")
        transfer_seed = cfg.seed * 1000 + RENDER_SEEDS["transfer"]
        transfer_params, transfer_images, transfer_masks = self.render(
            cfg.transfer_renders, "transfer", transfer_overrides(cfg.transfer_renders, transfer_seed))
        images = torch.cat([eval_images, transfer_images])
        ws0 = self._encode(bundle.encoder, images)
        ws, psnrs, lpipses = self.embed(images, bundle.encoder, cfg.eval_embed_steps)
        self.log(f"evaluate: inverted {len(images)} renders ({time.monotonic() - start:.0f} s)")
        n = cfg.eval_renders
        psnr0, lpips0 = self._reconstruction(ws0[:n], eval_images)
        report["inversion"] = {
            "renders": n, "steps": cfg.eval_embed_steps, "lpips_net": cfg.lpips_net,
            "optimised": {"psnr": mean_and_std(psnrs[:n]), "lpips": mean_and_std(lpipses[:n])},
            "encoder_only": {"psnr": mean_and_std(psnr0), "lpips": mean_and_std(lpips0)}}

        report["segmentation"] = self._segmentation_figures(models, bundle, ws[:n], ws0[:n], eval_masks)
        report["frechet"] = self._frechet_figures(bundle)
        ws_transfer = ws[n:]
        report["transfer"] = self._transfer_figures(models, bundle, ws_transfer, transfer_params, transfer_images,
                                                    transfer_masks)
        report["direction"] = self._direction_figures(models, bundle)
        report["minutes"] = round((time.monotonic() - start) / 60, 2)
        path.write_text(json.dumps(report, indent=2) + "\n")
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "evaluation.md").write_text(report_markdown(report))
        self.log(report_markdown(report))
        self._update_manifest({BundleLayout.EVALUATION: {"what": "measured figures (JSON)", "how": "evaluate stage",
                                                 "created": report["created"]}}, headline_figures(report))
        return report

    def figures_stage(self, force: bool = False) -> None:
        """Sample and render grids, 8 held-out inversions with their segmentation, and one sheet per vector
        (2 held-out transfer faces: true before/after render, inversion, mode 1, mode 2, mode-2 segmentation)."""
        if self._skip(self.figures / "demo_inversions.png", force):
            return
        cfg = self.config
        bundle = self._load()
        models = bundle.editing_models(get_perceptual_loss(cfg.lpips_net, self.device))
        _, images, masks = self.render(8, "evaluate")
        transfer_seed = cfg.seed * 1000 + RENDER_SEEDS["transfer"]
        transfer_params, transfer_images, _ = self.render(2, "transfer", transfer_overrides(2, transfer_seed))
        ws, _, _ = self.embed(torch.cat([images, transfer_images]), bundle.encoder, cfg.eval_embed_steps)
        write_figures(self, models, bundle, images, masks, ws[:8], self._encode(bundle.encoder, images),
                            transfer_params, ws[8:])
        self.log(f"figures: written to {self.figures}")

    # -- evaluation parts ---------------------------------------------------------------------------------------------

    def _segmentation_figures(self, models: EditingModels, bundle: ModelBundle, ws: torch.Tensor, ws0: torch.Tensor,
                              masks: torch.Tensor) -> dict[str, Any]:
        figures = {name: self.segmentation_iou(models, latents, masks)
                   for name, latents in (("optimised", ws), ("encoder_only", ws0))}
        annotations = bundle.annotations
        figures["annotated_samples_fit"] = self.segmentation_iou(models, annotations.latents.to(self.device),
                                                                 annotations.masks)["miou"]
        figures["renders"] = len(ws)
        self.log(f"evaluate: mIoU {figures['optimised']['miou']:.4f} (encoder only "
                 f"{figures['encoder_only']['miou']:.4f})")
        return figures

    @torch.no_grad()
    def _frechet_figures(self, bundle: ModelBundle) -> dict[str, Any]:
        cfg, G = self.config, self.generator
        regressor = load_param_regressor(self.layout.regressor, self.device)

        def samples(seed: int, psi: float) -> torch.Tensor:
            return sample_features(G, regressor, cfg.fd_samples, seed, psi)

        def renders_of(purpose: str) -> torch.Tensor:
            return render_features(regressor, cfg.fd_samples, cfg.seed * 1000 + RENDER_SEEDS[purpose],
                                   self.resolution, self.device)

        renders = renders_of("fd_renders")
        figures = {
            "samples": cfg.fd_samples, "feature_dim": int(renders.shape[1]),
            "samples_vs_renders": frechet_distance(samples(SAMPLE_SEEDS["fd_samples"], 1.0), renders),
            "samples_psi0.7_vs_renders": frechet_distance(samples(SAMPLE_SEEDS["fd_samples_truncated"], 0.7), renders),
            "renders_vs_renders": frechet_distance(renders_of("fd_renders_floor"), renders),
            "regressor_r2_mean": read_checkpoint(self.layout.regressor)[2].get("r2_mean")}
        self.log(f"evaluate: FD samples vs renders {figures['samples_vs_renders']:.4f} "
                 f"(renders vs renders {figures['renders_vs_renders']:.4f})")
        return figures

    def _transfer_figures(self, models: EditingModels, bundle: ModelBundle, ws: torch.Tensor,
                          params: ToonFaceParams, images: torch.Tensor, masks: torch.Tensor) -> dict[str, Any]:
        cfg = self.config
        perceptual = models.perceptual
        size = models.seg_resolution
        original_images, original_labels = self.segment(models, ws)
        figures: dict[str, Any] = {"renders": len(ws)}
        for edit in DEMO_EDITS:
            vector = bundle.vectors[edit.name]
            truth_images, truth_masks = toonface.render(edit.applied_to(params), self.resolution)
            region = in_classes(masks, edit.classes) | in_classes(truth_masks, edit.classes)
            outside = ~dilate(region)[:, None]
            truth_small = resize_mask(truth_masks, size)

            mode1 = [apply_vectors(models, ws[part], [vector], [1.0]) for part in chunks(len(ws), cfg.forward_batch)]
            edited = {"mode1": (torch.cat([a.image for a in mode1]), torch.cat([a.mask for a in mode1]))}
            edited["mode2"], refined = self.refine(models, ws, vector, edited["mode1"], original_labels)

            def measure(image: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
                lpips = torch.cat([perceptual(image[p], truth_images[p]) for p in chunks(len(ws), cfg.forward_batch)])
                change = mean_abs_change(image, original_images, outside)
                moved = edit.effect(labels) > edit.effect(original_labels)
                iou = mean_iou(labels.cpu(), truth_small.cpu(), models.num_classes, classes=edit.classes)
                return {"iou": iou, "lpips_to_truth": float(lpips.mean()),
                        "outside_change": float(change.mean()), "direction": float(moved.float().mean())}

            entry = {name: measure(*result) for name, result in edited.items()}
            entry["unedited"] = measure(original_images, original_labels)
            entry["truth"] = {"outside_change": float(mean_abs_change(truth_images, images, outside).mean()),
                              "direction": float((edit.effect(truth_masks) > edit.effect(masks)).float().mean())}
            entry["mode2"]["refined_images"] = refined
            figures[edit.name] = entry
            self.log(f"evaluate: {edit.name}: " + json.dumps({k: v for k, v in entry.items()}))
        return figures

    def refine(self, models: EditingModels, ws: torch.Tensor, vector: EditVector,
               mode1: tuple[torch.Tensor, torch.Tensor], original_labels: torch.Tensor
               ) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        """Mode 2 on every image whose region of interest is not empty (the vector's classes appear in its original
        or mode-1 segmentation); the others keep their mode-1 result. Returns the results and how many refined."""
        images, labels = mode1[0].clone(), mode1[1].clone()
        has_roi = (in_classes(original_labels, vector.info.edited_classes)
                   | in_classes(mode1[1], vector.info.edited_classes)).flatten(1).any(1)
        indices = has_roi.nonzero()[:, 0]
        config = refine_config(steps=self.config.refine_steps)
        for part in chunks(len(indices), self.config.forward_batch):
            chosen = indices[part]
            result = refine_vectors(models, ws[chosen], [vector], [1.0], config)
            images[chosen], labels[chosen] = result.image, result.mask
        return (images, labels), int(len(indices))

    @torch.no_grad()
    def _direction_figures(self, models: EditingModels, bundle: ModelBundle) -> dict[str, Any]:
        """Share of fresh faces on which each vector (mode 1, scale 1) moves its ``effect`` statistic the right way,
        as read by the segmentation branch, on generator samples (ψ = 1) and on encoder-only inversions of fresh
        renders (what the shipped tests check, on 8 faces)."""
        count = self.config.direction_samples
        z = torch.randn(count, self.generator.z_dim, generator=torch.Generator().manual_seed(SAMPLE_SEEDS["direction"]))
        _, images, _ = self.render(count, "direction")
        figures: dict[str, Any] = {"faces": count}
        for name, ws in (("samples", self.generator.mapping(z.to(self.device))),
                         ("encoded_renders", self._encode(bundle.encoder, images))):
            labels = self.segment(models, ws)[1]
            figures[name] = {}
            for edit in DEMO_EDITS:
                vector = bundle.vectors[edit.name]
                after = torch.cat([apply_vectors(models, ws[part], [vector], [1.0]).mask
                                   for part in chunks(count, self.config.forward_batch)])
                figures[name][edit.name] = float((edit.effect(after) > edit.effect(labels)).float().mean())
        return figures


def _rounded_to_fp16(module: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of ``module`` whose floating-point weights are rounded to float16: what loading an fp16 ship
    gives."""
    rounded = copy.deepcopy(module)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half())
    return rounded


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
