"""Jobs: enqueue (with per-user limits), cancel, retry; the calls a worker makes while it runs a job; and the
recovery of jobs whose worker is gone (``recover_lost_jobs``: queued again, or failed after
``STUDIO_JOB_MAX_ATTEMPTS`` starts).

A running job belongs to one attempt (``attempts`` = how many times a worker started it): its heartbeat, progress and
end are written only while the row is still running that attempt, so a worker that was taken for lost and comes
back can neither overwrite the row nor keep a job that runs elsewhere now."""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Optional

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from webapp.accounts import roles
from webapp.errors import Conflict, readable
from webapp.jobs.models import Job
from webapp.jobs.signals import job_retried
from webapp.realtime.groups import job_group, publish

log = logging.getLogger(__name__)

INTERACTIVE, TRAINING = "interactive", "training"
QUEUE_OF_KIND = {
    Job.Kind.SAMPLE: INTERACTIVE, Job.Kind.PRELABEL: INTERACTIVE, Job.Kind.EMBED: INTERACTIVE,
    Job.Kind.APPLY: INTERACTIVE, Job.Kind.REFINE: INTERACTIVE, Job.Kind.OPTIMIZE: INTERACTIVE,
    Job.Kind.VECTOR_THUMBNAILS: INTERACTIVE, Job.Kind.SEGMENT: INTERACTIVE, Job.Kind.TUNE: INTERACTIVE,
    Job.Kind.RANK: TRAINING, Job.Kind.TRAIN_SEGMENTATION: TRAINING, Job.Kind.TRAIN_ENCODER: TRAINING,
    Job.Kind.IMPORT_CHECKPOINT: TRAINING,  # seconds of CPU and memory for a large pickle, and nobody waits on a slider
}
# Jobs that hold a GPU for seconds to hours count against a user's queue limit; real-time ones do not.
EXPENSIVE = {Job.Kind.SAMPLE, Job.Kind.EMBED, Job.Kind.TUNE, Job.Kind.REFINE, Job.Kind.OPTIMIZE, Job.Kind.RANK,
             Job.Kind.TRAIN_SEGMENTATION, Job.Kind.TRAIN_ENCODER, Job.Kind.IMPORT_CHECKPOINT}
TASK_PREFIX = "gpu_worker."


class TooManyJobs(Exception):
    """The user already has the maximum number of expensive jobs queued or running (HTTP 429)."""


def task_name(kind: str) -> str:
    return TASK_PREFIX + kind


def time_limit(queue: str) -> int:
    return settings.STUDIO_TRAINING_TIME_LIMIT if queue == TRAINING else settings.STUDIO_INTERACTIVE_TIME_LIMIT


def enqueue(kind: str, user, params: dict, batch_key: str = "", limited: bool = True) -> Job:
    """Create a queued Job and hand it to Celery once the surrounding transaction commits.

    ``limited=False``: work the studio queues itself as the consequence of a change (the ranking that follows an
    activation) does not count against the user's limit: the change must not be refused or left half done."""
    if kind in EXPENSIVE and limited:
        recover_lost_jobs()  # a job whose worker died must not hold the user's place
        waiting = Job.objects.filter(requested_by=user, kind__in=EXPENSIVE,
                                     status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).count()
        if waiting >= settings.STUDIO_MAX_QUEUED_JOBS_PER_USER:
            raise TooManyJobs(f"you already have {waiting} expensive jobs queued or running (limit "
                              f"{settings.STUDIO_MAX_QUEUED_JOBS_PER_USER}): wait for one to finish or cancel one")
    job = Job.objects.create(kind=kind, queue=QUEUE_OF_KIND[kind], params=params, requested_by=user,
                             batch_key=batch_key)
    transaction.on_commit(lambda: send(job))
    return job


def send(job: Job) -> None:
    from gpu_worker.celery_app import app  # the Celery app only: the webapp never imports the engine's tasks

    limit = time_limit(job.queue)
    app.send_task(task_name(job.kind), args=[job.pk], queue=job.queue, soft_time_limit=limit,
                  time_limit=limit + 30)


def visible_jobs(user):
    if user.has_perm(roles.VIEW_ALL_JOBS):
        return Job.objects.all()
    return Job.objects.filter(requested_by=user)


def _check_owner(job: Job, user) -> None:
    if job.requested_by_id != user.pk and not user.has_perm(roles.VIEW_ALL_JOBS):
        raise PermissionDenied("this is someone else's job")


def cancel(job: Job, user) -> Job:
    """A queued job, or a running one whose worker is gone, is cancelled at once; a running one is told to stop and
    does within its next heartbeat."""
    _check_owner(job, user)
    if job.is_finished:
        raise Conflict(f"job #{job.pk} has already {job.status}", current_status=job.status)
    now = timezone.now()
    ended = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
        status=Job.Status.CANCELLED, cancel_requested=True, finished=now, message="cancelled before it ran")
    ended = ended or lost_jobs(now).filter(pk=job.pk).update(
        status=Job.Status.CANCELLED, cancel_requested=True, finished=now, message=f"cancelled: {_worker_lost(job)}")
    if not ended:
        Job.objects.filter(pk=job.pk).update(cancel_requested=True, message="cancelling")
    job.refresh_from_db()
    publish_status(job)
    return job


