"""The demo pipeline's report: the headline figures ``bundle.json`` carries, the markdown tables of
``docs/demo-model.md``, and the PNG figures."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from editor_core.bundle import ModelBundle
from editor_core.domains import toonface
from editor_core.domains.toonface import ToonFaceParams, toonface_schema
from editor_core.editing import EditingModels, apply_vectors, render_and_segment, resize_mask
from editor_core.training.demo_bundle.edits import DEMO_EDITS
from editor_core.training.demo_bundle.renders import SAMPLE_SEEDS
from editor_core.training.gan import save_image_grid

if TYPE_CHECKING:  # the pipeline imports this module
    from editor_core.training.demo_bundle.stages import DemoPipeline


def headline_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers ``bundle.json`` carries."""
    inversion, frechet = report["inversion"], report["frechet"]
    return {
        "measured": report["created"], "device": report["device"],
        "inversion_psnr_db": round(inversion["optimised"]["psnr"]["mean"], 2),
        "inversion_lpips": round(inversion["optimised"]["lpips"]["mean"], 4),
        "segmentation_miou": round(report["segmentation"]["optimised"]["miou"], 4),
        "segmentation_miou_encoder_only": round(report["segmentation"]["encoder_only"]["miou"], 4),
        "fd_samples_vs_renders": round(frechet["samples_vs_renders"], 4),
        "fd_renders_vs_renders": round(frechet["renders_vs_renders"], 4),
        "held_out_renders": inversion["renders"]}


def report_markdown(report: dict[str, Any]) -> str:
    """The evaluation as markdown tables (pasted into docs/demo-model.md)."""
    inv, seg, fd, tr = report["inversion"], report["segmentation"], report["frechet"], report["transfer"]

    def pm(stats: dict[str, float], digits: int) -> str:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"

    lines = [f"Measured {report['created']} on {report['device']}.", "",
             f"Inversion of {inv['renders']} held-out renders (LPIPS-{inv['lpips_net']}):", "",
             "| latent | PSNR (dB) | LPIPS | mIoU |", "| --- | --- | --- | --- |",
             f"| encoder only | {pm(inv['encoder_only']['psnr'], 2)} | {pm(inv['encoder_only']['lpips'], 4)} | "
             f"{seg['encoder_only']['miou']:.4f} |",
             f"| encoder + {inv['steps']} optimisation steps | {pm(inv['optimised']['psnr'], 2)} | "
             f"{pm(inv['optimised']['lpips'], 4)} | {seg['optimised']['miou']:.4f} |", "",
             "Per-class IoU (optimised inversions):", "", "| class | IoU | class | IoU |", "| --- | --- | --- | --- |"]
    classes = list(seg["optimised"]["per_class"].items())
    half = (len(classes) + 1) // 2
    for (a, va), (b, vb) in zip(classes[:half], classes[half:] + [("", None)]):
        fa = "absent" if va is None else f"{va:.4f}"
        fb = "" if not b else ("absent" if vb is None else f"{vb:.4f}")
        lines.append(f"| {a} | {fa} | {b} | {fb} |")
    lines += ["", f"Fréchet distance in the render-parameter regressor's features ({fd['feature_dim']}-d, held-out "
              f"R² {fd['regressor_r2_mean']}), {fd['samples']} images a side:", "",
              "| compared | FD |", "| --- | --- |",
              f"| samples (ψ = 1) vs renders | {fd['samples_vs_renders']:.4f} |",
              f"| samples (ψ = 0.7) vs renders | {fd['samples_psi0.7_vs_renders']:.4f} |",
              f"| renders vs other renders (floor) | {fd['renders_vs_renders']:.4f} |", "",
              f"Vector transfer to {tr['renders']} other held-out inverted renders (scale 1; IoU of the vector's "
              f"classes against the renderer's true edited mask; LPIPS to the true edited render; mean |Δ| outside "
              f"the ROI on the 0–255 scale; direction: share of faces whose measured statistic moved the right way):",
              "", "| vector | mode | IoU | LPIPS to truth | Δ outside ROI | direction |",
              "| --- | --- | --- | --- | --- | --- |"]
    for edit in DEMO_EDITS:
        entry = tr[edit.name]
        for mode, label in (("unedited", "none (inversion)"), ("mode1", "1"), ("mode2", "2")):
            m = entry[mode]
            lines.append(f"| {edit.name} | {label} | {m['iou']:.4f} | {m['lpips_to_truth']:.4f} | "
                         f"{m['outside_change']:.2f} | {m['direction']:.2f} |")
        lines.append(f"| {edit.name} | renderer truth | 1 | 0 | {entry['truth']['outside_change']:.2f} | "
                     f"{entry['truth']['direction']:.2f} |")
    direction = report["direction"]
    for name, label in (("samples", "generator samples (ψ = 1)"), ("encoded_renders", "encoder-only inversions of "
                                                                                     "fresh renders")):
        lines += ["", f"Direction on {direction['faces']} {label}, mode 1: "
                  + ", ".join(f"{e.name} {direction[name][e.name]:.2f}" for e in DEMO_EDITS)]
    lines.append("")
    return "\n".join(lines)


