"""Errors that services raise and both the API and the websocket consumers turn into answers, and the text of
any error as a user may read it."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Mapping, Optional

# A Python object's default repr, e.g. Pillow's "cannot identify image file <_io.BytesIO object at 0x7f…>".
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


class Conflict(Exception):
    """The request was based on a state that changed meanwhile (HTTP 409); ``current`` says what it is now."""

    def __init__(self, detail: str, **current):
        super().__init__(detail)
        self.detail = detail
        self.current = current


def _server_folders() -> list[str]:
    """Folders whose paths mean nothing to a user and tell an attacker where things are: the temporary folder, the
    studio's media and var folders, the code."""
    from django.conf import settings

    folders = {tempfile.gettempdir(), str(settings.MEDIA_ROOT), str(settings.VAR_DIR), str(settings.BASE_DIR)}
    folders |= {str(Path(folder).resolve()) for folder in folders}
    folders = {folder.rstrip("/") for folder in folders} - {""}  # never the root: that would eat every URL path
    return sorted(folders, key=len, reverse=True)  # the longest first: a folder inside another one


def readable(error: BaseException | str, shown_as: Optional[Mapping[str | Path, str]] = None) -> str:
    """``error``'s text for a user: each path in ``shown_as`` as the name the user knows it by (an upload's file
    name), any other path below a server folder as its last part, and no Python object reprs."""
    text = str(error)
    for path, name in sorted((shown_as or {}).items(), key=lambda item: len(str(item[0])), reverse=True):
        text = text.replace(str(path), name)
    for folder in _server_folders():
        text = re.sub(re.escape(folder) + r"/(?:[^\s'\"]*/)?([^\s/'\"]*)", r"\1", text)
    return _OBJECT_REPR.sub("", text)
