"""Editing by segmentation: EditGAN's three modes.

Mode 3 (``optimize_edit``) optimises the W+ latent so that the segmentation branch reproduces the user's edited mask
inside the region of interest while the image stays the same outside it. The latent change is an edit vector.
Mode 1 (``apply_vectors``) applies stored vectors, ``w + Σ εᵢ·δᵢ``, in one forward pass. Mode 2 (``refine_vectors``)
applies vectors, then refines the result self-supervised: the target is the segmentation the applied latent produces.

Losses follow the paper's release (defaults in ``EditConfig``): outside the ROI
``15·(10·LPIPS + 5·L2)`` against the original image, inside ``1·CE`` of the segmentation branch against the target
mask, plus ``1·‖w − E(G(w))‖²`` (encoder consistency, mode 3 only).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import ContextManager, Optional, Sequence

import torch
import torch.nn.functional as F

from editor_core.compiled import CompiledPasses
from editor_core.progress import ProgressCallback, ProgressEvent, report
from editor_core.vectors import EditVector, EditVectorInfo, combined_delta


_AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EditingModels:
    """The frozen networks an edit needs. Gradients flow through them to the latent only.

    ``generator``: StyleGAN2 with feature taps; ``segmenter``: the segmentation ensemble for that generator;
    ``perceptual``: an LPIPS module (VGG in the release); ``encoder``: image → W+ (optional; enables the
    encoder-consistency term); ``generator_id``: the fingerprint that edit vectors are checked against.
    ``precision``: ``"float32"`` (default, exact) or ``"bfloat16"`` / ``"float16"``, which run every network pass of
    an edit under autocast (matrix work in reduced precision with float32 accumulation; the latent, Adam and the loss
    reductions stay float32). It halves the memory traffic that dominates a 512² edit step on a GPU.
    ``roi_pixel_chunk``: evaluate the segmentation branch at the ROI pixels this many at a time and recompute each
    chunk in backward (``SegmentationEnsemble.forward_pixels``), so a large edit's memory no longer grows with its
    ROI, for one more forward pass of the per-pixel layers; ``None`` (default) keeps every pixel's activations.
    ``compile_mode``: run the four networks' passes of an edit (synthesis, full-map and ROI segmentation, LPIPS)
    through ``torch.compile`` in this mode (``COMPILE_MODES``; ``"reduce-overhead"`` adds CUDA graphs); each is
    compiled on first use, once per input shape. ``None`` (default): eager.
    """

    generator: torch.nn.Module
    segmenter: torch.nn.Module
    perceptual: torch.nn.Module
    generator_id: str
    encoder: Optional[torch.nn.Module] = None
    precision: str = "float32"
    roi_pixel_chunk: Optional[int] = None
    compile_mode: Optional[str] = None
    _subsets: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _passes: CompiledPasses = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.precision not in _AUTOCAST_DTYPES:
            raise ValueError(f"precision must be one of {sorted(_AUTOCAST_DTYPES)}, got {self.precision!r}")
        if self.roi_pixel_chunk is not None and self.roi_pixel_chunk < 1:
            raise ValueError(f"roi_pixel_chunk must be ≥ 1 or None, got {self.roi_pixel_chunk}")
        self._passes = CompiledPasses(self.compile_mode)
        for module in (self.generator, self.segmenter, self.perceptual, self.encoder):
            if module is not None:
                module.eval().requires_grad_(False)

    def autocast(self) -> ContextManager:
        """The context every forward pass of an edit runs in (a no-op at ``precision="float32"``)."""
        dtype = _AUTOCAST_DTYPES[self.precision]
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    # -- the networks' passes, compiled when compile_mode asks -------------------------------------------------------

    def synthesize(self, ws: torch.Tensor, return_features: bool = False):
        """``generator.synthesis(ws, noise_mode="const")``: the image ``[B,3,H,W]`` (and the feature maps).

        Compiled, a batch of several images modulates activations rather than weights (``fused_modconv=False``, the
        same maths): the fused path's grouped convolution has one group per image, a count Inductor specialises, so
        every new batch size of the live sliders was a new compilation (26–35 s each at 1024² on an H100,
        docs/benchmarks.md). One image keeps the fused path whose compiled speed round 3 measured."""
        fused_modconv = None if self._passes.mode is None or ws.shape[0] == 1 else False
        return self._passes(self.generator.synthesis, ws, noise_mode="const", return_features=return_features,
                            fused_modconv=fused_modconv)

    def labels(self, segmenter: torch.nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
        """Full-map labels ``[B, h, w]`` of ``segmenter`` (the ensemble or a sub-ensemble): the argmax of the
        members' mean softmax. Compiled as one function, so the member logits never leave it."""
        return self._passes(_ensemble_labels, segmenter, features)

    def segment_pixels(self, segmenter: torch.nn.Module, features: list[torch.Tensor],
                       pixels: torch.Tensor) -> torch.Tensor:
        """Member logits ``[B, E, K, P]`` at flat pixels ``[B, P]`` that are valid by construction (no range check,
        whose device → host read would stall a GPU queue)."""
        return self._passes(segmenter.forward_pixels, features, pixels, pixel_chunk=self.roi_pixel_chunk,
                         check_pixels=False)

    def lpips(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``perceptual(image, target)``: LPIPS ``[B]`` (``target`` may be its precomputed ``reference``)."""
        return self._passes(self.perceptual, image, target)

    def begin_iteration(self) -> None:
        """Mark the start of one request's or one step's passes: CUDA-graph replays of the previous iteration may
        then reuse their output memory (their outputs are cloned, so nothing a caller holds is overwritten)."""
        self._passes.begin_iteration()

    def segmenter_members(self, members: Optional[int]) -> torch.nn.Module:
        """The segmentation ensemble, or (``members`` < E) the sub-ensemble of its first ``members`` members,
        built once per count (``SegmentationEnsemble.subset``)."""
        if members is None or members >= self.segmenter.config.ensemble_size:
            return self.segmenter
        if members not in self._subsets:
            self._subsets[members] = self.segmenter.subset(members).eval().requires_grad_(False)
        return self._subsets[members]

    @property
    def num_classes(self) -> int:
        return self.segmenter.config.num_classes

    @property
    def seg_resolution(self) -> int:
        return self.segmenter.config.resolution


@dataclass
class EditConfig:
    """Hyper-parameters of edit optimisation (mode 3): the EditGAN release's losses and ROI dilation; 60 steps at lr
    0.05 instead of its 30 at 0.02, the best ``bench/edit_truth.py`` measured (docs/demo-model.md, *Edits that do
    what was painted*)."""

    steps: int = 60
    lr: float = 0.05
    dilation_kernel: int = 3
    dilation_iterations: int = 3
    outside_weight: float = 15.0
    lpips_weight: float = 10.0
    l2_weight: float = 5.0
    ce_weight: float = 1.0
    encoder_weight: float = 1.0
    preview_every: int = 5
    # Stop once every image's live follow score (the share of its ROI whose label already is the target) reaches
    # this share; None runs all the steps.
    stop_follow: Optional[float] = None
    # Speed options (defaults: the exact release computation).
    loss_members: Optional[int] = None  # ensemble members in the inside-the-ROI loss (None: all; the mask: all)
    encoder_every: int = 1  # the encoder-consistency term on every k-th step only
    preview_image_every: Optional[int] = None  # preview image (without mask) this often too; None: preview_every

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")
        if self.loss_members is not None and self.loss_members < 1:
            raise ValueError(f"loss_members must be ≥ 1 or None, got {self.loss_members}")
        if self.encoder_every < 1:
            raise ValueError(f"encoder_every must be ≥ 1, got {self.encoder_every}")
        if self.preview_image_every is not None and self.preview_image_every < 1:
            raise ValueError(f"preview_image_every must be ≥ 1 or None, got {self.preview_image_every}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.stop_follow is not None and not 0 < self.stop_follow <= 1:
            raise ValueError(f"stop_follow must be a share in (0, 1] or None, got {self.stop_follow}")
        if self.dilation_kernel < 1 or self.dilation_kernel % 2 == 0:
            raise ValueError(f"dilation_kernel must be a positive odd number, got {self.dilation_kernel}")
        if self.dilation_iterations < 0:
            raise ValueError(f"dilation_iterations must be ≥ 0, got {self.dilation_iterations}")
        weights = (self.outside_weight, self.lpips_weight, self.l2_weight, self.ce_weight, self.encoder_weight)
        if min(weights) < 0:
            raise ValueError("loss weights must be ≥ 0")


def refine_config(steps: int = 10, **overrides) -> EditConfig:
    """Mode 2's settings: the release's (lr 0.02, without the encoder term) with 10 (or 30) steps; mode 3's measured
    defaults are not mode 2's, which the edit benchmark does not measure."""
    return EditConfig(steps=steps, **{"lr": 0.02, "encoder_weight": 0.0, **overrides})


@dataclass
class EditResult:
    """Outcome of an optimised edit (modes 2 and 3).

    ``ws`` ``[B, num_ws, w_dim]`` edited latent; ``delta`` = ``ws − ws_original`` (the edit vector); ``image``
    ``[B,3,H,W]``; ``mask`` ``[B,h,w]`` segmentation of the edited image; ``roi`` ``[B,h,w]`` bool (at the
    segmentation resolution); ``target_mask`` what the segmentation was pushed towards; ``history`` the losses of each
    step; ``edited_classes`` the classes the edit is about.
    """

    ws: torch.Tensor
    delta: torch.Tensor
    image: torch.Tensor
    mask: torch.Tensor
    roi: torch.Tensor
    target_mask: torch.Tensor
    edited_classes: list[int]
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final_losses(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


@dataclass
class AppliedEdit:
    """Outcome of mode 1: ``ws`` ``[B, num_ws, w_dim]``, ``image`` ``[B,3,H,W]``, ``mask`` ``[B,h,w]`` (None when
    not asked for)."""

    ws: torch.Tensor
    image: torch.Tensor
    mask: Optional[torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------------
# Masks and the region of interest


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour resize of an int64 mask ``[B,H,W]`` (or a bool one) to ``[B,size,size]``."""
    if mask.shape[-2:] == (size, size):
        return mask
    resized = F.interpolate(mask[:, None].float(), size=(size, size), mode="nearest")[:, 0]
    return resized.to(mask.dtype)


def dilate(region: torch.Tensor, kernel: int = 3, iterations: int = 3) -> torch.Tensor:
    """Binary dilation of ``region`` ``[B,H,W]`` bool with a square ``kernel``, repeated ``iterations`` times."""
    grown = region[:, None].float()
    for _ in range(iterations):
        grown = F.max_pool2d(grown, kernel, stride=1, padding=kernel // 2)
    return grown[:, 0] > 0.5


def changed_classes(original: torch.Tensor, edited: torch.Tensor) -> list[int]:
    """Classes that appear, in either mask, at a pixel whose label the user changed."""
    changed = original != edited
    return sorted(set(original[changed].unique().tolist()) | set(edited[changed].unique().tolist()))


def edit_roi(original: torch.Tensor, edited: torch.Tensor, edited_classes: Optional[Sequence[int]] = None,
             kernel: int = 3, iterations: int = 3) -> torch.Tensor:
    """Region of interest ``[B,H,W]`` bool: the pixels whose label changed, plus every pixel of the explicitly given
    ``edited_classes`` in either mask, dilated.

    Whole classes join only when asked for: adding every class the paint touches (the release's rule) made nearly
    the whole image the ROI as soon as the paint touched skin or background (``bench/edit_truth.py`` measured it),
    so nothing outside was held still and the cross-entropy was spread over pixels the artist never painted."""
    if original.shape != edited.shape:
        raise ValueError(f"original mask {tuple(original.shape)} and edited mask {tuple(edited.shape)} differ in shape")
    region = original != edited
    if edited_classes:
        class_ids = torch.as_tensor(list(edited_classes), dtype=original.dtype, device=original.device)
        region = region | torch.isin(original, class_ids) | torch.isin(edited, class_ids)
    return dilate(region, kernel, iterations)


def _check_mask(mask: torch.Tensor, num_classes: int, what: str) -> torch.Tensor:
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise ValueError(f"{what} must be an integer tensor [B,H,W] of class indices, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= num_classes):
        raise ValueError(f"{what} holds labels outside 0..{num_classes - 1}: "
                         f"found {int(mask.min())}..{int(mask.max())}")
    return mask.long()


def _check_roi(roi: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An explicit ROI ``[B,H,W]`` (or ``[H,W]``), bool or 0/1 integers → bool on ``like``'s device and size
    (nearest resize)."""
    if roi.ndim == 2:
        roi = roi[None]
    if roi.ndim != 3 or roi.shape[0] != like.shape[0] or roi.dtype.is_floating_point or roi.dtype.is_complex:
        raise ValueError(f"roi must be a bool or integer tensor [B,H,W] with B = {like.shape[0]}, got {roi.dtype} "
                         f"{tuple(roi.shape)}")
    return resize_mask((roi != 0).to(like.device), like.shape[-1])


def _check_latent(models: EditingModels, ws: torch.Tensor) -> torch.Tensor:
    G = models.generator
    expected = (G.num_ws, G.config.w_dim)
    if ws.ndim == 2:
        ws = ws[None]
    if ws.ndim != 3 or tuple(ws.shape[1:]) != expected:
        raise ValueError(f"latent must be W+ of shape [B, {expected[0]}, {expected[1]}], got {tuple(ws.shape)}")
    if not torch.isfinite(ws).all():
        raise ValueError("latent contains NaN or infinite values")
    return ws.to(models.device, torch.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Forward passes


def render_image(models: EditingModels, ws: torch.Tensor) -> torch.Tensor:
    """Image ``[B,3,H,W]`` (float32) of a latent, without gradients (an ordinary tensor: usable as a loss target)."""
    models.begin_iteration()
    with torch.no_grad(), models.autocast():
        return models.synthesize(ws).float()


@torch.inference_mode()
def render_and_segment(models: EditingModels, ws: torch.Tensor,
                       members: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``[B,3,H,W]`` (float32) and labels ``[B,h,w]`` of a latent, without gradients; ``members``: label with
    the first that many ensemble members only (``None``: all)."""
    models.begin_iteration()
    with models.autocast():
        image, features = models.synthesize(_check_latent(models, ws), return_features=True)
    return image.float(), _labels(models, features, members)


# ---------------------------------------------------------------------------------------------------------------------
# Mode 1


@torch.inference_mode()
def apply_vectors(models: EditingModels, ws: torch.Tensor, vectors: Sequence[EditVector],
                  scales: torch.Tensor | Sequence[float], mask_members: Optional[int] = None,
                  with_mask: bool = True) -> AppliedEdit:
    """Mode 1: ``w + Σ εᵢ·δᵢ`` → image and segmentation, one forward pass, no optimisation.

    ``scales`` is ``[V]`` (the same for every image) or ``[B, V]`` (one row per image: how the worker batches
    requests of several users into one pass). ``mask_members``: segment with the first that many ensemble members
    (the mask is most of a CPU's mode-1 time; ``None``: all). ``with_mask=False``: the image alone (``mask`` None),
    for a slider that shows only the image.
    """
    ws = _check_latent(models, ws)
    delta = combined_delta([_on(v, models.device) for v in vectors], torch.as_tensor(scales, device=models.device),
                           models.generator_id)
    edited = ws + delta
    if not with_mask:
        return AppliedEdit(ws=edited, image=render_image(models, edited), mask=None)
    image, mask = render_and_segment(models, edited, mask_members)
    return AppliedEdit(ws=edited, image=image, mask=mask)


def _on(vector: EditVector, device: torch.device) -> EditVector:
    return vector if vector.delta.device == device else replace(vector, delta=vector.delta.to(device))


# ---------------------------------------------------------------------------------------------------------------------
# Modes 2 and 3: optimisation


def prepare_edit(models: EditingModels, ws: torch.Tensor, original_mask: torch.Tensor, edited_mask: torch.Tensor,
                 config: EditConfig = EditConfig(), edited_classes: Optional[Sequence[int]] = None,
                 roi: Optional[torch.Tensor] = None) -> "EditOptimizer":
    """Validate a mode-3 request and set up its optimisation (see :func:`optimize_edit`)."""
    ws = _check_latent(models, ws)
    size = models.seg_resolution
    original = resize_mask(_check_mask(original_mask, models.num_classes, "original mask").to(models.device), size)
    edited = resize_mask(_check_mask(edited_mask, models.num_classes, "edited mask").to(models.device), size)
    if original.shape[0] != ws.shape[0] or edited.shape[0] != ws.shape[0]:
        raise ValueError(f"got {ws.shape[0]} latents but {original.shape[0]} original / {edited.shape[0]} edited masks")
    given = None if edited_classes is None else sorted({int(c) for c in edited_classes})
    classes = changed_classes(original, edited) if given is None else given
    if not classes:
        raise ValueError("the edited mask is identical to the original and no edited classes were given: "
                         "nothing to edit")
    if roi is None:
        roi = edit_roi(original, edited, given, config.dilation_kernel, config.dilation_iterations)
    else:
        roi = _check_roi(roi, original)
    return EditOptimizer(models, ws, ws, render_image(models, ws), roi, edited, classes, config, stage="edit")


def optimize_edit(models: EditingModels, ws: torch.Tensor, original_mask: torch.Tensor, edited_mask: torch.Tensor,
                  config: EditConfig = EditConfig(), edited_classes: Optional[Sequence[int]] = None,
                  progress: Optional[ProgressCallback] = None, roi: Optional[torch.Tensor] = None) -> EditResult:
    """Mode 3: find the latent whose segmentation matches ``edited_mask`` inside the ROI, image unchanged outside.

    ``ws`` ``[B,num_ws,w_dim]``; masks ``[B,H,W]`` of any size (resized with nearest to the segmentation resolution).
    The ROI is the changed pixels plus the pixels of ``edited_classes`` (when given), dilated (:func:`edit_roi`);
    an explicit ``roi`` (bool ``[B,H,W]`` of any size, used as it is) replaces it. Each image's loss is its own, so a
    batch of edits gives the same result as editing each image alone.
    """
    return prepare_edit(models, ws, original_mask, edited_mask, config, edited_classes, roi).run(progress)


def prepare_refine(models: EditingModels, ws: torch.Tensor, vectors: Sequence[EditVector],
                   scales: torch.Tensor | Sequence[float], config: Optional[EditConfig] = None) -> "EditOptimizer":
    """Apply vectors and set up their self-supervised refinement (see :func:`refine_vectors`)."""
    config = config or refine_config()
    ws = _check_latent(models, ws)
    applied = apply_vectors(models, ws, vectors, scales)
    original_image, original_labels = render_and_segment(models, ws)
    classes = sorted({c for v in vectors for c in v.info.edited_classes})
    class_ids = torch.as_tensor(classes, device=models.device, dtype=torch.long)
    region = torch.isin(original_labels, class_ids) | torch.isin(applied.mask, class_ids)
    roi = dilate(region, config.dilation_kernel, config.dilation_iterations)
    return EditOptimizer(models, ws, applied.ws, original_image, roi, applied.mask, classes, config, stage="refine")


def refine_vectors(models: EditingModels, ws: torch.Tensor, vectors: Sequence[EditVector],
                   scales: torch.Tensor | Sequence[float], config: Optional[EditConfig] = None,
                   progress: Optional[ProgressCallback] = None) -> EditResult:
    """Mode 2: apply vectors, then refine self-supervised for ``config.steps`` (10 or 30) steps.

    The target is the segmentation the applied latent produces; the ROI is the union of the vectors' classes before
    and after application, dilated; the image outside the ROI is held to the original (no encoder term).
    """
    return prepare_refine(models, ws, vectors, scales, config).run(progress)


class EditOptimizer:
    """Adam on W+ from ``ws_start`` towards ``target`` inside ``roi``: the shared loop of modes 2 and 3.

    ``ws_original`` ``[B,num_ws,w_dim]`` is the unedited latent (the edit vector is measured from it),
    ``original_image`` ``[B,3,H,W]`` what the image must stay outside the ROI, ``roi`` ``[B,h,w]`` bool and
    ``target`` ``[B,h,w]`` at the segmentation resolution. ``step()`` runs one update; ``run()`` all of them.
    """

    def __init__(self, models: EditingModels, ws_original: torch.Tensor, ws_start: torch.Tensor,
                 original_image: torch.Tensor, roi: torch.Tensor, target: torch.Tensor, classes: list[int],
                 config: EditConfig, stage: str):
        if not roi.flatten(1).any(dim=1).all():
            raise ValueError(f"the region of interest is empty for at least one image: classes {classes} appear in "
                             f"neither the original nor the edited segmentation, so there is nothing to optimise")
        self.models, self.config, self.stage, self.classes = models, config, stage, classes
        self.ws_original, self.roi, self.target = ws_original, roi, target
        self.use_encoder = models.encoder is not None and config.encoder_weight > 0
        self.outside = (~resize_mask(roi, original_image.shape[-1]))[:, None].to(original_image.dtype)  # [B,1,H,W]
        self.masked_original = original_image * self.outside
        # The LPIPS backbone's features of the fixed original, once per edit instead of once per step.
        reference = getattr(models.perceptual, "reference", None)
        self.lpips_target = reference(self.masked_original) if reference is not None else self.masked_original
        self.loss_segmenter = models.segmenter_members(config.loss_members)
        self.roi_pixels = _RoiPixels.of(roi, target)
        self.steps_taken = 0
        self.last_encoder: Optional[torch.Tensor] = None
        self.ws = ws_start.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.ws], lr=config.lr)
        self.history: list[dict[str, torch.Tensor]] = []

    def step(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One Adam update; returns the image and features it was computed from (before the update)."""
        use_encoder = self.use_encoder and self.steps_taken % self.config.encoder_every == 0
        self.steps_taken += 1
        self.models.begin_iteration()
        with self.models.autocast():
            image, features = self.models.synthesize(self.ws, return_features=True)
            losses = _edit_losses(self.models, self.ws, image, features, self.masked_original, self.outside,
                                  self.roi_pixels, self.config, use_encoder, self.lpips_target, self.loss_segmenter)
        self.optimizer.zero_grad(set_to_none=True)
        # The sum keeps each image's gradient what it would be alone (Adam's update is per element).
        losses["total"].sum().backward()
        self.optimizer.step()
        entry = {name: value.detach().float().mean() for name, value in losses.items()}
        if self.use_encoder:  # on the steps that skip it, the history repeats the last measured consistency
            self.last_encoder = entry["encoder"] if use_encoder else self.last_encoder
            entry["encoder"] = self.last_encoder
        self.history.append(entry)
        self.follow = losses["follow"]
        return image, features

    def reached_target(self) -> bool:
        """Whether every image's follow score, as of the last step, reached ``config.stop_follow`` (a host sync)."""
        target = self.config.stop_follow
        return target is not None and bool((self.follow >= target).all())

    def run(self, progress: Optional[ProgressCallback] = None) -> EditResult:
        steps = self.config.steps
        for step in range(1, steps + 1):
            image, features = self.step()
            stop = self.reached_target()
            if progress is not None:
                preview = step % self.config.preview_every == 0 or step == steps or stop
                image_every = self.config.preview_image_every or self.config.preview_every
                report(progress, ProgressEvent(
                    stage=self.stage, step=step, total=steps,
                    losses={name: float(value) for name, value in self.history[-1].items()},
                    preview_image=image[0].detach().float() if preview or step % image_every == 0 else None,
                    preview_mask=_labels(self.models, [f[:1] for f in features])[0] if preview else None))
            if stop:
                break
        return self.result()

    def result(self) -> EditResult:
        ws = self.ws.detach()
        image, mask = render_and_segment(self.models, ws)
        # One host synchronisation for the whole history instead of one per step and loss.
        names = list(self.history[0])
        values = torch.stack([torch.stack([entry[n] for n in names]) for entry in self.history]).tolist()
        return EditResult(ws=ws, delta=ws - self.ws_original, image=image, mask=mask, roi=self.roi,
                          target_mask=self.target, edited_classes=self.classes,
                          history=[dict(zip(names, row)) for row in values])


# ---------------------------------------------------------------------------------------------------------------------
# Compiling before the first request


def warm_up(models: EditingModels, ws: torch.Tensor, mask_members: Optional[int] = None, steps: int = 3,
            **speed_options) -> None:
    """Run every pass an edit session uses once per input shape it compiles for, so that a worker with
    ``compile_mode`` compiles before its first request instead of during it (15–30 s a network and shape on a GPU:
    the studio's first 1024² mode-3 edit took 146 s instead of 6 s, docs/benchmarks.md). Nothing to do when eager.

    ``ws`` ``[1, num_ws, w_dim]``: any latent of the generator. A mode-3 edit of ``steps`` steps with previews, whose
    vector then serves mode 1 with its mask (of ``mask_members`` members) and the image alone at batch sizes 1 and 2
    (after which the batch is dynamic) and mode 2; then one edit per further ROI pixel-count range, smallest first
    (the segmentation branch's plan changes at ``pixel_count_thresholds``; the second size makes the count dynamic),
    so a ROI too large for the device fails last. ``speed_options``: the ``EditConfig`` speed options of the
    worker's edits (another sub-ensemble is another compilation). ``steps`` ≥ 3: under CUDA graphs a pass records
    on its second call and replays from the third.
    """
    if models.compile_mode is None:
        return
    ws = _check_latent(models, ws)[:1]
    labels = render_and_segment(models, ws)[1]
    # The rarest class the picture shows: mode 2's ROI is where the vector's classes are, so it must be somewhere.
    counts = torch.bincount(labels.flatten(), minlength=models.num_classes).float()
    painted = int(counts.masked_fill(counts == 0, float("inf")).argmin())
    config = EditConfig(steps=steps, **speed_options)

    def edit(pixels: int) -> EditResult:
        roi = torch.zeros_like(labels, dtype=torch.bool).flatten(1)
        roi[:, :pixels] = True
        roi = roi.view_as(labels)
        return optimize_edit(models, ws, labels, labels.masked_fill(roi, painted), config, [painted],
                             progress=_previews_unused, roi=roi)

    first, *others = _roi_sizes(models)
    vector = EditVector(edit(first).delta[0], EditVectorInfo(name="warm-up", generator_id=models.generator_id,
                                                             edited_classes=[painted]))
    for with_mask in (True, False):
        for batch in (1, 2):
            apply_vectors(models, ws.expand(batch, -1, -1), [vector], torch.ones(batch, 1),
                          mask_members=mask_members, with_mask=with_mask)
    refine_vectors(models, ws, [vector], [1.0], refine_config(steps, **speed_options), progress=_previews_unused)
    for pixels in others:
        edit(pixels)


def _roi_sizes(models: EditingModels) -> list[int]:
    """ROI pixel counts that reach every range of ``pixel_count_thresholds`` (two in the first, which makes the
    count dynamic), up to the whole map."""
    thresholds = models.segmenter.pixel_count_thresholds  # each r² of a map no finer than the output: ≤ the map
    first = thresholds[0] if thresholds else models.seg_resolution ** 2
    return sorted({max(first // 2, 1), max(first - 1, 1), *thresholds})


def _previews_unused(event: ProgressEvent) -> None:
    """A warm-up's progress: asked for only so that its steps compute previews, as a person's edit does."""


@torch.no_grad()
def _labels(models: EditingModels, features: list[torch.Tensor], members: Optional[int] = None) -> torch.Tensor:
    """Full segmentation ``[B,h,w]`` of already computed features, without gradients: the argmax of the
    ensemble-mean softmax (of the first ``members`` members; ``None``: all), as ``SegmentationEnsemble.predict``
    labels. One image at a time, since the ensemble's full-resolution activations (E·w₀ channels at h×w) dominate
    memory."""
    segmenter = models.segmenter_members(members)
    labels = []
    for index in range(features[0].shape[0]):
        with models.autocast():
            labels.append(models.labels(segmenter, [f[index:index + 1].detach() for f in features]))
    return torch.cat(labels)


def _ensemble_labels(segmenter: torch.nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
    return segmenter(features).float().softmax(dim=2).mean(dim=1).argmax(dim=1)


@dataclass
class _RoiPixels:
    """The ROI as flat pixel indices, padded to one length per batch: ``index`` / ``target`` int64 ``[B, P]``,
    ``weight`` ``[B, P]`` (1 inside the ROI, 0 for padding). The segmentation branch is evaluated only there, which
    gives the same cross-entropy as a full-map forward (BatchNorm is in eval mode) at a fraction of the memory."""

    index: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def of(cls, roi: torch.Tensor, target: torch.Tensor) -> "_RoiPixels":
        flat = roi.flatten(1)
        counts = flat.sum(dim=1)
        length = int(counts.max())
        # Sorting puts each row's ROI pixels first (stable keeps them in raster order); the rest is padding.
        order = torch.sort((~flat).to(torch.int8), dim=1, stable=True).indices[:, :length]
        weight = (torch.arange(length, device=roi.device)[None] < counts[:, None]).float()
        return cls(index=order, target=target.flatten(1).gather(1, order), weight=weight)


def roi_cross_entropy(models: EditingModels, features: list[torch.Tensor], roi: _RoiPixels,
                      segmenter: Optional[torch.nn.Module] = None) -> torch.Tensor:
    """The inside-the-ROI term of the edit objective, a scalar tensor: per image the cross-entropy of every ensemble
    member against ``roi.target``, averaged over members and that image's ROI pixels; summed over the batch.
    ``segmenter``: the (sub-)ensemble to use, default ``models.segmenter``."""
    return _roi_terms(models, features, roi, segmenter)[0].sum()


def _roi_terms(models: EditingModels, features: list[torch.Tensor], roi: _RoiPixels,
               segmenter: Optional[torch.nn.Module] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image ``(cross-entropy [B], follow [B])`` at the ROI pixels: the mean cross-entropy of the members, and
    the share of ROI pixels whose label (argmax of the members' mean softmax) already is the target (no gradient).
    Each image is normalised by its own ROI, so a batch optimises what each image alone would. ``segmenter``: the
    (sub-)ensemble to use, default ``models.segmenter``."""
    segmenter = models.segmenter if segmenter is None else segmenter
    # The indices come from a mask of the segmentation's own size.
    logits = models.segment_pixels(segmenter, features, roi.index)                        # [B, E, K, P]
    batch, members = logits.shape[:2]
    ce = F.cross_entropy(logits.flatten(0, 1), roi.target.repeat_interleave(members, dim=0), reduction="none")
    pixels = roi.weight.sum(dim=1)
    with torch.no_grad():
        matches = logits.detach().float().softmax(dim=2).mean(dim=1).argmax(dim=1) == roi.target
        follow = (matches.float() * roi.weight).sum(dim=1) / pixels
    return (ce.view(batch, members, -1).mean(dim=1) * roi.weight).sum(dim=1) / pixels, follow


def _edit_losses(models: EditingModels, ws: torch.Tensor, image: torch.Tensor, features: list[torch.Tensor],
                 masked_original: torch.Tensor, outside: torch.Tensor, roi: _RoiPixels, config: EditConfig,
                 use_encoder: bool, lpips_target=None, segmenter: Optional[torch.nn.Module] = None
                 ) -> dict[str, torch.Tensor]:
    """The edit objective for one step, per image: every term is a ``[B]`` tensor (no host synchronisation).
    ``follow`` is not a loss: the share of the ROI the segmentation already matches (the live follow score).
    ``lpips_target``: ``masked_original`` or its precomputed ``PerceptualLoss.reference``; ``segmenter``: the
    (sub-)ensemble of the inside-the-ROI term."""
    masked_image = image * outside
    lpips = models.lpips(masked_image, masked_original if lpips_target is None else lpips_target)
    l2 = (masked_image - masked_original).square().flatten(1).mean(dim=1)
    ce, follow = _roi_terms(models, features, roi, segmenter)
    total = config.outside_weight * (config.lpips_weight * lpips + config.l2_weight * l2) + config.ce_weight * ce
    losses = {"lpips_outside": lpips, "l2_outside": l2, "ce_inside": ce}
    if use_encoder:
        consistency = (ws - models.encoder(image)).square().flatten(1).mean(dim=1)
        total = total + config.encoder_weight * consistency
        losses["encoder"] = consistency
    losses["total"] = total
    losses["follow"] = follow
    return losses
