from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

from ninja import Field, Schema


class LabelClassIO(Schema):
    name: str
    colour: str = Field(pattern=r"^#[0-9a-fA-F]{6}$", description="#rrggbb")


class SchemaIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    classes: list[LabelClassIO] = Field(description="index order; class 0 is the background")


class SchemaOut(Schema):
    id: int
    name: str
    description: str
    classes: list[LabelClassIO]


class DatasetIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    schema_id: int
    generator_id: int


class DatasetOut(Schema):
    id: int
    name: str
    description: str
    schema_id: int
    generator_id: int
    num_samples: int
    num_labelled: int
    created: dt.datetime


class SampleOut(Schema):
    id: int
    dataset_id: int
    source: str
    seed: Optional[int]
    width: int
    height: int
    has_latent: bool
    image_url: str
    uncertainty: Optional[float]
    annotation_version: int
    annotation_status: Optional[str]
    created: dt.datetime


class AnnotationOut(Schema):
    sample_id: int
    version: int
    status: Optional[str]
    author: Optional[str]
    mask_url: Optional[str]
    updated: Optional[dt.datetime]


class MaskIn(Schema):
    base_version: int = Field(ge=0, description="the version this mask was painted on (0: first save)")
    mask_png: str = Field(description="base64 palette/greyscale PNG of class indices, at the sample's size")


class VersionIn(Schema):
    base_version: int = Field(ge=0)


class RestoreIn(Schema):
    base_version: int = Field(ge=0, description="the current version (a stale one is refused with 409)")
    version: int = Field(ge=1, description="the revision whose mask becomes the next version")


class ReviewIn(Schema):
    base_version: int = Field(ge=0)
    decision: Literal["reviewed", "rejected"]
    note: str = ""


class RevisionOut(Schema):
    version: int
    status: str
    reason: str
    author: Optional[str]
    note: str
    created: dt.datetime


class GenerateIn(Schema):
    count: int = Field(ge=1, le=64)
    truncation_psi: float = Field(0.7, ge=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=2 ** 31 - 1)


class RankIn(Schema):
    segmentation_id: Optional[int] = Field(None, description="default: the active segmentation branch")


class EmbedIn(Schema):
    steps: int = Field(100, ge=1, le=2000, description="optimisation steps (the release: 100 interactive, 500 batch)")
