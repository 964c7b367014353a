from __future__ import annotations

import datetime as dt
from typing import Optional

from ninja import Schema

from webapp.validation import FiniteFloat


class JobOut(Schema):
    id: int
    kind: str
    queue: str
    status: str
    progress: FiniteFloat
    stage: str
    message: str
    params: dict
    result: dict
    metrics: dict
    error: str
    attempts: int
    cancel_requested: bool
    requested_by_id: Optional[int]
    retry_of_id: Optional[int]
    created: dt.datetime
    started: Optional[dt.datetime]
    finished: Optional[dt.datetime]


class JobDetailOut(JobOut):
    log: str
