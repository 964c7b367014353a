"""Peak memory and time of the mode-3 step's segmentation term at 512² config-f, all ROI pixels at once against
``EditingModels.roi_pixel_chunk`` (issue 8: the step's peak must be ≤ 4 GB; this term held 10.5 of its 11.5 GB).

The term is component (c) of ``bench/profile_gpu.py``: the ensemble at the ROI pixels of the benchmark's edit and
its cross-entropy, forward and backward to the synthesis features. Each setting runs in a fresh process so its peak
is its own: on a CPU (Linux) the peak resident set during the term over the resident set just before it,
``torch.cuda.max_memory_allocated`` over the allocation before it on CUDA.

    .venv/bin/python bench/roi_memory.py --chunks 0 16384 4096            (0 = all ROI pixels at once)
    python3 bench/roi_memory.py --device cuda --chunks 0 16384 4096
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2 ** 10
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> float:
    """Current resident set (MiB), after resetting the kernel's peak-RSS mark (Linux: ``clear_refs`` 5), so that the
    peak read afterwards belongs to the measured call and not to the set-up (which runs full-map segmentations)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def _peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def measure(chunk: int, device_name: str, resolution: int) -> dict:
    import torch

    from bench.suite import Suite, SuiteConfig
    from editor_core.editing import EditConfig, prepare_edit, roi_cross_entropy

    device = torch.device(device_name)
    suite = Suite(SuiteConfig(resolution=resolution, seg_resolution=min(resolution, 512),
                              roi_pixel_chunk=chunk or None), device)
    original, edited = suite.edit_masks()
    roi = prepare_edit(suite.models, suite.ws, original, edited, EditConfig()).roi_pixels
    with torch.no_grad():
        _, features = suite.generator.synthesis(suite.ws, noise_mode="const", return_features=True)
    features = [f.requires_grad_(True) for f in features]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    allocated_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    rss_before = _reset_peak_rss()
    start = time.perf_counter()
    loss = roi_cross_entropy(suite.models, features, roi)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    grad_norm = float(sum(f.grad.float().square().sum() for f in features)) ** 0.5
    report = {"roi_pixels": int(roi.weight.sum()), "chunk": chunk or None, "loss": float(f"{float(loss):.7g}"),
              "grad_norm": float(f"{grad_norm:.7g}"),
              "seconds": round(time.perf_counter() - start, 3)}
    if device.type == "cuda":
        report["cuda_peak_mib"] = round((torch.cuda.max_memory_allocated(device) - allocated_before) / 2 ** 20)
    else:
        report["peak_rss_increase_mib"] = round(_peak_rss_mib() - rss_before)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 16384, 4096],
                        help="ROI pixels per chunk; 0 = all at once")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--only", type=int, help="measure this chunk in this process (used by the parent)")
    args = parser.parse_args()
    if any(chunk < 0 for chunk in args.chunks) or (args.only is not None and args.only < 0):
        parser.error("chunks must be ≥ 0 (0 = all ROI pixels at once)")
    if args.only is not None:
        print(json.dumps(measure(args.only, args.device, args.resolution)))
        return
    for chunk in args.chunks:
        output = subprocess.run([sys.executable, __file__, "--only", str(chunk), "--device", args.device,
                                 "--resolution", str(args.resolution)], capture_output=True, text=True)
        if output.returncode != 0:
            sys.exit(f"chunk {chunk}: the measuring process failed:\n{output.stderr}")
        print(output.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
