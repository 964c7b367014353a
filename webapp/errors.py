"""Errors that services raise and both the API and the websocket consumers turn into answers."""
from __future__ import annotations


class Conflict(Exception):
    """The request was based on a state that changed meanwhile (HTTP 409); ``current`` says what it is now."""

    def __init__(self, detail: str, **current):
        super().__init__(detail)
        self.detail = detail
        self.current = current