def mask_image(mask: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` labels → ``[3, H, W]`` in ``[-1, 1]`` in the toon-face schema's colours (for figures)."""
    return toonface_schema().colourise(mask.cpu()).permute(2, 0, 1).float() / 127.5 - 1


@torch.no_grad()
def write_figures(pipeline: DemoPipeline, models: EditingModels, bundle: ModelBundle, images: torch.Tensor,
                  masks: torch.Tensor, ws: torch.Tensor, ws0: torch.Tensor, transfer_params: ToonFaceParams,
                  ws_transfer: torch.Tensor) -> None:
    """Sample and render grids, inversions, and one before/after sheet per vector, into ``pipeline.figures``."""
    pipeline.figures.mkdir(parents=True, exist_ok=True)
    G = pipeline.generator
    z = torch.randn(24, G.z_dim, generator=torch.Generator().manual_seed(SAMPLE_SEEDS["figures"]))
    save_image_grid(G(z.to(pipeline.device), noise_mode="const"), pipeline.figures / "demo_samples.png", columns=8)
    save_image_grid(pipeline.render(24, "figures")[1], pipeline.figures / "demo_renders.png", columns=8)

    inverted, labels = render_and_segment(models, ws)
    encoded = G.synthesis(ws0, noise_mode="const")
    size = pipeline.resolution
    rows = [images, inverted, encoded, torch.stack([mask_image(m) for m in masks]).to(pipeline.device),
            torch.stack([mask_image(resize_mask(m[None], size)[0]) for m in labels]).to(pipeline.device)]
    save_image_grid(torch.cat(rows), pipeline.figures / "demo_inversions.png", columns=len(images))

    faces = slice(0, 2)
    params = {name: value[faces] for name, value in transfer_params.items()}
    for edit in DEMO_EDITS:
        vector = bundle.vectors[edit.name]
        before, _ = toonface.render(params, size)
        after, _ = toonface.render(edit.applied_to(params), size)
        original, original_labels = render_and_segment(models, ws_transfer[faces])
        mode1 = apply_vectors(models, ws_transfer[faces], [vector], [1.0])
        with torch.enable_grad():
            (mode2, mode2_labels), _ = pipeline.refine(models, ws_transfer[faces], vector,
                                                       (mode1.image, mode1.mask), original_labels)
        sheet = torch.stack([before, after, original, mode1.image, mode2,
                             torch.stack([mask_image(resize_mask(m[None], size)[0]) for m in mode2_labels])
                             .to(pipeline.device)], dim=1)
        save_image_grid(sheet.flatten(0, 1), pipeline.figures / f"demo_vec_{edit.name}.png", columns=6)
