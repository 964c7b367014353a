"""How every task runs its job: claim it, run the task's body with a reporter, end it. ``end_with`` is the one error
path of all tasks (mode-1 requests riding along in a batch included)."""
from __future__ import annotations

import logging
import os
import socket
import traceback
from typing import Callable

from celery.exceptions import SoftTimeLimitExceeded
from django.core.exceptions import ValidationError

from editor_core.progress import Cancelled
from gpu_worker.progress import JobReporter
from webapp.errors import Conflict
from webapp.jobs import services as jobs

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(job_id: int, body: Callable[[object, JobReporter], dict]) -> str:
    """Claim the job, run ``body(job, reporter)`` (heartbeat, cancel, progress), record how it ended. Jobs that
    ``body`` adds to ``reporter.batch`` end with it when it raises."""
    job = jobs.claim(job_id, worker_name())
    if job is None:
        return "skipped"
    reporter = JobReporter(job)
    try:
        with reporter:
            result = body(job, reporter)
    except Exception as exc:
        for rider in reporter.batch:
            end_with(rider, exc)
        return end_with(job, exc)
    jobs.succeed(job, result, reporter.metrics)
    return "succeeded"


def end_with(job, exc: Exception) -> str:
    """End ``job`` for the exception its run raised: cancelled, or failed with a clear message (the traceback goes
    to the job's log only for what nobody foresaw)."""
    if isinstance(exc, Cancelled):
        jobs.end_cancelled(job)
        return "cancelled"
    error, foreseen = failure_text(exc, jobs.time_limit(job.queue))
    if not foreseen:
        log.error("job %s (%s) failed", job.pk, job.kind, exc_info=exc)
        jobs.append_log(job, "".join(traceback.format_exception(exc)))
    jobs.fail(job, error)
    return "failed"


def failure_text(exc: Exception, time_limit: float) -> tuple[str, bool]:
    """What a user reads of a task's exception, and whether it was foreseen: a refused input or the time limit need
    no traceback, anything else does."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"ran past the {time_limit:g} s time limit", True
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages), True
    if isinstance(exc, Conflict):
        return exc.detail, True
    if isinstance(exc, (ValueError, FileNotFoundError)):  # the engine refused the input
        return str(exc), True
    return f"{type(exc).__name__}: {exc}", False
