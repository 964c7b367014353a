from __future__ import annotations

import datetime as dt
from typing import Optional

from ninja import Field, Schema

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
    jobs_ahead: Optional[int] = Field(None, description="queued: the unfinished jobs of its queue before it")

    @staticmethod
    def resolve_jobs_ahead(job) -> Optional[int]:
        from webapp.jobs.services import jobs_ahead

        return jobs_ahead(job)


class JobDetailOut(JobOut):
    log: str
