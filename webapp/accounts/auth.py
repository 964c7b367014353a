"""Who is calling, and may they: the API's authentication and role checks.

Browsers use the Django session cookie (CSRF-checked on unsafe methods); scripts send ``Authorization: Bearer
<token>`` (no CSRF: a token is never sent by a browser on its own). ``role_auth(permission)`` is a ninja auth
callable: anonymous → 401, logged in without the permission → 403; it runs before the request body is parsed, so a
forbidden caller learns nothing about the payload format.
"""
from __future__ import annotations

from typing import Optional

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from ninja.errors import HttpError
from ninja.utils import check_csrf

from webapp.accounts.models import ApiToken, hash_token


class TokenRefused(Exception):
    """An ``Authorization`` header whose token is unknown, expired or revoked (HTTP 401); the text says which."""


def token_from_header(authorization: str | None) -> Optional[ApiToken]:
    """The usable token in an ``Authorization: Bearer|Token <key>`` header (its use recorded), None without such a
    header; TokenRefused for a key that is unknown, expired, revoked or whose user is deactivated."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() not in {"bearer", "token"} or not key.strip():
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(key.strip())).first()
    if token is None or not token.user.is_active:
        raise TokenRefused("this API token is not valid: create one on your account page (POST /api/tokens)")
    if token.status == "revoked":
        raise TokenRefused(f"this API token ('{token.name}') was revoked on {token.revoked:%Y-%m-%d %H:%M} UTC")
    if token.status == "expired":
        raise TokenRefused(f"this API token ('{token.name}') expired on {token.expires:%Y-%m-%d %H:%M} UTC: create a "
                           "new one on your account page")
    ApiToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
    return token


def user_from_token(authorization: str | None):
    """The active user whose usable token is in an ``Authorization`` header, else None (websockets)."""
    try:
        token = token_from_header(authorization)
    except TokenRefused:
        return None
    return token.user if token else None


class RoleAuth:
    """ninja auth callable: a logged-in user (session or token) holding ``permission`` (any role if None);
    ``role_required=False`` also lets in a user without a role (who they are, signing out)."""

    def __init__(self, permission: Optional[str] = None, role_required: bool = True):
        self.permission = permission
        self.role_required = role_required

    def __call__(self, request):
        try:
            token = token_from_header(request.headers.get("Authorization"))
        except TokenRefused as refused:
            raise HttpError(401, str(refused)) from None
        user = token.user if token else None
        if user is None:
            session_user = getattr(request, "user", AnonymousUser())
            if not session_user.is_authenticated:
                return None
            if request.method not in {"GET", "HEAD", "OPTIONS"} and check_csrf(request) is not None:
                raise HttpError(403, "CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header")
            user = session_user
        from webapp.accounts.roles import role_of

        if self.role_required and role_of(user) is None:
            raise HttpError(403, "your account has no studio role yet: ask an admin to give you one")
        if self.permission and not user.has_perm(self.permission):
            raise HttpError(403, f"your role may not do this (needs permission {self.permission})")
        request.user = user
        return user


def role_auth(permission: Optional[str] = None, role_required: bool = True) -> RoleAuth:
    return RoleAuth(permission, role_required)
