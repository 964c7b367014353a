from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

from ninja import Field, Schema


class ScaledVectorIn(Schema):
    vector_id: int
    scale: float = Field(ge=-100, le=100)


class EditIn(Schema):
    sample_id: int
    mode: Literal[1, 2, 3]
    vectors: list[ScaledVectorIn] = Field(default_factory=list, description="modes 1 and 2")
    composition_id: Optional[int] = Field(None, description="modes 1 and 2: use a saved composition's vectors")
    target_mask_png: str = Field("", description="mode 3: base64 PNG of the repainted mask")
    edited_classes: list[int] = Field(default_factory=list, description="mode 3: classes the edit is about, "
                                      "whose pixels join the region of interest whole (default: those that changed, "
                                      "which do not)")
    roi_png: str = Field("", description="mode 3: base64 greyscale PNG of the region of interest, 1 inside and 0 "
                                         "outside, the sample's size (default: the changed pixels, dilated)")
    steps: Optional[int] = Field(None, ge=1, le=2000, description="modes 2 and 3: optimisation steps")
    stop_follow: Optional[float] = Field(None, gt=0, le=1, description="mode 3: stop once this share of the region "
                                                                       "of interest follows the painted mask")


class EditResultOut(Schema):
    image_url: str
    mask_url: str
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
    edit_id: int
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    scale_min: float = -4.0
    scale_max: float = 4.0


class VectorPatchIn(Schema):
    name: Optional[str] = Field(None, min_length=1, max_length=100)
    description: Optional[str] = None
    tags: Optional[list[str]] = None
    scale_min: Optional[float] = None
    scale_max: Optional[float] = None


class VectorOut(Schema):
    id: int
    name: str
    description: str
    tags: list[str]
    edited_classes: list[int]
    generator_id: int
    author: Optional[str]
    scale_min: float
    scale_max: float
    thumb_before_url: Optional[str]
    thumb_after_url: Optional[str]
    thumbnails_job_id: Optional[int] = Field(None, description="the job rendering the thumbnails of a vector that "
                                                               "came without pictures")
    thumbnails_status: Optional[str] = Field(None, description="ready, or that job's status while there are none")
    file_url: str
    created: dt.datetime


class CompositionItemIO(Schema):
    vector_id: int
    scale: float = Field(ge=-100, le=100)


class CompositionIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    generator_id: int
    items: list[CompositionItemIO] = Field(min_length=1, max_length=32)


class CompositionOut(Schema):
    id: int
    name: str
    generator_id: int
    author: Optional[str]
    items: list[CompositionItemIO]
    created: dt.datetime
