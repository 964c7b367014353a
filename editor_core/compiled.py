"""Network passes run eagerly or through ``torch.compile``: one place for the editing and the embedding loops.

A GPU step of either loop is bound by kernel launches and element-wise passes, not arithmetic (docs/benchmarks.md,
*step speed, round 2*): Inductor fuses the element-wise work and ``"reduce-overhead"`` replays the step's kernels
as CUDA graphs. Each function is compiled on first use and again per new input shape; Dynamo keeps what it compiled
on the function's code, so a second ``CompiledPasses`` over the same modules reuses it.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

# torch.compile modes a pass may run under; the CUDA-graph one replays recorded kernels (GPU only).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
_CUDA_GRAPH_MODES = {"reduce-overhead"}
# Dynamo compiles a function at most 8 times by default, then runs it eagerly without a word. An edit session needs
# more: the synthesis alone has seven variants (one image or several, with features or not, with gradients or not)
# and the ROI pass one per pixel-count range (``SegmentationEnsemble.pixel_count_thresholds``).
RECOMPILE_LIMIT = 64


def check_compile_mode(mode: Optional[str]) -> Optional[str]:
    """``mode`` if it is one of ``COMPILE_MODES`` or ``None`` (eager), else a ``ValueError`` naming the choices."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {COMPILE_MODES} or None, got {mode!r}")
    return mode


class CompiledPasses:
    """Calls ``fn(*args, **kwargs)`` eagerly (``mode=None``) or through ``torch.compile(fn, mode=mode)``.

    Under CUDA graphs a replay reuses its outputs' memory, so outputs are cloned out of it, and each iteration (one
    request, one optimisation step) starts with ``begin_iteration``, after which the previous replay's memory may be
    reused.
    """

    def __init__(self, mode: Optional[str] = None):
        self.mode = check_compile_mode(mode)
        self.compiled: dict[Callable, Callable] = {}
        # Made once: building a config patch costs ~80 µs on a CPU, entering a made one ~6 µs, and it wraps every pass.
        self._recompile_limit = torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT)

    def __call__(self, fn: Callable, *args, **kwargs) -> Any:
        if self.mode is None:
            return fn(*args, **kwargs)
        if fn not in self.compiled:
            self.compiled[fn] = torch.compile(fn, mode=self.mode)
        with self._recompile_limit:
            outputs = self.compiled[fn](*args, **kwargs)
        return _cloned(outputs) if self.mode in _CUDA_GRAPH_MODES else outputs

    def begin_iteration(self) -> None:
        if self.mode in _CUDA_GRAPH_MODES:
            torch.compiler.cudagraph_mark_step_begin()


def _cloned(outputs: Any) -> Any:
    """Tensors (also inside lists and tuples) copied out of a CUDA graph's memory, which its next replay reuses."""
    if isinstance(outputs, torch.Tensor):
        return outputs.clone()
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_cloned(o) for o in outputs)
    return outputs
