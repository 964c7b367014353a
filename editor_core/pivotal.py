"""Pivotal tuning (Roich et al., "Pivotal Tuning for Latent-based Editing of Real Images", 2022).

The W+ inversion ``w_p`` of an image (the *pivot*) reproduces it only approximately. Pivotal tuning fine-tunes a copy
of the generator's synthesis network briefly so that ``G'(w_p)`` reproduces the image (near) exactly; edits and
library vectors still act in W+, on the tuned copy, whose segmentation branch reads ``G'``'s features.

Loss per step, with ``image_loss(a, b) = lpips_weight·LPIPS(a, b) + l2_weight·L2(a, b)`` (``image_distances``):
``image_loss(G'(w_p), x)``, plus ``locality_weight · image_loss(G'(w_r), G(w_r))`` for latents ``w_r`` drawn around
the pivot (the paper's locality regulariser: the tuning should change the generator near ``w_p`` only). The mapping
network is never tuned.

The tuning is kept as a :class:`WeightDelta`, ``{name: θ' − θ}`` of the synthesis parameters it changed, tagged with
the base generator's fingerprint: a small file per image that ``apply_delta`` turns into a tuned copy of a cached
base generator without mutating it. The copy keeps the base's ``generator_id`` for edit vectors: they were learned in
the base's W+, which the tuning does not move.
"""
from __future__ import annotations

import copy
import datetime as _dt
import itertools
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from editor_core.checkpoints import generator_fingerprint, read_checkpoint, save_checkpoint
from editor_core.metrics import image_distances, lpips_sized, psnr
from editor_core.networks import Generator
from editor_core.perceptual import PerceptualLoss
from editor_core.progress import ProgressCallback, ProgressEvent, report

DELTA_KIND = "pivotal_delta"


class DeltaGeneratorMismatch(ValueError):
    """A weight delta was applied to a generator other than the one it was tuned from."""


@dataclass(frozen=True)
class PivotalConfig:
    """Hyper-parameters of ``tune_generator``; defaults follow the paper's released code where it applies.

    Adam at a constant ``lr`` (paper: 3e-4) for ``steps`` updates (paper: 350 on 1024² FFHQ). ``l2_weight`` is on
    ``image_distances``' ``[0, 1]`` scale, so the paper's weight 1 on ``[-1, 1]`` images is 4 here. The locality
    regulariser (``locality_weight`` > 0; the paper's 0.1, off in its released defaults) draws
    ``locality_samples`` latents per step: ``w_z = mapping(z)`` truncated at ``locality_psi`` and ``w_r = w_p +
    locality_reach·(w_z − w_p)``. (The paper moves a fixed distance of 30 towards ``w_z``, a length in FFHQ's W;
    a share of the way to ``w_z`` means the same in any generator's W.) ``tuned_prefixes``: the parameters tuned,
    by name prefix, all inside ``synthesis.``. ``seed``: the locality latents' draws.
    """

    steps: int = 100
    lr: float = 3e-4
    lpips_weight: float = 1.0
    l2_weight: float = 4.0
    locality_weight: float = 0.0
    locality_samples: int = 1
    locality_psi: float = 0.5
    locality_reach: float = 0.5
    tuned_prefixes: tuple[str, ...] = ("synthesis.",)
    lpips_resolution: int = 256
    preview_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "locality_samples", "lpips_resolution", "preview_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("lpips_weight", "l2_weight", "locality_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not (0 < self.locality_psi <= 1 and 0 < self.locality_reach <= 1):
            raise ValueError(f"locality_psi and locality_reach must be in (0, 1], got {self.locality_psi} and "
                             f"{self.locality_reach}")
        object.__setattr__(self, "tuned_prefixes", tuple(self.tuned_prefixes))
        if not self.tuned_prefixes or not all(p.startswith("synthesis.") for p in self.tuned_prefixes):
            raise ValueError(f"tuned_prefixes must name synthesis parameters ('synthesis.…'; the mapping stays "
                             f"frozen), got {self.tuned_prefixes!r}")


