"""The engine's benchmark suite, shared by ``bench/cpu.py`` and ``bench/gpu.py``.

Every item is timed after warm-up (CUDA events on the GPU, ``perf_counter`` on the CPU); we report the median, the
spread (min and max) and, on CUDA, the peak memory the item allocated. Items whose name ends in ``[naive]`` are the
DatasetGAN/EditGAN-release way of computing the same thing — every feature map upsampled to the segmentation
resolution and concatenated before the MLP ensemble — so that each figure is also a ratio.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from editor_core.checkpoints import generator_fingerprint
from editor_core.editing import (EditConfig, EditingModels, apply_vectors, optimize_edit, prepare_edit,
                                 refine_config, refine_vectors, render_and_segment, warm_up)
from editor_core.networks import Generator, GeneratorConfig
from editor_core.perceptual import get_perceptual_loss
from editor_core.segmentation import SegmentationConfig, SegmentationEnsemble, SegTrainConfig, train_segmentation
from editor_core.vectors import EditVector, EditVectorInfo


@dataclass
class Measurement:
    name: str
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    peak_mib: Optional[float] = None
    note: str = ""
    first_ms: Optional[float] = None  # the first (warm-up) call: what a fresh worker's first request waits


@dataclass
class SuiteConfig:
    """One benchmark configuration: generator size, segmentation branch and how often to repeat."""

    resolution: int
    seg_resolution: int
    num_classes: int = 34
    ensemble_size: int = 10
    hidden: tuple[int, ...] = (256, 128, 32)
    channel_base: int = 32768
    channel_max: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    num_fp16_res: int = 0
    precision: str = "float32"          # EditingModels.precision of the editing items
    roi_pixel_chunk: Optional[int] = None  # EditingModels.roi_pixel_chunk of the editing items
    compile_mode: Optional[str] = None  # compile_mode of the editing items and the embedding
    warmup: int = 3
    repeats: int = 10
    long_repeats: int = 3
    roi_fraction: float = 0.25
    items: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(name: str, fn: Callable[[], object], device: torch.device, warmup: int, repeats: int,
              note: str = "") -> Measurement:
    """Median wall time of ``fn`` in ms (CUDA events on the GPU) and the peak memory it allocated; also the first
    call's wall time (compilation, cuDNN's algorithm search and CUDA-graph recording happen there)."""
    first_ms = None
    for index in range(warmup):
        start_s = time.perf_counter()
        fn()
        if index == 0:
            _synchronize(device)
            first_ms = (time.perf_counter() - start_s) * 1e3
    _synchronize(device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        peak = (torch.cuda.max_memory_allocated(device) - baseline) / 2 ** 20
    else:
        for _ in range(repeats):
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
        peak = None
    return Measurement(name, statistics.median(times), min(times), max(times), repeats, peak, note, first_ms)


class Suite:
    """Random-weight config-f style networks for one resolution, and the timed items over them."""

    def __init__(self, config: SuiteConfig, device: torch.device):
        self.config, self.device = config, device
        torch.manual_seed(0)
        generator_config = GeneratorConfig(resolution=config.resolution, z_dim=config.w_dim, w_dim=config.w_dim,
                                           channel_base=config.channel_base, channel_max=config.channel_max,
                                           mapping_layers=config.mapping_layers, num_fp16_res=config.num_fp16_res,
                                           conv_clamp=256 if config.num_fp16_res else None)
        self.generator = Generator(generator_config).to(device).eval().requires_grad_(False)
        seg_config = SegmentationConfig.from_generator(self.generator, config.num_classes, config.seg_resolution,
                                                       hidden=config.hidden, ensemble_size=config.ensemble_size)
        self.segmenter = SegmentationEnsemble(seg_config).to(device).eval().requires_grad_(False)
        self.models = EditingModels(self.generator, self.segmenter, get_perceptual_loss("vgg", device),
                                    generator_fingerprint(self.generator), precision=config.precision,
                                    roi_pixel_chunk=config.roi_pixel_chunk, compile_mode=config.compile_mode)
        with torch.no_grad():
            self.ws = self.generator.mapping(torch.randn(1, config.w_dim, device=device), truncation_psi=0.7)
        # Random weights segment into few classes: each vector edits one that is present, so mode 2 has an ROI.
        present = render_and_segment(self.models, self.ws)[1].unique().tolist()
        self.vectors = [self._vector(seed, present[seed % len(present)]) for seed in range(4)]

    def _vector(self, seed: int, edited_class: int) -> EditVector:
        g = torch.Generator(device="cpu").manual_seed(seed)
        delta = 0.1 * torch.randn(self.generator.num_ws, self.generator.w_dim, generator=g)
        return EditVector(delta.to(self.device), EditVectorInfo(name=f"v{seed}", generator_id=self.models.generator_id,
                                                                edited_classes=[edited_class]))

    def edit_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current segmentation and a copy with a centred square (``roi_fraction`` of the area) repainted."""
        _, mask = render_and_segment(self.models, self.ws)
        size = mask.shape[-1]
        side = int(size * self.config.roi_fraction ** 0.5 * 0.7)  # dilation grows the painted square to ~the ROI
        lo = (size - side) // 2
        edited = mask.clone()
        edited[:, lo:lo + side, lo:lo + side] = 1
        return mask, edited

    # -- the items ----------------------------------------------------------------------------------------------------

    def items(self) -> dict[str, tuple[Callable[[], object], str]]:
        """name → (callable, kind): 'short' (warm-up, many repeats), 'long' (one warm-up, few), 'once'."""
        G, seg, ws = self.generator, self.segmenter, self.ws
        original, edited = self.edit_masks()
        features = [f.detach() for f in G.synthesis(ws, return_features=True)[1]]
        size = self.config.seg_resolution
        target = torch.randint(0, self.config.num_classes, (1, size, size), device=self.device)

        def g_forward():
            self.models.begin_iteration()
            with torch.no_grad():
                self.models.synthesize(ws)

        def g_forward_backward():
            self.models.begin_iteration()
            w = ws.detach().requires_grad_(True)
            img, feats = self.models.synthesize(w, return_features=True)
            (img.square().mean() + sum(f.float().square().mean() for f in feats)).backward()

        def seg_step(naive: bool):
            trainable = SegmentationEnsemble(seg.config).to(self.device).train()
            optimizer = torch.optim.Adam(trainable.parameters(), lr=1e-3)

            def step():
                logits = trainable.forward_naive(features) if naive else trainable(features)
                loss = F.cross_entropy(logits.flatten(0, 1), target.repeat_interleave(logits.shape[1], 0))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            return step

        def edit_step(naive: bool):
            if naive:
                return _naive_edit_step(self.models, ws, original, edited, EditConfig())
            return prepare_edit(self.models, ws, original, edited, EditConfig()).step

        def mode1(count: int, naive: bool = False):
            scales = torch.ones(count, device=self.device)
            if naive:
                return lambda: _naive_apply(self.models, ws, self.vectors[:count], scales)
            return lambda: apply_vectors(self.models, ws, self.vectors[:count], scales)

        items = {
            "G forward": (g_forward, "short"),
            "G forward+backward": (g_forward_backward, "short"),
            "segmentation step (full map, train)": (seg_step(False), "short"),
            "segmentation step (full map, train) [naive]": (seg_step(True), "short"),
            "mode-3 step (G+seg+LPIPS-VGG, fwd+bwd)": (edit_step(False), "short"),
            "mode-3 step [naive]": (edit_step(True), "short"),
            "mode 1, one vector": (mode1(1), "short"),
            "mode 1, one vector [naive]": (mode1(1, naive=True), "short"),
            "mode 1, four vectors": (mode1(4), "short"),
            "mode 1, eight users batched (B=8)": (self._mode1_batch(8), "short"),
            # What an interactive worker with STUDIO_EDIT_COMPILE compiles before its first request (the items after
            # it then show whether anything still compiles on first use).
            "warm-up, every pass of an edit session": (lambda: warm_up(self.models, ws), "once"),
            # What a studio worker meets first: the live sliders' batches come in every size, each compiled or not.
            "mode 1, batch sizes 1 to 8, first call of each": (self._mode1_batch_sizes(8), "once"),
            "mode 2, 10 steps": (lambda: refine_vectors(self.models, ws, self.vectors[:1], [1.0],
                                                        refine_config(10)), "long"),
            "mode 2, 30 steps": (lambda: refine_vectors(self.models, ws, self.vectors[:1], [1.0],
                                                        refine_config(30)), "long"),
            "mode 3, 30 steps": (lambda: optimize_edit(self.models, ws, original, edited, EditConfig(steps=30)),
                                 "long"),
            "mode 3, 60 steps (the default)": (
                lambda: optimize_edit(self.models, ws, original, edited, EditConfig()), "long"),
            "embedding (encoder + 100 steps)": (self._embedding(), "long"),
            "segmentation training, 16 samples": (self._segmentation_training, "once"),
            # The default 1 GiB feature cache holds 16 samples' features only below 512² config-f (1.92 GiB in fp16):
            # there every step re-synthesises its samples. The same training with every feature kept:
            "segmentation training, 16 samples, features cached": (
                lambda: self._segmentation_training(feature_cache_bytes=4 << 30), "once"),
        }
        return {name: item for name, item in items.items()
                if not self.config.items or any(name.startswith(prefix) for prefix in self.config.items)}

    def _mode1_batch(self, users: int):
        """Eight users' mode-1 requests (each its own latent and slider value) served by one batched forward."""
        with torch.no_grad():
            ws = self.generator.mapping(torch.randn(users, self.config.w_dim, device=self.device), truncation_psi=0.7)
        scales = torch.linspace(-2, 2, users, device=self.device)[:, None]
        return lambda: apply_vectors(self.models, ws, self.vectors[:1], scales)

    def _mode1_batch_sizes(self, users: int):
        """One batched mode-1 request of each size from 1 to ``users``, in turn: with ``--compile``, its time holds
        every compilation a worker pays before it has served each batch size once."""
        batches = [self._mode1_batch(size) for size in range(1, users + 1)]
        return lambda: [batch() for batch in batches]

    def _embedding(self):
        from editor_core.encoder import Encoder, EncoderConfig
        from editor_core.inversion import EmbedConfig, embed_image

        G = self.generator
        encoder_config = EncoderConfig.for_generator(G, **self.config.extra.get("encoder", {}))
        encoder = Encoder(encoder_config).to(self.device).eval().requires_grad_(False)
        with torch.no_grad():
            target = G.synthesis(G.mapping(torch.randn(1, G.w_dim, device=self.device), truncation_psi=0.7))
        return lambda: embed_image(G, encoder, target, EmbedConfig(steps=100, compile_mode=self.config.compile_mode))

    def _segmentation_training(self, **options):
        G = self.generator
        with torch.no_grad():
            ws = G.mapping(torch.randn(16, G.w_dim, device=self.device), truncation_psi=0.7)
            images = torch.cat([G.synthesis(w[None]) for w in ws])
        size = self.config.seg_resolution
        luminance = F.interpolate(images.mean(1, keepdim=True), size=(size, size), mode="area")[:, 0]
        edges = torch.quantile(luminance.flatten(1).float(), torch.tensor([0.33, 0.66], device=self.device), dim=1).T
        masks = (luminance[..., None] > edges[:, None, None, :]).sum(-1)
        ensemble = SegmentationEnsemble(self.segmenter.config).to(self.device)
        return train_segmentation(G, ensemble, ws, masks, SegTrainConfig(seed=0, **options))

    def run(self, log: Callable[[str], None] = print) -> list[Measurement]:
        results = []
        schedule = {"short": (self.config.warmup, self.config.repeats), "long": (1, self.config.long_repeats),
                    "once": (0, 1)}
        for name, (fn, kind) in self.items().items():
            warmup, repeats = schedule[kind]
            measurement = time_call(name, fn, self.device, warmup=warmup, repeats=repeats)
            results.append(measurement)
            log(format_row(measurement))
        return results


