"""Reading and writing files through Django's default storage (local media or S3, by settings)."""
from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


def save_bytes(name: str, data: bytes) -> str:
    """Store ``data`` under ``name`` (a free name is chosen if it exists) and return the stored name."""
    return default_storage.save(name, ContentFile(data))


def read_bytes(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()


def delete_quietly(name: str) -> None:
    if name and default_storage.exists(name):
        default_storage.delete(name)
