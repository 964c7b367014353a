"""Every worker process's main process sweeps for jobs whose worker is gone (``jobs.recover_lost_jobs``): at
start-up, which is what a restarted worker does first, and every half ``STUDIO_JOB_STALE_SECONDS`` after that. Sweeps
by several workers at once are harmless (each change is conditional on the row as read); with no worker at all,
the web process still sweeps before counting a user's jobs and when listing them."""
from __future__ import annotations

import logging
import threading

from celery.signals import worker_ready, worker_shutdown

log = logging.getLogger(__name__)
_stop = threading.Event()


@worker_ready.connect
def _start_sweeping(**_kwargs) -> None:
    _stop.clear()
    threading.Thread(target=_sweep_until_shutdown, name="lost-job-sweeper", daemon=True).start()


@worker_shutdown.connect
def _stop_sweeping(**_kwargs) -> None:
    _stop.set()


def _sweep_until_shutdown() -> None:
    from django.conf import settings

    from webapp.jobs.services import close_connection, recover_lost_jobs

    while True:
        try:
            recover_lost_jobs()  # logs each job it takes over
        except Exception:  # the database away for a moment: the next sweep tries again
            log.exception("sweeping for lost jobs failed")
        finally:
            close_connection()  # no connection stays open in this process: the pool forks its children from it
        if _stop.wait(settings.STUDIO_JOB_STALE_SECONDS / 2):
            return
