"""Optimisation-based embedding of real images into W+ (paper §3.3 and its release).

``embed_image``: starting from the encoder's guess, Adam refines ``w`` with the NVlabs projector's learning-rate
schedule on ``10·LPIPS + 1·L2 + 1·‖w − E(G(w))‖²``; the last term, the paper's in-domain regulariser, keeps ``w``
where the encoder (hence the generator's training distribution) puts images like the current one, so edits behave
as on samples. Noise maps can be optimised too (with the NVlabs noise regulariser).

Shapes: images ``[B, 3, R, R]`` in ``[-1, 1]`` at the generator's resolution ``R``; W+ ``[B, num_ws, w_dim]``.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

import torch
import torch.nn.functional as F

from editor_core.compiled import CompiledPasses, check_compile_mode
from editor_core.encoder import Encoder, check_encoder_fits
from editor_core.metrics import LPIPS_RESOLUTION, image_distances, lpips_sized, psnr
from editor_core.networks import Generator
from editor_core.perceptual import PerceptualLoss, get_perceptual_loss
from editor_core.progress import ProgressCallback, ProgressEvent, report

# Refinement steps: one default for the studio, the worker and the command line (bench/edit_truth.py measured 300
# against the release's 100 interactive steps: +0.6 dB, and two embeddings of one render 32–40 dB apart instead of
# 28–31); the bundle's annotation and vector sources keep the release's batch 500.
EMBED_STEPS = 300
BATCH_EMBED_STEPS = 500


@dataclass(frozen=True)
class EmbedConfig:
    """Hyper-parameters of ``embed_image``; defaults are the EditGAN release's interactive embedding, with more steps.

    Loss per image: ``lpips_weight·LPIPS + l2_weight·L2 + encoder_weight·‖w − E(G(w))‖²`` (the last term only with
    an encoder), plus ``noise_weight`` × the NVlabs noise regulariser when ``optimize_noise``. Adam at ``lr`` with
    ``learning_rate_schedule`` (linear ramp-up over the first ``lr_rampup`` of the steps, cosine ramp-down over
    the last ``lr_rampdown``). ``steps``: ``EMBED_STEPS`` (300) in the studio and the command line,
    ``BATCH_EMBED_STEPS`` (500) for the bundle's annotations. A preview image is reported every ``preview_every``
    steps. ``compile_mode``: run the synthesis, LPIPS and encoder passes through ``torch.compile`` in this mode
    (``editor_core.compiled.COMPILE_MODES``; the first embedding pays the compilation); ``None``: eager.
    """

    steps: int = EMBED_STEPS
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    lpips_weight: float = 10.0
    l2_weight: float = 1.0
    encoder_weight: float = 1.0
    optimize_noise: bool = False
    noise_weight: float = 1e5  # NVlabs projector's regularize_noise_weight
    lpips_net: str = "vgg"
    lpips_resolution: int = LPIPS_RESOLUTION
    preview_every: int = 10
    compile_mode: Optional[str] = None

    def __post_init__(self) -> None:
        check_compile_mode(self.compile_mode)
        for name in ("steps", "preview_every", "lpips_resolution"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("lr", "lpips_weight", "l2_weight", "encoder_weight", "noise_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not (0 < self.lr_rampup <= 1 and 0 < self.lr_rampdown <= 1):
            raise ValueError(f"lr_rampup and lr_rampdown must be fractions in (0, 1], got "
                             f"{self.lr_rampup} and {self.lr_rampdown}")


@dataclass
class EmbedResult:
    """What ``embed_image`` found, per image at its best step.

    ``ws [B, num_ws, w_dim]``; ``image [B, 3, R, R]`` = ``G.synthesis(ws)`` (with ``noise``); ``history[step]``:
    batch means of ``loss``, ``lpips``, ``l2`` and, when used, the ``encoder`` and ``noise`` terms (step 0 is the
    starting point, step k follows k updates); ``best_step``, ``lpips``, ``psnr``: ``[B]``; ``noise``: the
    optimised ``noise_const`` map per synthesis layer name (``None`` unless ``optimize_noise``); synthesise inside
    ``swapped_noise(G, noise)`` to reproduce ``image``.
    """

    ws: torch.Tensor
    image: torch.Tensor
    history: list[dict[str, float]]
    best_step: torch.Tensor
    lpips: torch.Tensor
    psnr: torch.Tensor
    noise: Optional[dict[str, torch.Tensor]] = field(default=None)


def learning_rate_schedule(config: EmbedConfig) -> list[float]:
    """Learning rate of each of the ``config.steps`` updates (NVlabs ``projector.py``).

    ``lr(t) = lr · min(1, t / rampup) · (1 − cos(π · min(1, (1 − t) / rampdown))) / 2``. NVlabs samples it at
    ``t = step / steps``, so its first update has lr 0; sampling each update's midpoint keeps the curve without
    wasting a step.
    """
    rates = []
    for step in range(config.steps):
        t = (step + 0.5) / config.steps
        ramp_down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / config.lr_rampdown))
        rates.append(config.lr * min(1.0, t / config.lr_rampup) * ramp_down)
    return rates


def noise_regularizer(noise_maps: Iterable[torch.Tensor]) -> torch.Tensor:
    """NVlabs projector's noise regulariser: squared autocorrelation at lag 1 of each ``[H, W]`` map, summed over
    an average-pooled pyramid down to 8x8, so that noise cannot encode image content (which is spatially
    correlated)."""
    loss = torch.zeros(())
    for noise in noise_maps:
        x = noise[None, None]
        while True:
            loss = loss + (x * x.roll(1, dims=3)).mean().square() + (x * x.roll(1, dims=2)).mean().square()
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return loss


@contextlib.contextmanager
def swapped_noise(generator: Generator, noise: dict[str, torch.Tensor]) -> Iterator[None]:
    """Make the synthesis layers' ``noise_const`` buffers the given tensors (keyed by buffer name) for a while.

    ``Generator.synthesis`` reads constant noise only from these buffers and takes no noise argument, so to
    optimise noise we put our leaf tensors in place of the buffers and restore the originals on exit (also on
    error). While swapped, anyone else using this generator object sees the swapped noise: do not run other work
    on the same generator concurrently (the studio's workers run one job per process at a time).
    """
    originals = {}
    try:
        for name, value in noise.items():
            module_name, buffer_name = name.rsplit(".", 1)
            module = generator.synthesis.get_submodule(module_name)
            originals[name] = getattr(module, buffer_name)
            setattr(module, buffer_name, value)  # a registered buffer: nn.Module stores the tensor as the buffer
        yield
    finally:
        for name, value in originals.items():
            module_name, buffer_name = name.rsplit(".", 1)
            setattr(generator.synthesis.get_submodule(module_name), buffer_name, value)


def embed_image(generator: Generator, encoder: Optional[Encoder], image: torch.Tensor,
                config: EmbedConfig = EmbedConfig(), progress: Optional[ProgressCallback] = None) -> EmbedResult:
    """Find W+ latents that ``generator`` turns into ``image`` (``[B, 3, R, R]`` in ``[-1, 1]``, R = G's resolution).

    Starts from ``encoder(image)``, or from ``w_avg`` when ``encoder`` is ``None`` (for users who bring only a
    generator: then the in-domain regulariser is off and more steps are needed), and runs ``config.steps`` Adam
    updates on ``w`` (and the noise maps with ``optimize_noise``, which needs B = 1 since the maps are shared by
    the batch). Losses are evaluated before each update and after the last; each image keeps its lowest-loss step.
    Only the latents (and noise copies) receive gradients: the generator and encoder are not modified. Reports
    ``ProgressEvent("embed", step, steps, losses)`` per step, with a preview of the first image every
    ``preview_every`` steps.
    """
    size = generator.config.resolution
    if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
        raise ValueError(f"image must be [B, 3, {size}, {size}] in [-1, 1], got {tuple(image.shape)}; load it with "
                         f"editor_core.images.load_image(..., size={size})")
    if config.optimize_noise and image.shape[0] != 1:
        raise ValueError(f"optimize_noise embeds one image at a time (noise maps are shared by a batch), "
                         f"got a batch of {image.shape[0]}")
    if encoder is not None:
        check_encoder_fits(encoder, generator)
    device = generator.mapping.w_avg.device
    target = image.to(device, torch.float32)
    perceptual = get_perceptual_loss(config.lpips_net, device)
    passes = CompiledPasses(config.compile_mode)
    with torch.no_grad():
        start = (encoder(target) if encoder is not None
                 else generator.mapping.w_avg.expand(target.shape[0], generator.num_ws, -1))
    ws = start.detach().clone().requires_grad_(True)
    noise = ({name: buffer.detach().clone().requires_grad_(True)
              for name, buffer in generator.synthesis.named_buffers() if name.endswith("noise_const")}
             if config.optimize_noise else {})
    params = [ws, *noise.values()]
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999))
    rates = learning_rate_schedule(config)
    weights = {"lpips": config.lpips_weight, "l2": config.l2_weight, "encoder": config.encoder_weight,
               "noise": config.noise_weight}
    best = _BestStep(start, target)
    # The target's LPIPS features once, instead of a backbone pass over the same image every step.
    lpips_target = perceptual.reference(lpips_sized(target, config.lpips_resolution))
    history: list[dict[str, float]] = []
    with swapped_noise(generator, noise):
        for step in range(config.steps + 1):
            passes.begin_iteration()
            generated = passes(generator.synthesis, ws, noise_mode="const")
            terms = _embedding_terms(passes, perceptual, encoder, generated, target, ws, noise, config, lpips_target)
            loss = sum(weights[name] * value for name, value in terms.items())
            best.update(step, loss, ws, generated, terms, noise)
            history.append({"loss": loss.mean().item(), **{name: value.mean().item() for name, value in terms.items()}})
            preview = (generated[0].detach().clamp(-1, 1).cpu()
                       if step % config.preview_every == 0 or step == config.steps else None)
            report(progress, ProgressEvent("embed", step, config.steps, dict(history[-1]), preview_image=preview))
            if step == config.steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = rates[step]
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward(inputs=params)  # per-image losses are independent, so one sum optimises each
            optimizer.step()
            with torch.no_grad():  # NVlabs keeps each noise map at zero mean and unit variance
                for value in noise.values():
                    value -= value.mean()
                    value *= value.square().mean().rsqrt()
    return EmbedResult(ws=best.ws, image=best.image, history=history, best_step=best.step, lpips=best.lpips,
                       psnr=psnr(best.l2), noise=best.noise if noise else None)


def _embedding_terms(passes: CompiledPasses, perceptual: PerceptualLoss, encoder: Optional[Encoder],
                     generated: torch.Tensor, target: torch.Tensor, ws: torch.Tensor, noise: dict[str, torch.Tensor],
                     config: EmbedConfig, lpips_target=None) -> dict[str, torch.Tensor]:
    """Unweighted per-image loss terms ``[B]``: ``lpips``, ``l2``, and ``encoder`` / ``noise`` when they apply; the
    networks run through ``passes``."""
    lpips, l2 = image_distances(functools.partial(passes, perceptual), generated, target, config.lpips_resolution,
                                lpips_target)
    terms = {"lpips": lpips, "l2": l2}
    if encoder is not None:
        with torch.no_grad():  # a fixed target per step, as in the release: E(G(w)) is not differentiated
            reencoded = passes(encoder, generated)
        terms["encoder"] = (ws - reencoded).square().mean(dim=(1, 2))
    if noise:
        terms["noise"] = noise_regularizer(noise.values()).expand(target.shape[0])
    return terms


class _BestStep:
    """Per image, the lowest-loss step of an embedding run so far and what it produced."""

    def __init__(self, start_ws: torch.Tensor, target: torch.Tensor):
        batch, device = target.shape[0], target.device
        self.loss = torch.full((batch,), math.inf, device=device)
        self.step = torch.zeros(batch, dtype=torch.long, device=device)
        self.ws = start_ws.detach().clone()
        self.image = torch.zeros_like(target)
        self.lpips = torch.zeros(batch, device=device)
        self.l2 = torch.zeros(batch, device=device)
        self.noise: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, step: int, loss: torch.Tensor, ws: torch.Tensor, image: torch.Tensor,
               terms: dict[str, torch.Tensor], noise: dict[str, torch.Tensor]) -> None:
        improved = loss < self.loss
        for current, value in ((self.loss, loss), (self.ws, ws), (self.image, image), (self.lpips, terms["lpips"]),
                               (self.l2, terms["l2"])):
            current[improved] = value.detach()[improved]
        self.step[improved] = step
        if bool(improved.any()):  # noise is only optimised for a single image
            self.noise = {name: value.detach().clone() for name, value in noise.items()}