@dataclass
class WeightDelta:
    """``tensors``: ``θ' − θ`` per changed synthesis parameter (float32, CPU or any device); ``generator_id``: the
    fingerprint of the base generator it applies to; ``meta``: JSON facts (the config, the tuning's figures)."""

    tensors: dict[str, torch.Tensor]
    generator_id: str
    meta: dict[str, Any] = field(default_factory=dict)

    def check_generator(self, generator_id: str) -> None:
        """Raise :class:`DeltaGeneratorMismatch` unless this delta was tuned from ``generator_id``."""
        if self.generator_id != generator_id:
            raise DeltaGeneratorMismatch(
                f"this pivotal-tuning delta was tuned from generator {self.generator_id}, not from {generator_id}: "
                f"a delta only applies to the generator it was tuned from (tune again on this one)")

    def save(self, path: str | Path, dtype: Optional[torch.dtype] = None) -> Path:
        """One project-format file (kind ``pivotal_delta``); ``dtype`` (e.g. ``torch.float16``) shrinks it."""
        return save_checkpoint(path, DELTA_KIND, self.tensors, config={"parameters": len(self.tensors)},
                               meta={**self.meta, "generator_fingerprint": self.generator_id}, dtype=dtype)

    def to_bytes(self) -> bytes:
        """The file :meth:`save` writes, as bytes (what the studio stores per sample)."""
        with tempfile.TemporaryDirectory() as tmp:
            return self.save(Path(tmp) / "delta.safetensors").read_bytes()

    @classmethod
    def load(cls, path: str | Path, generator_id: str) -> "WeightDelta":
        """Read a delta saved by :meth:`save` for the generator ``generator_id`` (its fingerprint); raises
        :class:`DeltaGeneratorMismatch` for a delta of another generator."""
        tensors, _config, meta = read_checkpoint(path, expected_kind=DELTA_KIND)
        meta = dict(meta)
        found = meta.pop("generator_fingerprint", None)
        if found != generator_id:
            raise DeltaGeneratorMismatch(
                f"{path} was tuned from generator {found}, but this generator is {generator_id}: load the "
                f"generator it was tuned from, or tune this image again")
        return cls({name: tensor.float() for name, tensor in tensors.items()}, found, meta)


@dataclass
class TuningResult:
    """What ``tune_generator`` made: the ``delta``; ``image [1, 3, R, R]`` = ``G'(w_p)`` after the last step, its
    ``lpips`` and ``psnr`` ``[1]`` against the target; ``history[step]``: the loss terms before update ``step``
    (the last entry: after the last update)."""

    delta: WeightDelta
    image: torch.Tensor
    lpips: torch.Tensor
    psnr: torch.Tensor
    history: list[dict[str, float]]


def tune_generator(generator: Generator, ws: torch.Tensor, images: torch.Tensor, config: PivotalConfig,
                   perceptual: PerceptualLoss, progress: Optional[ProgressCallback] = None) -> TuningResult:
    """Tune a copy of ``generator`` so that it turns the pivot ``ws [1, num_ws, w_dim]`` into ``images [1, 3, R, R]``
    (in ``[-1, 1]``); ``generator`` is not modified. One image per call: every image gets its own delta.

    Reports ``ProgressEvent("pivotal", step, steps, losses)`` per step, with a preview every ``preview_every``.
    """
    size = generator.config.resolution
    if images.shape != (1, 3, size, size):
        raise ValueError(f"images must be one [1, 3, {size}, {size}] image in [-1, 1] (one delta per image), got "
                         f"{tuple(images.shape)}")
    if ws.shape != (1, generator.num_ws, generator.w_dim):
        raise ValueError(f"ws must be the image's pivot [1, {generator.num_ws}, {generator.w_dim}], got "
                         f"{tuple(ws.shape)}")
    names = [name for name, _ in generator.named_parameters() if name.startswith(config.tuned_prefixes)]
    if not names:
        raise ValueError(f"no parameter of the generator starts with any of {config.tuned_prefixes}")
    device = generator.mapping.w_avg.device
    target, pivot = images.to(device, torch.float32), ws.to(device, torch.float32).detach()
    tuned = _copy_owning(generator, names)
    params = [tuned.get_parameter(name).requires_grad_(True) for name in names]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    lpips_target = perceptual.reference(lpips_sized(target, config.lpips_resolution))
    draws = torch.Generator(device="cpu").manual_seed(config.seed)
    history: list[dict[str, float]] = []
    for step in range(config.steps + 1):
        generated = tuned.synthesis(pivot, noise_mode="const")
        lpips, l2 = image_distances(perceptual, generated, target, config.lpips_resolution, lpips_target)
        loss = config.lpips_weight * lpips + config.l2_weight * l2
        terms = {"lpips": lpips, "l2": l2}
        if config.locality_weight > 0 and step < config.steps:
            terms["locality"] = _locality_loss(generator, tuned, pivot, perceptual, config, draws)
            loss = loss + config.locality_weight * terms["locality"]
        history.append({name: value.detach().sum().item() for name, value in {"loss": loss, **terms}.items()})
        preview = (generated[0].detach().clamp(-1, 1).cpu()
                   if step % config.preview_every == 0 or step == config.steps else None)
        report(progress, ProgressEvent("pivotal", step, config.steps, dict(history[-1]), preview_image=preview))
        if step == config.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward(inputs=params)
        optimizer.step()
    meta = {"config": {**asdict(config), "tuned_prefixes": list(config.tuned_prefixes)},
            "lpips": history[-1]["lpips"], "psnr": float(psnr(l2.detach())[0])}
    delta = _delta(generator, tuned, names, meta)
    return TuningResult(delta, generated.detach(), lpips.detach(), psnr(l2.detach()), history)