def _naive_full_logits(models: EditingModels, features: list[torch.Tensor]) -> torch.Tensor:
    return models.segmenter.forward_naive(features)


def _naive_edit_step(models: EditingModels, ws: torch.Tensor, original: torch.Tensor, edited: torch.Tensor,
                     config: EditConfig) -> Callable[[], None]:
    """One edit step the way the EditGAN release computes it: full-map naive segmentation, CE inside the ROI."""
    from editor_core.editing import edit_roi, resize_mask

    roi = edit_roi(original, edited, kernel=config.dilation_kernel, iterations=config.dilation_iterations)
    with torch.no_grad():
        original_image = models.generator.synthesis(ws)
    outside = (~resize_mask(roi, original_image.shape[-1]))[:, None].float()
    w = ws.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=config.lr)

    def step() -> None:
        image, features = models.generator.synthesis(w, return_features=True)
        logits = _naive_full_logits(models, features)
        members = logits.shape[1]
        ce = F.cross_entropy(logits.flatten(0, 1), edited.repeat_interleave(members, 0), reduction="none")
        ce = (ce.mean(0, keepdim=True) * roi).sum() / roi.sum()
        lpips = models.perceptual(image * outside, original_image * outside).mean()
        l2 = F.mse_loss(image * outside, original_image * outside)
        loss = config.outside_weight * (config.lpips_weight * lpips + config.l2_weight * l2) + ce
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


@torch.no_grad()
def _naive_apply(models: EditingModels, ws: torch.Tensor, vectors: list[EditVector], scales: torch.Tensor) -> None:
    edited = ws + sum(s * v.delta for s, v in zip(scales, vectors))
    _, features = models.generator.synthesis(edited, return_features=True)
    _naive_full_logits(models, features).softmax(2).mean(1).argmax(1)


def format_row(m: Measurement) -> str:
    peak = f"{m.peak_mib:9.0f}" if m.peak_mib is not None else "        -"
    first = f"{m.first_ms:10.0f}" if m.first_ms is not None else "         -"
    return f"{m.name:48s} {m.median_ms:10.2f} {m.min_ms:10.2f} {m.max_ms:10.2f} {peak} {first}  {m.note}"


def header() -> str:
    return f"{'item':48s} {'median ms':>10s} {'min ms':>10s} {'max ms':>10s} {'peak MiB':>9s} {'first ms':>10s}"


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"), "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def write_json(path: str, sections: list[dict]) -> None:
    with open(path, "w") as handle:
        json.dump(sections, handle, indent=2,
                  default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
