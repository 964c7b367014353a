from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

from ninja import Field, Schema


class CheckpointOut(Schema):
    id: int
    kind: str
    name: str
    sha256: str
    fingerprint: str
    generator_id: Optional[int]
    schema_id: Optional[int]
    source_format: str
    config: dict
    metrics: dict
    active: bool
    created: dt.datetime


class ImportPathIn(Schema):
    kind: Literal["generator", "segmentation"]
    name: str = Field(min_length=1, max_length=200)
    server_path: str
    generator_id: Optional[int] = None


class TrainSegmentationIn(Schema):
    dataset_id: int
    steps: int = Field(2000, ge=1, le=200_000)
    ensemble_size: int = Field(10, ge=1, le=32, description="MLP classifiers in the ensemble (the paper: 10)")
    hidden: list[int] = Field([256, 128, 32], min_length=1, max_length=6, description="hidden widths of each MLP")
    pixels_per_step: int = Field(16384, ge=64, le=1 << 20)
    early_stopping: bool = Field(True, description="stop when the loss stops improving (after 200 steps)")
    name: str = Field("", max_length=200)
    activate: bool = True


class TrainEncoderIn(Schema):
    generator_id: int
    steps: int = Field(10_000, ge=1, le=1_000_000)
    lpips_weight: float = Field(10.0, ge=0, description="0 trains without LPIPS: faster, a little less sharp")
    name: str = Field("", max_length=200)
    activate: bool = True