def _delta(base: Generator, tuned: Generator, names: list[str], meta: dict[str, Any]) -> WeightDelta:
    """``θ' − θ`` of the parameters ``names`` that the tuning changed, tagged with ``base``'s fingerprint."""
    with torch.no_grad():
        changes = {name: (tuned.get_parameter(name) - base.get_parameter(name)).float().cpu() for name in names}
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return WeightDelta({name: change for name, change in changes.items() if bool(change.any())},
                       generator_fingerprint(base), {**meta, "created": created})


def _locality_loss(base: Generator, tuned: Generator, pivot: torch.Tensor, perceptual: PerceptualLoss,
                   config: PivotalConfig, draws: torch.Generator) -> torch.Tensor:
    """``image_loss(G'(w_r), G(w_r))`` averaged over ``locality_samples`` latents ``w_r`` between the pivot and
    truncated random latents of the (unchanged) mapping network."""
    z = torch.randn(config.locality_samples, base.z_dim, generator=draws).to(pivot.device)
    with torch.no_grad():
        sampled = base.mapping(z, truncation_psi=config.locality_psi)
        nearby = pivot + config.locality_reach * (sampled - pivot)
        reference = base.synthesis(nearby, noise_mode="const")
    lpips, l2 = image_distances(perceptual, tuned.synthesis(nearby, noise_mode="const"), reference,
                                config.lpips_resolution)
    return (config.lpips_weight * lpips + config.l2_weight * l2).mean()


def apply_delta(generator: Generator, delta: WeightDelta, generator_id: str) -> Generator:
    """The tuned generator: a copy of ``generator`` (fingerprint ``generator_id``, e.g. a worker's cached one) with
    ``delta`` added. ``generator`` is not modified; the copy shares every tensor the delta leaves alone (the mapping,
    the noise buffers, untouched layers), so it costs the memory of the changed parameters only. Frozen, in
    ``generator``'s mode."""
    delta.check_generator(generator_id)
    params = dict(generator.named_parameters())
    wrong = {name: tuple(change.shape) for name, change in delta.tensors.items()
             if not name.startswith("synthesis.") or name not in params or params[name].shape != change.shape}
    if wrong:
        raise ValueError(f"the delta's tensors {sorted(wrong)} are not synthesis parameters of this generator (or "
                         f"have other shapes: {wrong})")
    tuned = _copy_owning(generator, list(delta.tensors))
    with torch.no_grad():
        for name, change in delta.tensors.items():
            parameter = tuned.get_parameter(name)
            parameter.add_(change.to(parameter.device, parameter.dtype))
    return tuned


def _copy_owning(generator: Generator, names: list[str]) -> Generator:
    """A deep copy of ``generator`` that owns (frozen) copies of the parameters ``names`` and shares every other
    parameter and buffer with it."""
    owned = set(names)
    shared = {id(tensor): tensor for name, tensor in itertools.chain(generator.named_parameters(),
                                                                     generator.named_buffers())
              if name not in owned}
    tuned = copy.deepcopy(generator, memo=shared)
    for name in names:
        tuned.get_parameter(name).requires_grad_(False)
    return tuned
