"""A running job's link to the studio: heartbeat + cancel flag (a thread), progress to the channel layer (every
event, rate-limited) and to the database (throttled), previews to the edit session's group."""
from __future__ import annotations

import base64
import io
import logging
import threading
import time
from typing import Optional

from django.conf import settings
from django.db import close_old_connections, connection

from editor_core.images import tensor_to_pil
from editor_core.progress import Cancelled, ProgressEvent
from webapp.jobs import services as jobs
from webapp.realtime.groups import job_group, publish

log = logging.getLogger(__name__)
CHANNEL_INTERVAL = 0.1  # at most 10 progress messages a second per job
MAX_POINTS = 2000  # per metric series kept in the database


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


class JobReporter:
    """Use as ``with JobReporter(job) as report: engine_op(..., progress=report)``.

    Raising :class:`Cancelled` from the callback is how a cancel reaches a running engine operation: the heartbeat
    thread reads the job's cancel flag every ``STUDIO_JOB_HEARTBEAT_SECONDS``. A job taken from this worker as lost
    (its heartbeat went stale, e.g. the process was stopped for a while) stops the same way.
    """

    def __init__(self, job, preview_group: Optional[str] = None, mask_png=None, batch=()):
        self.job = job
        self.batch = [other for other in batch if other.pk != job.pk]  # mode-1 jobs riding along
        self.preview_group = preview_group
        self.mask_png = mask_png  # callable: int64 [H, W] tensor → PNG bytes in the schema's colours
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
                    for other in self.batch:  # so that nobody takes them over as lost
                        jobs.beat(other.pk, other.attempts)
                except Exception:  # a database hiccup must not kill the job; the next beat tries again
                    log.exception("heartbeat of job %s failed", self.job.pk)
                    close_old_connections()
        finally:
            connection.close()

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
            publish(job_group(self.job.pk), {
                "type": "job.progress", "job": self.job.pk, "stage": event.stage, "step": event.step,
                "total": event.total, "progress": event.fraction, "losses": event.losses, "message": event.message})
        if last or now - self._last_db >= settings.STUDIO_PROGRESS_DB_SECONDS:
            self._last_db = now
            jobs.save_progress(self.job.pk, self.job.attempts, progress=event.fraction, stage=event.stage,
                               message=event.message, metrics=self.metrics)
        if self.preview_group and event.preview_image is not None:
            self.preview(event)

    def preview(self, event: ProgressEvent) -> None:
        buffer = io.BytesIO()
        tensor_to_pil(event.preview_image).save(buffer, format="PNG")
        message = {"type": "edit.preview", "job": self.job.pk, "step": event.step, "total": event.total,
                   "image": png_data_url(buffer.getvalue())}
        if event.preview_mask is not None and self.mask_png is not None:
            message["mask"] = png_data_url(self.mask_png(event.preview_mask))
        publish(self.preview_group, message)
