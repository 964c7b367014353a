"""Channel-layer group names and a synchronous ``publish`` usable from views, services and Celery workers."""
from __future__ import annotations

import base64

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def job_group(job_id: int) -> str:
    return f"job.{job_id}"


def edit_group(session_id: int) -> str:
    return f"edit.{session_id}"


def annotation_group(sample_id: int) -> str:
    return f"annotate.{sample_id}"


def png_data_url(png: bytes) -> str:
    """PNG bytes as a ``data:`` URL, for pictures sent in a message and not stored (edit previews)."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def publish(group: str, event: dict) -> None:
    """Send ``event`` to every socket in ``group``; ``event['type']`` names the consumer handler (dots → _)."""
    async_to_sync(get_channel_layer().group_send)(group, event)
