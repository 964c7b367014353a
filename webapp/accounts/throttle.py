"""Sliding-window throttles for logins and token creation, counted in the database (every Daphne process sees the
same counts; no process memory).

An attempt is recorded *before* it is judged and then counted with every other recorded one of its key in the
window, so concurrent attempts cannot all slip under the limit: the k-th recorded attempt sees at least k.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Sequence

from django.utils import timezone

from webapp.accounts.models import ThrottleEvent


class Throttled(Exception):
    """Too many attempts (HTTP 429); ``retry_after`` seconds until the next one may be made."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def attempt(scope: str, limits: Sequence[tuple[str, int]], window_seconds: int, what: str) -> list[ThrottleEvent]:
    """Record one attempt under each ``(key, limit)`` and return the records; if any key now has more than its
    limit in the last ``window_seconds``, take the records back and raise Throttled saying ``what`` to wait for."""
    now = timezone.now()
    window = dt.timedelta(seconds=window_seconds)
    ThrottleEvent.objects.filter(scope=scope, created__lt=now - window).delete()  # nothing older counts again
    events = [ThrottleEvent.objects.create(scope=scope, key=key, created=now) for key, _ in limits]
    for key, limit in limits:
        recent = ThrottleEvent.objects.filter(scope=scope, key=key, created__gt=now - window).order_by("created")
        if recent.count() > limit:
            oldest = recent.first().created
            forget(events)
            retry_after = max(1, math.ceil((oldest + window - now).total_seconds()))
            raise Throttled(f"too many {what} attempts: try again in {_duration(retry_after)}", retry_after)
    return events


def forget(events: Sequence[ThrottleEvent], *, also_key: str = "", scope: str = "") -> None:
    """Take ``events`` back (an attempt that succeeded or was refused), and every earlier one of ``also_key``."""
    ThrottleEvent.objects.filter(pk__in=[event.pk for event in events]).delete()
    if also_key:
        ThrottleEvent.objects.filter(scope=scope, key=also_key).delete()


def _duration(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"
