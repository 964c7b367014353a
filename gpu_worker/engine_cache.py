"""Models loaded once per worker process, keyed by the checkpoint file's sha256 (a new version gets a new key)."""
from __future__ import annotations

import functools

import torch
from django.conf import settings

from editor_core.checkpoints import load_generator
from editor_core.editing import EditingModels
from editor_core.encoder import Encoder, load_encoder
from editor_core.inversion import EmbedConfig
from editor_core.perceptual import get_perceptual_loss
from editor_core.pivotal import PivotalConfig, WeightDelta, apply_delta
from editor_core.segmentation import load_segmentation
from editor_core.vectors import EditVector
from webapp.storage import local_path

GENERATORS_KEPT = 4  # a GPU holds a few generators; older ones are dropped (least recently used)
# Interactive defaults on a CPU, chosen on measured quality (docs/benchmarks.md, "CPU — issue 17").
CPU_LPIPS = "alex"
CPU_LOSS_MEMBERS = 3
CPU_MODE1_MASK_MEMBERS = 3
# The engine's 300 embedding steps gain 0.45 dB and 2 % of parts over 100 (docs/demo-model.md, "Edits that do what
# was painted") for 3× the time: on a CPU that is half a minute a photo, so an interactive CPU worker takes 100.
CPU_EMBED_STEPS = 100
# Pivotal tuning on a CPU: 50 steps at a larger learning rate lift the demo's inversions from ~21 to ~29-31 dB in about
# 20 s (docs/demo-model.md, "Pivotal tuning"); a GPU runs the engine's defaults.
CPU_TUNE = {"steps": 50, "lr": 1e-3}
# Segmentation retraining when the request names no pixels per step. The first layer at every sampled pixel is the
# cost of a step: on a CPU the admin page's 300 steps × 16 384 pixels took 36 minutes, and fewer pixels drawn
# class-balanced, with the learning rate decayed over the run, keep the held-out mIoU (docs/benchmarks.md, "CPU —
# issue 17").
RETRAIN_PIXELS_PER_STEP = 16384
CPU_RETRAIN = {"pixels_per_step": 1024, "class_balance": 0.5, "lr_schedule": "cosine", "lr": 3e-3}


