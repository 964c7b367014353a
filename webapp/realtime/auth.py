"""Who is on a websocket: the session cookie (with an Origin check, since browsers send cookies cross-site) or an
``Authorization: Bearer <token>`` header (scripts; no Origin needed)."""
from __future__ import annotations

from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import validate_host

from webapp.accounts.auth import user_from_token


def origin_allowed(origin: str) -> bool:
    """The page that opened the socket is served by this studio (ALLOWED_HOSTS or CSRF_TRUSTED_ORIGINS)."""
    if not origin or origin == "null":
        return False
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    return validate_host(parsed.hostname, settings.ALLOWED_HOSTS)


class _TokenOrOriginChecked:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scope = dict(scope)
        if authorization:
            scope["user"] = await database_sync_to_async(user_from_token)(authorization) or AnonymousUser()
        elif scope["user"].is_authenticated and not origin_allowed(headers.get(b"origin", b"").decode("latin-1")):
            return await WebsocketDenier()(scope, receive, send)
        return await self.inner(scope, receive, send)


def StudioWebsocketAuth(inner):  # noqa: N802 (reads like the Channels middleware stacks it wraps)
    return AuthMiddlewareStack(_TokenOrOriginChecked(inner))
