from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "egs_"


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for scripts. Only its SHA-256 is stored; the key is shown once, when it is created. It works
    until it expires (STUDIO_TOKEN_LIFETIME_DAYS after its creation) or its owner revokes it; revoked and expired
    tokens stay listed, so their owner sees what was used when."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="first characters, to recognise a token")
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(help_text="refused from then on")
    revoked = models.DateTimeField(null=True, blank=True, help_text="when its owner revoked it (refused since)")

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…, {self.user})"

    @classmethod
    def issue(cls, user, name: str) -> tuple["ApiToken", str]:
        """Create a token for ``user``; returns it and the plain key (not retrievable later)."""
        key = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = timezone.now() + dt.timedelta(days=settings.STUDIO_TOKEN_LIFETIME_DAYS)
        token = cls.objects.create(user=user, name=name, key_hash=hash_token(key), prefix=key[:10], expires=expires)
        return token, key

    @property
    def status(self) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked is not None:
            return "revoked"
        return "expired" if self.expires <= timezone.now() else "active"


class ThrottleEvent(models.Model):
    """One counted attempt (a login, a token creation) under a key (``user:<name>``, ``ip:<address>``); the
    throttle counts a key's events in its window. In the database, so every Daphne process sees the same counts."""

    scope = models.CharField(max_length=16)
    key = models.CharField(max_length=200)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["scope", "key", "created"], name="throttle_scope_key_created")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key} at {self.created:%Y-%m-%d %H:%M:%S}"
