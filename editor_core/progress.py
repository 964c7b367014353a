"""Progress reporting shared by every long-running engine operation.

Engine functions take ``progress: ProgressCallback | None`` and call it once per step. Workers turn the events
into channel-layer messages and database updates; the CLI turns them into a progress bar.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


@dataclass
class ProgressEvent:
    """One step of a long-running operation.

    ``losses`` maps a loss name to its float value at this step. ``preview_image`` ([3, H, W] in [-1, 1]) and
    ``preview_mask`` ([H, W] int64) are set only every ``preview_every`` steps, so that streaming stays cheap.
    """

    stage: str
    step: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    preview_image: Optional[torch.Tensor] = None
    preview_mask: Optional[torch.Tensor] = None
    message: str = ""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.step / self.total)


ProgressCallback = Callable[[ProgressEvent], None]


class Cancelled(Exception):
    """Raised from a progress callback to stop an operation cleanly (the job was cancelled)."""


def report(progress: Optional[ProgressCallback], event: ProgressEvent) -> None:
    """Send ``event`` to ``progress`` when one is given."""
    if progress is not None:
        progress(event)