def retry(job: Job, user) -> Job:
    """Run a failed or cancelled job again as a new job with the same parameters."""
    _check_owner(job, user)
    if job.status not in (Job.Status.FAILED, Job.Status.CANCELLED):
        raise Conflict(f"only failed or cancelled jobs can be retried; job #{job.pk} is {job.status}",
                       current_status=job.status)
    with transaction.atomic():
        new = enqueue(job.kind, user, job.params, batch_key=job.batch_key)
        Job.objects.filter(pk=new.pk).update(retry_of=job)
        new.refresh_from_db()
        job_retried.send(sender=Job, old=job, new=new)
    return new


def jobs_ahead(job: Job) -> Optional[int]:
    """How many unfinished jobs of ``job``'s queue were queued before it (its queue's workers take them first);
    None unless it is queued. The studio shows it as "queued behind N jobs"."""
    if job.status != Job.Status.QUEUED:
        return None
    return Job.objects.filter(queue=job.queue, status__in=[Job.Status.QUEUED, Job.Status.RUNNING],
                              pk__lt=job.pk).count()


def job_payload(job: Job) -> dict:
    return {"job": job.pk, "kind": job.kind, "status": job.status, "progress": job.progress, "stage": job.stage,
            "message": job.message, "error": job.error, "result": job.result, "attempts": job.attempts,
            "jobs_ahead": jobs_ahead(job)}


def publish_status(job: Job) -> None:
    publish(job_group(job.pk), {"type": "job.status", **job_payload(job)})


# --- called by workers ---------------------------------------------------------------------------------------------
def claim(job_id: int, worker: str) -> Optional[Job]:
    """Mark the job running on ``worker`` and return it, or None if nobody should run it (again).

    A message can arrive twice: when a worker died (acks_late puts it back, and ``recover_lost_jobs`` queues the job
    again) or when the broker redelivered it while it still ran. A running job is taken over only once its
    heartbeat is stale, i.e. its worker is really gone, and only while it has attempts left.
    """
    deadline = time.monotonic() + settings.STUDIO_JOB_STALE_SECONDS + 2
    while True:
        job = Job.objects.filter(pk=job_id).first()
        if job is None or job.is_finished:
            return None
        if job.status == Job.Status.RUNNING:
            if not lost_jobs().filter(pk=job_id).exists():
                if time.monotonic() > deadline:
                    return None  # alive elsewhere: that worker will finish it
                time.sleep(0.5)
                continue
            _recover(job, resend=False)  # this message runs it, if it has attempts left
            continue
        now = timezone.now()
        if Job.objects.filter(pk=job_id, status=Job.Status.QUEUED, attempts=job.attempts).update(
                status=Job.Status.RUNNING, started=now, heartbeat=now, worker=worker, attempts=job.attempts + 1):
            job.refresh_from_db()
            publish_status(job)
            return job


def lost_jobs(now: Optional[dt.datetime] = None):
    """Running jobs whose worker is gone: heartbeat older than ``STUDIO_JOB_STALE_SECONDS``, or none written for
    that long since the job started."""
    stale = (now or timezone.now()) - dt.timedelta(seconds=settings.STUDIO_JOB_STALE_SECONDS)
    return Job.objects.filter(status=Job.Status.RUNNING).filter(
        Q(heartbeat__lt=stale) | Q(heartbeat__isnull=True, started__lt=stale)
        | Q(heartbeat__isnull=True, started__isnull=True, created__lt=stale))


def recover_lost_jobs() -> list[Job]:
    """Queue every lost job again, or end it: cancelled if that was asked, failed after ``STUDIO_JOB_MAX_ATTEMPTS``
    starts. Safe to run anywhere and often (each change is conditional on the row as read): the workers run it
    periodically, the web process before counting a user's jobs and when listing them."""
    return [job for job in lost_jobs() if _recover(job)]


def _worker_lost(job: Job) -> str:
    return f"worker {job.worker} was lost" if job.worker else "its worker was lost"


