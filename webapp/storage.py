"""Reading and writing files through Django's default storage (local media or S3, by settings)."""
from __future__ import annotations

import datetime as dt
import secrets
import shutil
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterable, Iterator, Optional

from django.apps import apps
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.utils import timezone

# The names save_bytes stored inside the innermost open files_removed_on_error block (None outside any).
_stored_in_block: ContextVar[Optional[list[str]]] = ContextVar("stored_in_block", default=None)


def unguessable_name(name: str) -> str:
    """``name`` with a random token before its file name: ``edits/image.png`` → ``edits/<32 hex digits>-image.png``.

    Nobody can guess a stored file's name (not from another one, nor from a row's id), so a URL leaks only what it
    names; protected media still serves a file only to those who may see its row (webapp.studio.media)."""
    folder, _, filename = name.rpartition("/")
    return f"{folder}/{secrets.token_hex(16)}-{filename}".lstrip("/")


def save_bytes(name: str, data: bytes) -> str:
    """Store ``data`` under ``unguessable_name(name)`` and return the stored name."""
    stored = default_storage.save(unguessable_name(name), ContentFile(data))
    block = _stored_in_block.get()
    if block is not None:
        block.append(stored)
    return stored


@contextmanager
def files_removed_on_error() -> Iterator[None]:
    """When the block raises, delete the files ``save_bytes`` stored inside it, so a failed request or job leaves no
    orphan files. Nested in another such block, its files stay in the outer one's care until that one ends too.

    It opens no transaction: code that runs in a CPU worker stores its files first and writes its rows in a short
    ``transaction.atomic()`` inside the block. On SQLite every transaction takes the database's write lock at once
    (``transaction_mode`` IMMEDIATE), and a lower-priority worker holding it through PNG encoding and file writes
    kept the web server's saves waiting for seconds."""
    enclosing = _stored_in_block.get()
    stored: list[str] = []
    token = _stored_in_block.set(stored)
    try:
        yield
    except BaseException:
        for name in stored:
            delete_quietly(name)
        raise
    else:
        if enclosing is not None:
            enclosing.extend(stored)
    finally:
        _stored_in_block.reset(token)


@contextmanager
def atomic_with_files() -> Iterator[None]:
    """``transaction.atomic()`` whose stored files go with its rows: when the block raises (a 409 for a taken name,
    a database error, a refused job), its rows roll back and the files stored inside it are deleted."""
    with files_removed_on_error(), transaction.atomic():
        yield


def read_bytes(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()


def local_path(name: str, cache_key: str) -> Path:
    """A local file for a stored file (engines open paths): the media file itself, or a copy cached from remote
    storage (S3) under ``cache_key`` (a checkpoint's hash), fetched once."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:  # remote storage
        cached = Path(settings.VAR_DIR) / "cache" / "files" / f"{cache_key}{Path(name).suffix}"
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".partial")
            with default_storage.open(name, "rb") as source, open(partial, "wb") as target:
                shutil.copyfileobj(source, target)
            partial.rename(cached)
        return cached


def delete_quietly(name: str) -> None:
    if name and default_storage.exists(name):
        default_storage.delete(name)


def delete_on_commit(names: Iterable[str]) -> None:
    """Delete the stored files ``names`` once the change that stops naming them holds: when the transaction commits
    (at once outside a transaction), never when it rolls back. Empty names are skipped."""
    names = [name for name in names if name]
    transaction.on_commit(lambda: [delete_quietly(name) for name in names])


def stored_names(folder: str = "") -> Iterator[str]:
    """Every file name in the studio's storage below ``folder``."""
    try:
        folders, files = default_storage.listdir(folder)
    except FileNotFoundError:
        return
    for name in files:
        yield f"{folder}/{name}".lstrip("/")
    for sub in folders:
        yield from stored_names(f"{folder}/{sub}".lstrip("/"))


def referenced_names() -> set[str]:
    """Every stored file name that a row of any model refers to through a ``FileField``."""
    names: set[str] = set()
    for model in apps.get_models():
        fields = [field.name for field in model._meta.concrete_fields if isinstance(field, models.FileField)]
        for row in model._default_manager.values_list(*fields) if fields else ():
            names.update(name for name in row if name)
    return names


def unreferenced_files(older_than: dt.timedelta) -> Iterator[tuple[str, int]]:
    """``(name, bytes)`` of the stored files that no row refers to and that were last written more than
    ``older_than`` ago: deleted samples' and vectors' files, replaced latents. Younger files are left alone: an
    upload stores its file before its row commits, and a queued job may still read a replaced file."""
    referenced = referenced_names()
    cutoff = timezone.now() - older_than
    for name in stored_names():
        if name not in referenced and default_storage.get_modified_time(name) < cutoff:
            yield name, default_storage.size(name)
