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
    name: str = Field("", max_length=200)
    activate: bool = True


class TrainEncoderIn(Schema):
    generator_id: int
    steps: int = Field(10_000, ge=1, le=1_000_000)
    name: str = Field("", max_length=200)
    activate: bool = True
