"""A running job's link to the studio: heartbeat + cancel flag (a thread), progress to the job's websocket (every
event, rate-limited) and to the database (throttled), previews to whoever the task names (``on_preview``)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from django.conf import settings

from editor_core.progress import Cancelled, ProgressEvent
from webapp.jobs import services as jobs

log = logging.getLogger(__name__)
CHANNEL_INTERVAL = 0.1  # at most 10 progress messages a second per job
MAX_POINTS = 2000  # per metric series kept in the database


class JobReporter:
    """Use as ``with JobReporter(job) as report: engine_op(..., progress=report)``.

    Raising :class:`Cancelled` from the callback is how a cancel reaches a running engine operation: the heartbeat
    thread reads the job's cancel flag every ``STUDIO_JOB_HEARTBEAT_SECONDS``. A job taken from this worker as lost
    (its heartbeat went stale, e.g. the process was stopped for a while) stops the same way.
    """

    def __init__(self, job):
        self.job = job
        self.batch: list = []  # mode-1 jobs riding along: kept alive by the heartbeat, ended with this one
        self.on_preview: Optional[Callable[[ProgressEvent], None]] = None  # events that carry a preview image
        self.metrics: dict[str, list[list[float]]] = {}
        self.cancel_requested = threading.Event()
        self._stop = threading.Event()
        self._last_db = self._last_channel = 0.0
        self._thread = threading.Thread(target=self._heartbeat, name=f"job-{job.pk}-heartbeat", daemon=True)

    def __enter__(self) -> "JobReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _heartbeat(self) -> None:
        try:
            while not self._stop.wait(settings.STUDIO_JOB_HEARTBEAT_SECONDS):
                try:
                    if jobs.beat(self.job.pk, self.job.attempts):  # cancelled, or taken from this worker as lost
                        self.cancel_requested.set()
                    for other in list(self.batch):  # so that nobody takes them over as lost
                        jobs.beat(other.pk, other.attempts)
                except Exception:  # a database hiccup must not kill the job; the next beat tries again
                    log.exception("heartbeat of job %s failed", self.job.pk)
                    jobs.close_connection()
        finally:
            jobs.close_connection()

    def check_cancelled(self) -> None:
        if self.cancel_requested.is_set():
            raise Cancelled(f"job {self.job.pk} was cancelled")

    def __call__(self, event: ProgressEvent) -> None:
        self.check_cancelled()
        for name, value in event.losses.items():
            series = self.metrics.setdefault(name, [])
            series.append([event.step, float(value)])
            if len(series) > MAX_POINTS:  # keep the whole run's shape: drop every other point
                del series[1::2]
        now = time.monotonic()
        last = event.total > 0 and event.step >= event.total
        if last or now - self._last_channel >= CHANNEL_INTERVAL:
            self._last_channel = now
            jobs.publish_progress(self.job, stage=event.stage, step=event.step, total=event.total,
                                  progress=event.fraction, losses=event.losses, message=event.message)
        if last or now - self._last_db >= settings.STUDIO_PROGRESS_DB_SECONDS:
            self._last_db = now
            jobs.save_progress(self.job.pk, self.job.attempts, progress=event.fraction, stage=event.stage,
                               message=event.message, metrics=self.metrics)
        if self.on_preview is not None and event.preview_image is not None:
            self.on_preview(event)
