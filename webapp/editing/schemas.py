from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Optional

from ninja import Field, Schema

from webapp.validation import MASK_PNG_MAX_CHARS, FiniteFloat, RowId, text

SCALE_LIMIT = 100
"""The largest |scale| a vector is applied with, and so the widest slider range it can have."""
Scale = Annotated[FiniteFloat, Field(ge=-SCALE_LIMIT, le=SCALE_LIMIT)]
ClassIndex = Annotated[int, Field(ge=0, le=254)]  # a schema has at most 255 classes
Tags = Annotated[list[text(40)], Field(max_length=32)]  # services check the letters; 40: the longest they keep


class ScaledVectorIn(Schema):
    vector_id: RowId
    scale: Scale


class LiveApplyIn(Schema):
    """A slider position on a live-apply socket (``ws/apply/<sample_id>/``, message type ``apply``)."""
    seq: int = Field(ge=0, le=2 ** 53, description="the client's number for this position; its answer carries it")
    vectors: list[ScaledVectorIn] = Field(min_length=1, max_length=32)


class EditIn(Schema):
    sample_id: RowId
    mode: Literal[1, 2, 3]
    vectors: list[ScaledVectorIn] = Field(default_factory=list, max_length=32, description="modes 1 and 2")
    composition_id: Optional[RowId] = Field(None, description="modes 1 and 2: use a saved composition's vectors")
    target_mask_png: text(MASK_PNG_MAX_CHARS) = Field("", description="mode 3: base64 PNG of the repainted mask")
    edited_classes: list[ClassIndex] = Field(default_factory=list, max_length=255, description=(
        "mode 3: classes the edit is about, whose pixels join the region of interest whole (default: those that "
        "changed, which do not)"))
    roi_png: text(MASK_PNG_MAX_CHARS) = Field("", description=(
        "mode 3: base64 greyscale PNG of the region of interest, 1 inside and 0 outside, the sample's size "
        "(default: the changed pixels, dilated)"))
    steps: Optional[int] = Field(None, ge=1, le=2000, description="modes 2 and 3: optimisation steps")
    stop_follow: Optional[FiniteFloat] = Field(None, gt=0, le=1, description="mode 3: stop once this share of the region "
                                                                       "of interest follows the painted mask")
    with_mask: bool = Field(True, description=(
        "mode 1: also segment the result (false: the image alone, sooner — the segmentation is most of a CPU's "
        "mode-1 time; the result's mask_url is then null)"))
    image_format: Literal["png", "jpeg"] = Field("png", description=(
        "mode 1: the result image's format. png (default) is lossless; jpeg (quality 92) encodes a 1024² image "
        "some 15× sooner, for a slider's preview"))


class EditResultOut(Schema):
    image_url: str
    mask_url: Optional[str] = Field(description="null for a mode-1 edit asked for without its mask")
    has_vector: bool
    edited_classes: list[int]
    metrics: dict


class EditOut(Schema):
    id: int
    sample_id: int
    generator_id: int
    mode: int
    params: dict
    job_id: Optional[int]
    job_status: Optional[str]
    result: Optional[EditResultOut]
    created: dt.datetime


class VectorFromEditIn(Schema):
    edit_id: RowId
    name: text(100) = Field(min_length=1)
    description: text(10_000) = ""
    tags: Tags = Field(default_factory=list)
    scale_min: Scale = -4.0
    scale_max: Scale = 4.0


class VectorPatchIn(Schema):
    name: Optional[text(100)] = Field(None, min_length=1)
    description: Optional[text(10_000)] = None
    tags: Optional[Tags] = None
    scale_min: Optional[Scale] = None
    scale_max: Optional[Scale] = None


class VectorOut(Schema):
    id: int
    name: str
    description: str
    tags: list[str]
    edited_classes: list[int]
    generator_id: int
    author: Optional[str]
    scale_min: FiniteFloat
    scale_max: FiniteFloat
    thumb_before_url: Optional[str]
    thumb_after_url: Optional[str]
    thumbnails_job_id: Optional[int] = Field(None, description="the job rendering the thumbnails of a vector that "
                                                               "came without pictures")
    thumbnails_status: Optional[str] = Field(None, description="ready, or that job's status while there are none")
    file_url: str
    created: dt.datetime


class CompositionItemIO(Schema):
    vector_id: RowId
    scale: Scale


class CompositionIn(Schema):
    name: text(100) = Field(min_length=1)
    generator_id: RowId
    items: list[CompositionItemIO] = Field(min_length=1, max_length=32)


class CompositionOut(Schema):
    id: int
    name: str
    generator_id: int
    author: Optional[str]
    items: list[CompositionItemIO]
    created: dt.datetime
