from __future__ import annotations

from django.core.exceptions import ValidationError

from webapp.accounts.models import ApiToken
from webapp.accounts.roles import role_of


def describe(user) -> dict:
    perms = sorted(p for p in user.get_all_permissions() if p.split(".")[0] in
                   ("accounts", "datasets", "registry", "editing", "jobs"))
    return {"id": user.pk, "username": user.get_username(), "role": role_of(user), "permissions": perms}


def issue_token(user, name: str) -> tuple[ApiToken, str]:
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError("a token needs a name of 1..100 characters")
    return ApiToken.issue(user, name)


def revoke_token(user, token_id: int) -> None:
    deleted, _ = ApiToken.objects.filter(user=user, pk=token_id).delete()
    if not deleted:
        raise ValidationError(f"you have no token #{token_id}")
