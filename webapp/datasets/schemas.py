from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Optional

from ninja import Field, Schema

from webapp.validation import MASK_PNG_MAX_CHARS, FiniteFloat, RowId, text

Version = Annotated[int, Field(ge=0, le=2 ** 31 - 1)]  # an annotation version (0: none yet)


class LabelClassIO(Schema):
    name: text(60) = Field(min_length=1)
    colour: str = Field(pattern=r"^#[0-9a-fA-F]{6}$", description="#rrggbb")


class SchemaIn(Schema):
    name: text(100) = Field(min_length=1)
    description: text(10_000) = ""
    classes: list[LabelClassIO] = Field(max_length=255, description="index order; class 0 is the background")


class SchemaOut(Schema):
    id: int
    name: str
    description: str
    classes: list[LabelClassIO]


class DatasetIn(Schema):
    name: text(100) = Field(min_length=1)
    description: text(10_000) = ""
    schema_id: RowId
    generator_id: RowId


class DatasetOut(Schema):
    id: int
    name: str
    description: str
    schema_id: int
    generator_id: int
    num_samples: int
    num_labelled: int
    created: dt.datetime


class TuningOut(Schema):
    """A sample's pivotal tuning: the generator's reproduction of the image around its latent before and after."""
    psnr_before: FiniteFloat
    psnr_after: FiniteFloat
    lpips_before: FiniteFloat
    lpips_after: FiniteFloat
    steps: int
    seconds: FiniteFloat


class SampleOut(Schema):
    id: int
    dataset_id: int
    source: str
    seed: Optional[int]
    width: int
    height: int
    has_latent: bool
    tuned: bool
    tuning: Optional[TuningOut]
    image_url: str
    uncertainty: Optional[FiniteFloat]
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
    base_version: Version = Field(description="the version this mask was painted on (0: first save)")
    mask_png: text(MASK_PNG_MAX_CHARS) = Field(description="base64 palette/greyscale PNG of class indices, at the "
                                                           "sample's size")


class VersionIn(Schema):
    base_version: Version


class RestoreIn(Schema):
    base_version: Version = Field(description="the current version (a stale one is refused with 409)")
    version: int = Field(ge=1, le=2 ** 31 - 1, description="the revision whose mask becomes the next version")


class ReviewIn(Schema):
    base_version: Version
    decision: Literal["reviewed", "rejected"]
    note: text(10_000) = ""


class RevisionOut(Schema):
    version: int
    status: str
    reason: str
    author: Optional[str]
    note: str
    created: dt.datetime


class GenerateIn(Schema):
    count: int = Field(ge=1, le=64)
    truncation_psi: FiniteFloat = Field(0.7, ge=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=2 ** 31 - 1)


class RankIn(Schema):
    segmentation_id: Optional[RowId] = Field(None, description="default: the active segmentation branch")


class EmbedIn(Schema):
    steps: Optional[int] = Field(None, ge=1, le=2000, description="optimisation steps (default: the engine's, "
                                                                  "EmbedConfig.steps)")


class TuneIn(Schema):
    steps: Optional[int] = Field(None, ge=1, le=2000, description="tuning steps (default: 50 on a CPU worker, the "
                                                                  "engine's PivotalConfig.steps on a GPU)")
