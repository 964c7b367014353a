"""Benchmarks and studies; each script's docstring says what it measures and how to run it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


def percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` of ``values`` sorted (nearest rank): p95 of 100 latencies is the 95th smallest."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def emit_report(report: dict[str, Any], path: Optional[Path]) -> None:
    """Print a study's report as indented JSON and, when ``path`` is given, write the same text there."""
    text = json.dumps(report, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