def device() -> torch.device:
    """STUDIO_DEVICE: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    if settings.STUDIO_DEVICE == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(settings.STUDIO_DEVICE)


@functools.lru_cache(maxsize=GENERATORS_KEPT)
def _generator(name: str, sha256: str, device_name: str):
    return load_generator(local_path(name, sha256), device=device_name)


@functools.lru_cache(maxsize=GENERATORS_KEPT * 2)
def _segmenter(name: str, sha256: str, device_name: str):
    ensemble, schema, _meta = load_segmentation(local_path(name, sha256), device=device_name)
    return ensemble, schema


@functools.lru_cache(maxsize=GENERATORS_KEPT)
def _encoder(name: str, sha256: str, generator_name: str, generator_sha: str, device_name: str) -> Encoder:
    return load_encoder(local_path(name, sha256), _generator(generator_name, generator_sha, device_name))


@functools.lru_cache(maxsize=256)
def _vector(name: str) -> EditVector:
    return EditVector.load(local_path(name, name.replace("/", "_")))


@functools.lru_cache(maxsize=GENERATORS_KEPT)
def _tuned_generator(generator_name: str, generator_sha: str, generator_id: str, tuning_name: str, tuning_sha: str,
                     device_name: str):
    delta = WeightDelta.load(local_path(tuning_name, tuning_sha), generator_id)
    return apply_delta(_generator(generator_name, generator_sha, device_name), delta, generator_id)


def generator(checkpoint):
    """The ``Generator`` of a registry Checkpoint row (eval mode, on this worker's device)."""
    return _generator(checkpoint.file.name, checkpoint.sha256, str(device()))


def _generator_with_tuning(generator_name: str, generator_sha: str, generator_id: str, tuning_name: str,
                           tuning_sha: str, device_name: str):
    """The base generator, or its copy tuned by the delta file ``tuning_name`` when one is named."""
    if not tuning_name:
        return _generator(generator_name, generator_sha, device_name)
    return _tuned_generator(generator_name, generator_sha, generator_id, tuning_name, tuning_sha, device_name)


def _tuning_of(sample) -> tuple[str, str]:
    """``(delta file name, its sha256)`` of a sample's pivotal tuning; ``("", "")`` for none."""
    return (sample.tuning.name, sample.tuning_sha256) if sample is not None and sample.tuning else ("", "")


def sample_generator(sample):
    """The generator a sample is rendered with: its dataset's, tuned by the sample's pivotal tuning if it has one
    (built once per tuning file, sharing the base's untouched tensors)."""
    checkpoint = sample.dataset.generator
    return _generator_with_tuning(checkpoint.file.name, checkpoint.sha256, checkpoint.fingerprint,
                                  *_tuning_of(sample), str(device()))


def segmenter(checkpoint):
    """``(SegmentationEnsemble, engine LabelSchema)`` of a segmentation Checkpoint row."""
    return _segmenter(checkpoint.file.name, checkpoint.sha256, str(device()))


def encoder(checkpoint) -> Encoder:
    """The ``Encoder`` of an encoder Checkpoint row, on its generator's device (refuses another generator's)."""
    generator_row = checkpoint.generator
    return _encoder(checkpoint.file.name, checkpoint.sha256, generator_row.file.name, generator_row.sha256,
                    str(device()))


def vector(row) -> EditVector:
    """The engine ``EditVector`` of a library row (files never change once written, so the name is the key)."""
    return _vector(row.file.name)


def _on_cpu() -> bool:
    return device().type == "cpu"


def lpips_net() -> str:
    """The LPIPS backbone of edits and embeddings (``STUDIO_EDIT_LPIPS``; auto: AlexNet on a CPU, VGG on a GPU)."""
    if settings.STUDIO_EDIT_LPIPS != "auto":
        return settings.STUDIO_EDIT_LPIPS
    return CPU_LPIPS if _on_cpu() else "vgg"


def edit_speed_options() -> dict:
    """``EditConfig`` speed options of modes 2 and 3 on this worker: the ensemble members in the loss
    (``STUDIO_EDIT_LOSS_MEMBERS``; the final mask always uses all) and, on a CPU, a preview image every step."""
    members = settings.STUDIO_EDIT_LOSS_MEMBERS or (CPU_LOSS_MEMBERS if _on_cpu() else None)
    return {"loss_members": members, "preview_image_every": 1 if _on_cpu() else None}


def embed_config(steps: int | None) -> EmbedConfig:
    """``EmbedConfig`` of an embedding on this worker: ``steps`` as the request names them, else
    ``STUDIO_EMBED_STEPS`` (0: ``CPU_EMBED_STEPS`` on a CPU, the engine's default on a GPU); the worker's LPIPS
    backbone and ``STUDIO_EDIT_COMPILE``."""
    default = settings.STUDIO_EMBED_STEPS or (CPU_EMBED_STEPS if _on_cpu() else EmbedConfig.steps)
    return EmbedConfig(steps=int(steps or default), lpips_net=lpips_net(),
                       compile_mode=settings.STUDIO_EDIT_COMPILE or None)


def tune_config(steps: int | None) -> PivotalConfig:
    """``PivotalConfig`` of a tuning: ``CPU_TUNE`` on a CPU, the engine's defaults on a GPU; ``steps`` as the request
    names them."""
    options = dict(CPU_TUNE) if _on_cpu() else {}
    return PivotalConfig(**{**options, **({"steps": int(steps)} if steps else {})})


def perceptual():
    """The LPIPS loss of ``lpips_net()`` on this worker's device (loaded once per process)."""
    return get_perceptual_loss(lpips_net(), str(device()))


def retrain_options(pixels_per_step: int | None) -> dict:
    """``SegTrainConfig`` sampling options of a retraining: the request's ``pixels_per_step`` as asked (uniform
    draws, constant learning rate), or when it names none ``CPU_RETRAIN`` on a CPU and ``RETRAIN_PIXELS_PER_STEP``
    on a GPU."""
    if pixels_per_step:
        return {"pixels_per_step": int(pixels_per_step)}
    return dict(CPU_RETRAIN) if _on_cpu() else {"pixels_per_step": RETRAIN_PIXELS_PER_STEP}


def mode1_mask_members() -> int | None:
    """Ensemble members that segment a mode-1 result (``STUDIO_MODE1_MASK_MEMBERS``; None: all)."""
    return settings.STUDIO_MODE1_MASK_MEMBERS or (CPU_MODE1_MASK_MEMBERS if _on_cpu() else None)


@functools.lru_cache(maxsize=GENERATORS_KEPT)
def _editing_models(generator_name: str, generator_sha: str, tuning_name: str, tuning_sha: str,
                    segmentation_name: str, segmentation_sha: str, generator_id: str, device_name: str, net: str,
                    precision: str, roi_chunk: int, compile_mode: str) -> EditingModels:
    ensemble, _schema = _segmenter(segmentation_name, segmentation_sha, device_name)
    rendering = _generator_with_tuning(generator_name, generator_sha, generator_id, tuning_name, tuning_sha,
                                       device_name)
    return EditingModels(generator=rendering, segmenter=ensemble, perceptual=get_perceptual_loss(net, device_name),
                         generator_id=generator_id, precision=precision, roi_pixel_chunk=roi_chunk or None,
                         compile_mode=compile_mode or None)


def editing_models(generator_checkpoint, segmentation_checkpoint, sample=None) -> EditingModels:
    """The frozen networks of an edit, built once per generator, branch and ``sample``'s pivotal tuning (none: the
    generator as it is): its sub-ensembles (``EditingModels.segmenter_members``) are then made once too."""
    return _editing_models(generator_checkpoint.file.name, generator_checkpoint.sha256, *_tuning_of(sample),
                           segmentation_checkpoint.file.name, segmentation_checkpoint.sha256,
                           generator_checkpoint.fingerprint, str(device()), lpips_net(),
                           settings.STUDIO_EDIT_PRECISION if device().type == "cuda" else "float32",
                           settings.STUDIO_EDIT_ROI_CHUNK, settings.STUDIO_EDIT_COMPILE)
