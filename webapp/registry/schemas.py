from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Optional

from ninja import Field, Schema

from webapp.validation import FiniteFloat, RowId, text

HiddenWidth = Annotated[int, Field(ge=1, le=1024)]  # four times the paper's widest MLP layer


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


class CheckpointChangeOut(CheckpointOut):
    ranking_job_ids: list[int] = Field(default_factory=list, description=(
        "an active segmentation branch: the jobs ranking the datasets that use it (their stored predictions and "
        "\"label next\" follow it once these finish)"))


class ImportPathIn(Schema):
    kind: Literal["generator", "segmentation"]
    name: text(200) = Field(min_length=1)
    server_path: text(4096) = Field(min_length=1, description="PATH_MAX: the longest path Linux opens")
    generator_id: Optional[RowId] = None


class TrainSegmentationIn(Schema):
    dataset_id: RowId
    steps: int = Field(2000, ge=1, le=200_000)
    ensemble_size: int = Field(10, ge=1, le=32, description="MLP classifiers in the ensemble (the paper: 10)")
    hidden: list[HiddenWidth] = Field([256, 128, 32], min_length=1, max_length=6, description="each MLP's widths")
    pixels_per_step: Optional[int] = Field(None, ge=64, le=1 << 20, description=(
        "pixels sampled per step (default: the worker's — 16384 on a GPU; on a CPU fewer, drawn class-balanced, "
        "with a decaying learning rate)"))
    early_stopping: bool = Field(True, description="stop when the loss stops improving (after 200 steps)")
    sample_ids: Optional[list[RowId]] = Field(None, max_length=100_000, description=(
        "annotated samples of the dataset to train on (default: every submitted or reviewed one); the submitted or "
        "reviewed samples left out measure the per-class IoU"))
    holdout_fraction: FiniteFloat = Field(0.2, ge=0, le=0.5, description=(
        "when nothing is left out: this share of the picked samples is held out for the IoU (0: measure on the "
        "training samples)"))
    name: text(200) = ""
    activate: bool = True


class TrainEncoderIn(Schema):
    generator_id: RowId
    steps: int = Field(10_000, ge=1, le=1_000_000)
    max_minutes: Optional[FiniteFloat] = Field(None, gt=0, le=24 * 60, description=(
        "stop after this many minutes (checked every 100 steps, or a tenth of the steps if fewer) even if "
        "fewer steps ran"))
    batch_size: int = Field(4, ge=1, le=64, description="generator samples per step")
    lpips_weight: FiniteFloat = Field(10.0, ge=0, le=1000, description="0 trains without LPIPS: faster, a little "
                                                                        "less sharp")
    real_dataset_id: Optional[RowId] = Field(None, description=(
        "mix in this dataset's uploaded photos: one batch of them per step (LPIPS + L2 to their reconstructions)"))
    name: text(200) = ""
    activate: bool = True
