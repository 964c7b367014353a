from django.contrib.auth import logout
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from ninja import Router, Status
from ninja.errors import HttpError
from ninja.utils import check_csrf

from webapp.accounts import services
from webapp.accounts.auth import role_auth
from webapp.accounts.models import ApiToken
from webapp.accounts.schemas import LoginIn, MeOut, NewTokenOut, TokenIn, TokenOut

router = Router(tags=["accounts"])


@router.get("/auth/csrf", auth=None)
def csrf(request):
    """Sets the csrftoken cookie; send its value back in X-CSRFToken on every unsafe request."""
    return {"csrftoken": get_token(request)}


@router.post("/auth/login", auth=None, response=MeOut)
def login_view(request, payload: LoginIn):
    if check_csrf(request) is not None:
        raise HttpError(403, "CSRF check failed: GET /api/auth/csrf first and send X-CSRFToken")
    user = services.log_in(request, payload.username, payload.password)
    if user is None:
        raise HttpError(401, "wrong username or password")
    return services.describe(user)


@router.post("/auth/logout", auth=role_auth(role_required=False))
def logout_view(request):
    logout(request)
    return {"ok": True}


@router.get("/me", auth=role_auth(role_required=False), response=MeOut)
def me(request):
    """Who you are; ``role`` null (and no permissions) until an admin gives you one."""
    return services.describe(request.user)


@router.get("/tokens", auth=role_auth(), response=list[TokenOut])
def list_tokens(request):
    """Your API tokens, newest first: active, expired and revoked ones (never their keys)."""
    return ApiToken.objects.filter(user=request.user)


@router.post("/tokens", auth=role_auth(), response={201: NewTokenOut})
def create_token(request, payload: TokenIn):
    token, key = services.issue_token(request.user, payload.name)
    return Status(201, {**TokenOut.from_orm(token).dict(), "key": key})


@router.delete("/tokens/{token_id}", auth=role_auth(), response={204: None})
def revoke_token(request, token_id: int):
    """Revoke one of your tokens: it is refused from now on and stays listed as revoked. Another user's token is
    not found (404), like one that does not exist."""
    services.revoke_token(get_object_or_404(ApiToken, user=request.user, pk=token_id))
    return Status(204, None)
