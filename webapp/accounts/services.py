from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate, login
from django.core.exceptions import ValidationError
from django.utils import timezone

from webapp.accounts import throttle
from webapp.accounts.models import ApiToken
from webapp.accounts.roles import role_of


def describe(user) -> dict:
    perms = sorted(p for p in user.get_all_permissions() if p.split(".")[0] in
                   ("accounts", "datasets", "registry", "editing", "jobs"))
    return {"id": user.pk, "username": user.get_username(), "role": role_of(user), "permissions": perms}


def client_address(request) -> str:
    """The caller's address as the web server saw it (behind a proxy, run Daphne with --proxy-headers)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def log_in(request, username: str, password: str):
    """Sign ``request`` in and return the user, or None for a wrong username or password. Raises
    throttle.Throttled once the username or the caller's address failed too often in the window."""
    username_key = f"user:{username.strip().lower()}"[:200]
    attempt = throttle.attempt("login", [
        (username_key, settings.STUDIO_LOGIN_FAILURES_PER_USERNAME),
        (f"ip:{client_address(request)}"[:200], settings.STUDIO_LOGIN_FAILURES_PER_ADDRESS),
    ], settings.STUDIO_LOGIN_WINDOW_SECONDS, "sign-in")
    user = authenticate(request, username=username, password=password)
    if user is None:
        return None  # the attempt stays recorded: a failure counts
    throttle.forget(attempt, also_key=username_key, scope="login")  # a success clears its username's failures
    login(request, user)
    return user


def issue_token(user, name: str) -> tuple[ApiToken, str]:
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError("a token needs a name of 1..100 characters")
    throttle.attempt("token", [(f"user:{user.pk}", settings.STUDIO_TOKENS_PER_WINDOW)],
                     settings.STUDIO_TOKEN_WINDOW_SECONDS, "token creation")
    return ApiToken.issue(user, name)


def revoke_token(token: ApiToken) -> None:
    """Refuse ``token`` from now on; it stays listed, as revoked (revoking it again changes nothing)."""
    ApiToken.objects.filter(pk=token.pk, revoked__isnull=True).update(revoked=timezone.now())