def _recover(job: Job, resend: bool = True) -> bool:
    """Take ``job`` (read while running and lost) from its gone worker; False if the row changed meanwhile."""
    now = timezone.now()
    was = _worker_lost(job)
    if job.cancel_requested:
        fields = {"status": Job.Status.CANCELLED, "finished": now, "message": f"cancelled: {was}"}
    elif job.attempts >= settings.STUDIO_JOB_MAX_ATTEMPTS:
        fields = {"status": Job.Status.FAILED, "finished": now, "message": "",
                  "error": f"{was} during attempt {job.attempts} of {settings.STUDIO_JOB_MAX_ATTEMPTS}; "
                           "not run again (retry it once its cause is fixed)"}
    else:  # it runs again from the start
        fields = {"status": Job.Status.QUEUED, "heartbeat": None, "worker": "", "progress": 0.0, "stage": "",
                  "metrics": {}, "message": f"{was}: queued again for attempt {job.attempts + 1} of "
                                            f"{settings.STUDIO_JOB_MAX_ATTEMPTS}"}
    if not Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempts=job.attempts,
                              heartbeat=job.heartbeat).update(**fields):
        return False
    log.warning("job %s: %s (attempt %s); now %s", job.pk, was, job.attempts, fields["status"])
    job.refresh_from_db()
    publish_status(job)
    if resend and job.status == Job.Status.QUEUED:
        transaction.on_commit(lambda: send(job))
    return True


def claim_batch(batch_key: str, worker: str, limit: int, exclude: int) -> list[Job]:
    """Claim up to ``limit`` other queued jobs with ``batch_key`` (mode-1 requests that arrived together)."""
    claimed = []
    now = timezone.now()
    candidates = (Job.objects.filter(batch_key=batch_key, status=Job.Status.QUEUED, cancel_requested=False)
                  .exclude(pk=exclude).order_by("created").values_list("pk", "attempts")[:limit])
    for pk, attempts in candidates:
        if Job.objects.filter(pk=pk, status=Job.Status.QUEUED).update(
                status=Job.Status.RUNNING, started=now, heartbeat=now, worker=worker, attempts=attempts + 1):
            claimed.append(Job.objects.get(pk=pk))
    return claimed


def beat(job_id: int, attempt: int) -> bool:
    """Refresh the heartbeat of a running job's ``attempt``; returns whether its worker must stop: cancel was asked,
    or the job is no longer this attempt's (taken for lost and queued again, cancelled, finished)."""
    if not Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, attempts=attempt).update(
            heartbeat=timezone.now()):
        return True
    return Job.objects.filter(pk=job_id, cancel_requested=True).exists()


def save_progress(job_id: int, attempt: int, *, progress: float, stage: str, message: str, metrics: dict) -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, attempts=attempt).update(
        progress=progress, stage=stage, message=message[:500], metrics=metrics)


def publish_progress(job: Job, *, stage: str, step: int, total: int, progress: float, losses: dict,
                     message: str) -> None:
    """A running job's step for its websocket (every step a worker reports, rate-limited by the worker)."""
    publish(job_group(job.pk), {"type": "job.progress", "job": job.pk, "stage": stage, "step": step, "total": total,
                                "progress": progress, "losses": losses, "message": message})


def close_connection() -> None:
    """Close this thread's database connection: a worker's heartbeat thread or sweeper holds none between its
    rounds (the prefork pool forks from the sweeper's process; a failed query leaves a broken one)."""
    connection.close()


def record_result(job: Job, result: dict) -> None:
    """Keep in the running job's ``result`` what it has stored so far, in the transaction that stored it: a run after
    a lost worker reads it and does not store it twice. Conflict (the transaction rolls back) when the job is no
    longer this attempt's."""
    if not Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempts=job.attempts).update(result=result):
        raise Conflict(f"job #{job.pk} was taken from this worker (its heartbeat went stale); it runs again elsewhere")
    job.result = result


def append_log(job: Job, line: str) -> None:
    """Add to the log its owner reads (server paths shortened: the worker's own log has the full traceback)."""
    job.log = (job.log + readable(line).rstrip() + "\n")[-100_000:]
    Job.objects.filter(pk=job.pk).update(log=job.log)


def succeed(job: Job, result: dict, metrics: Optional[dict] = None) -> Job:
    return finish(job, Job.Status.SUCCEEDED, result=result, metrics=metrics)


def fail(job: Job, error: str) -> Job:
    return finish(job, Job.Status.FAILED, error=error)


def end_cancelled(job: Job) -> Job:
    return finish(job, Job.Status.CANCELLED)


def finish(job: Job, status: str, *, result: Optional[dict] = None, error: str = "", metrics: Optional[dict] = None
           ) -> Job:
    fields = {"status": status, "finished": timezone.now(), "error": readable(error)[-10_000:]}
    if status == Job.Status.SUCCEEDED:
        fields["progress"] = 1.0
    if result is not None:
        fields["result"] = result
    if metrics is not None:
        fields["metrics"] = metrics
    if status == Job.Status.CANCELLED:
        fields["message"] = "cancelled"
    ours = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, attempts=job.attempts).update(**fields)
    job.refresh_from_db()
    if not ours:  # taken for lost meanwhile: the row's state (queued again, cancelled, run elsewhere) stands
        log.warning("job %s: attempt %s ended (%s) after it was taken from this worker", job.pk, job.attempts, status)
        return job
    publish_status(job)
    return job
