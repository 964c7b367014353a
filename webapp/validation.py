"""What every API input shares: finite floats, bounded NUL-free text, and the strict JSON that the API reads and
writes (no NaN/Infinity either way: they are not JSON, and a browser cannot parse them)."""
from __future__ import annotations

import json
import math
from typing import Annotated, Any

from ninja.parser import Parser
from ninja.renderers import JSONRenderer
from pydantic import AfterValidator, Field, StringConstraints

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""Every float an API schema has: ±Infinity and NaN are refused with 422 ("Input should be a finite number")."""

RowId = Annotated[int, Field(ge=1, le=2 ** 63 - 1)]
"""A row's primary key in a request: positive and within a 64-bit integer (larger ones fail inside PostgreSQL)."""

MASK_PNG_MAX_CHARS = 8 * 1024 * 1024
"""A base64 mask PNG: an 8-bit 2048² mask even stored uncompressed (4 MiB, 5.6 MiB in base64) fits."""


def _no_nul(value: str) -> str:
    if "\x00" in value:  # PostgreSQL text cannot hold it: the query would fail with a 500
        raise ValueError("must not contain NUL characters")
    return value


def text(max_length: int) -> Any:
    """A string type of at most ``max_length`` characters and without NUL (every text an API request can set)."""
    return Annotated[str, StringConstraints(max_length=max_length), AfterValidator(_no_nul)]


class UnreadableBody(ValueError):
    """A request body that is not strict JSON; its message names the reason and nothing of the server."""


def _refuse_constant(name: str):
    raise UnreadableBody(f"{name} is not a JSON number")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise UnreadableBody(f"{literal[:20]} is too large for a number")
    return value


class StrictJSONParser(Parser):
    """Request bodies as strict JSON objects: NaN/Infinity literals, numbers beyond a float's range, nesting deeper
    than Python's recursion limit (a RecursionError otherwise) and anything but an object at the top (a schema whose
    fields all have defaults would take it for {}) are refused with 400."""

    def parse_body(self, request):
        try:
            body = json.loads(request.body, parse_constant=_refuse_constant, parse_float=_finite)
        except UnreadableBody:
            raise
        except json.JSONDecodeError as exc:  # its text names the place in the body, nothing else
            raise UnreadableBody(str(exc)) from None
        except UnicodeDecodeError:
            raise UnreadableBody("it is not UTF-8 text") from None
        except ValueError:  # Python's limit on the digits of an integer
            raise UnreadableBody("a number in it has too many digits") from None
        except RecursionError:
            raise UnreadableBody("it is nested too deeply") from None
        if not isinstance(body, dict):
            raise UnreadableBody("it must be a JSON object ({...})")
        return body


class StrictJSONRenderer(JSONRenderer):
    """Never writes NaN/Infinity: a non-finite value reaching a response fails loudly (ValueError, logged) instead
    of sending invalid JSON."""

    json_dumps_params = {"allow_nan": False}
