from __future__ import annotations

import datetime as dt
from typing import Optional

from ninja import Schema

from webapp.validation import text


class LoginIn(Schema):
    username: text(150)  # Django's username length
    password: text(4096)


class MeOut(Schema):
    id: int
    username: str
    role: Optional[str]
    permissions: list[str]


class TokenIn(Schema):
    name: text(100)


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created: dt.datetime
    last_used: Optional[dt.datetime]
    expires: dt.datetime
    revoked: Optional[dt.datetime]
    status: str  # active | expired | revoked


class NewTokenOut(TokenOut):
    key: str
