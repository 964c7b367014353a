"""Hostile input on every REST route: bad types, non-finite and out-of-range numbers, oversized and deeply nested
bodies, NUL characters, other users' objects and callers without the role. Each must answer 4xx with a readable JSON
``detail`` (no traceback, no server path) and leave every row and stored file as it was.

The routes are read from the NinjaAPI itself: ``test_every_route_has_a_hostile_case`` fails for a route without a
hand-written case here, and the field cases are generated from each route's own parameter and body schemas, so a new
field is attacked as soon as it exists (``test_every_request_field_is_bounded`` says which bound it lacks)."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional

import pytest

from conftest import make_user

pytestmark = pytest.mark.django_db

DEEP = 50_000  # nesting of the "deeply nested" bodies: far beyond Python's recursion limit
TOO_LARGE = "a body one byte over DATA_UPLOAD_MAX_MEMORY_SIZE"  # made when sent: 21 MiB per route


@dataclass(frozen=True)
class Case:
    route: str  # "METHOD /path" exactly as the API registers it, e.g. "PATCH /vectors/{vector_id}"
    what: str
    status: int | tuple  # the answer; a tuple: any of these
    user: Optional[str] = "admin"  # who sends it: a key of world.clients; None: not logged in
    path: dict = field(default_factory=dict)  # path parameters instead of world.ids (a value, or a world.ids key)
    query: str = ""
    body: Any = None  # dict/list: sent as JSON; str/bytes: sent as they are (JSON content type)
    form: Optional[dict] = None  # multipart fields; file objects are made from bytes values
    loc: Optional[tuple] = None  # a 422 must name this parameter (a prefix of an error's loc)

    @property
    def id(self) -> str:
        return f"{self.route} | {self.what}"


def _routes() -> dict[str, Any]:
    """Every route of the API: "METHOD /path" → its ninja Operation."""
    from webapp.api import api

    routes = {}
    for prefix, router in api._routers:
        for path, path_view in router.path_operations.items():
            for operation in path_view.operations:
                for method in operation.methods:
                    routes[f"{method} {(prefix.rstrip('/') + path) or '/'}"] = operation
    return routes


ROUTES = _routes()
NO_INPUT = {
    # routes with nothing to attack but the caller, which the generated "not logged in" case does
    "GET /auth/csrf": "no login needed and no input: answers every caller the same cookie",
    "POST /auth/logout": "no input",
    "GET /me": "no input",
    "GET /tokens": "no input; lists only the caller's own tokens",
}
VALID = {
    # a body or form the route accepts, for the generated cases that attack its path: the id must be what is refused
    "POST /datasets/{dataset_id}/samples/generate": {"count": 1},
    "POST /datasets/{dataset_id}/samples/upload": {"file": b"x"},
    "POST /datasets/{dataset_id}/rank": {},
    "POST /samples/{sample_id}/embed": {},
    "POST /samples/{sample_id}/tune": {},
    "PUT /samples/{sample_id}/annotation": {"base_version": 0, "mask_png": "AAAA"},
    "POST /samples/{sample_id}/annotation/submit": {"base_version": 0},
    "POST /samples/{sample_id}/annotation/review": {"base_version": 0, "decision": "reviewed"},
    "POST /samples/{sample_id}/annotation/restore": {"base_version": 0, "version": 1},
    "PATCH /vectors/{vector_id}": {"name": "x"},
}

# Hand-written cases: at least one per route (test_every_route_has_a_hostile_case). "other" ids belong to the artist;
# artist2 is the other user who must not reach them.
HOSTILE = [
    Case("POST /auth/login", "username too long", 422, user=None, body={"username": "x" * 151, "password": "p"},
         loc=("body", "payload", "username")),
    Case("POST /auth/login", "NUL in the password", 422, user=None, body={"username": "boss", "password": "a\x00"},
         loc=("body", "payload", "password")),
    Case("POST /tokens", "name too long", 422, body={"name": "t" * 101}, loc=("body", "payload", "name")),
    Case("DELETE /tokens/{token_id}", "another user's token", 404, user="artist2",
         path={"token_id": "admin_token"}),
    Case("GET /schemas", "caller without a role", 403, user="nobody"),
    Case("POST /schemas", "annotator creates a schema", 403, user="annotator",
         body={"name": "s", "classes": [{"name": "a", "colour": "#000000"}] * 2}),
    Case("POST /schemas", "class name longer than the column", 422,
         body={"name": "s", "classes": [{"name": "a" * 61, "colour": "#000000"}, {"name": "b", "colour": "#000001"}]},
         loc=("body", "payload", "classes", 0, "name")),
    Case("POST /schemas", "256 classes", 422,
         body={"name": "s", "classes": [{"name": f"c{i}", "colour": "#000000"} for i in range(256)]},
         loc=("body", "payload", "classes")),
    Case("GET /schemas/{schema_id}", "no such schema", 404, path={"schema_id": 10 ** 6}),
    Case("GET /datasets", "caller without a role", 403, user="nobody"),
    Case("POST /datasets", "generator id beyond a 64-bit integer", 422,
         body={"name": "d", "schema_id": "schema_id", "generator_id": 2 ** 63}, loc=("body", "payload", "generator_id")),
    Case("GET /datasets/{dataset_id}", "caller without a role", 403, user="nobody"),
    Case("DELETE /datasets/{dataset_id}", "annotator deletes a dataset", 403, user="annotator"),
    Case("GET /datasets/{dataset_id}/samples", "offset beyond a 64-bit integer", 422,
         query="offset=100000000000000000000", loc=("query", "offset")),
    Case("GET /datasets/{dataset_id}/samples", "offset in exponent notation", 422, query="offset=1e20",
         loc=("query", "offset")),
    Case("GET /datasets/{dataset_id}/samples", "negative limit", 422, query="limit=-5", loc=("query", "limit")),
    Case("GET /datasets/{dataset_id}/next-to-label", "limit 0", 422, query="limit=0", loc=("query", "limit")),
    Case("GET /datasets/{dataset_id}/presence", "no such dataset", 404, path={"dataset_id": 10 ** 6}),
    Case("POST /datasets/{dataset_id}/samples/generate", "NaN truncation", 400, body='{"count": 1, "truncation_psi": NaN}'),
    Case("POST /datasets/{dataset_id}/samples/generate", "count 10^9", 422, body={"count": 10 ** 9},
         loc=("body", "payload", "count")),
    Case("POST /datasets/{dataset_id}/samples/generate", "annotator generates", 403, user="annotator",
         body={"count": 1}),
    Case("POST /datasets/{dataset_id}/samples/upload", "not an image", 400, form={"file": b"\x00" * 64}),
    Case("POST /datasets/{dataset_id}/samples/upload", "no file", 422, form={}, loc=("file", "file")),
    Case("POST /datasets/{dataset_id}/rank", "segmentation id of a string", 422, body={"segmentation_id": "x"},
         loc=("body", "payload", "segmentation_id")),
    Case("GET /datasets/{dataset_id}/export.zip", "no such dataset", 404, path={"dataset_id": 2 ** 64}),
    Case("GET /samples/{sample_id}", "id with a NUL", 422, path={"sample_id": "1%00"}, loc=("path", "sample_id")),
    Case("DELETE /samples/{sample_id}", "artist deletes a sample", 403, user="artist"),
    Case("GET /samples/{sample_id}/image.png", "no such sample", 404, path={"sample_id": 10 ** 6}),
    Case("GET /samples/{sample_id}/segmentation.png", "segmentation id 0", 422, query="segmentation_id=0",
         loc=("query", "segmentation_id")),
    Case("GET /samples/{sample_id}/uncertainty.png", "segmentation id of a word", 422, query="segmentation_id=x",
         loc=("query", "segmentation_id")),
    Case("POST /samples/{sample_id}/embed", "steps Infinity", 400, body='{"steps": Infinity}'),
    Case("POST /samples/{sample_id}/embed", "steps 10^6", 422, body={"steps": 10 ** 6}, loc=("body", "payload", "steps")),
    Case("POST /samples/{sample_id}/tune", "steps 0", 422, body={"steps": 0}, loc=("body", "payload", "steps")),
    Case("POST /samples/{sample_id}/tune", "steps a string", 422, body={"steps": "many"},
         loc=("body", "payload", "steps")),
    Case("GET /samples/{sample_id}/annotation", "caller without a role", 403, user="nobody"),
    Case("PUT /samples/{sample_id}/annotation", "mask that is not base64", 400,
         user="annotator", body={"base_version": 0, "mask_png": "not base64!"}),
    Case("PUT /samples/{sample_id}/annotation", "mask that is not a PNG", 400, user="annotator",
         body={"base_version": 0, "mask_png": "AAAA"}),
    Case("PUT /samples/{sample_id}/annotation", "base version beyond 32 bits", 422, user="annotator",
         body={"base_version": 2 ** 31, "mask_png": "AAAA"}, loc=("body", "payload", "base_version")),
    Case("PUT /samples/{sample_id}/annotation", "artist paints", 403, user="artist",
         body={"base_version": 0, "mask_png": "AAAA"}),
    Case("GET /samples/{sample_id}/annotation/mask.png", "version -1", 422, query="version=-1",
         loc=("query", "version")),
    Case("GET /samples/{sample_id}/annotation/coco", "no such sample", 404, path={"sample_id": 10 ** 6}),
    Case("POST /samples/{sample_id}/annotation/submit", "stale version", 409, user="annotator",
         body={"base_version": 7}),
    Case("POST /samples/{sample_id}/annotation/restore", "version 0", 422, user="annotator",
         body={"base_version": 0, "version": 0}, loc=("body", "payload", "version")),
    Case("POST /samples/{sample_id}/annotation/restore", "artist restores", 403, user="artist",
         body={"base_version": 0, "version": 1}),
    Case("POST /samples/{sample_id}/annotation/review", "annotator reviews", 403, user="annotator",
         body={"base_version": 0, "decision": "reviewed"}),
    Case("POST /samples/{sample_id}/annotation/review", "unknown decision", 422,
         body={"base_version": 0, "decision": "maybe"}, loc=("body", "payload", "decision")),
    Case("GET /samples/{sample_id}/annotation/revisions", "no such sample", 404, path={"sample_id": 10 ** 6}),
    Case("POST /samples/{sample_id}/prelabel", "artist pre-labels", 403, user="artist"),
    Case("POST /samples/{sample_id}/segment", "no such sample", 404, path={"sample_id": 10 ** 6}),
    Case("GET /checkpoints", "NUL in the kind", 422, query="kind=a%00b", loc=("query", "kind")),
    Case("POST /checkpoints/upload", "not a checkpoint", 400,
         form={"file": b"GIF89a not really", "kind": "generator", "name": "junk"}),
    Case("POST /checkpoints/upload", "a segmentation branch from a pickle", 400,
         form={"file": b"\x80\x04 a pickle", "kind": "segmentation", "name": "x", "generator_id": "generator_id"}),
    Case("POST /checkpoints/upload", "a segmentation branch of no generator", 400,
         form={"file": b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "kind": "segmentation", "name": "x"}),
    Case("POST /checkpoints/upload", "NUL in the name", 422, form={"file": b"x", "kind": "generator", "name": "a\x00"},
         loc=("form", "name")),
    Case("POST /checkpoints/upload", "artist uploads", 403, user="artist",
         form={"file": b"x", "kind": "generator", "name": "junk"}),
    Case("POST /checkpoints/import", "path outside the import roots", 400,
         body={"kind": "generator", "name": "etc", "server_path": "/etc/passwd"}),
    Case("POST /checkpoints/import", "unknown kind", 422, body={"kind": "pickle", "name": "x", "server_path": "/x"},
         loc=("body", "payload", "kind")),
    Case("GET /checkpoints/{checkpoint_id}", "no such checkpoint", 404, path={"checkpoint_id": 10 ** 6}),
    Case("DELETE /checkpoints/{checkpoint_id}", "artist deletes a checkpoint", 403, user="artist"),
    Case("POST /checkpoints/{checkpoint_id}/activate", "artist activates", 403, user="artist"),
    Case("POST /train/segmentation", "hidden width 10^9", 422,
         body={"dataset_id": "dataset_id", "hidden": [1_000_000_000]}, loc=("body", "payload", "hidden", 0)),
    Case("POST /train/segmentation", "seven hidden layers", 422,
         body={"dataset_id": "dataset_id", "hidden": [8] * 7}, loc=("body", "payload", "hidden")),
    Case("POST /train/segmentation", "sample id beyond a 64-bit integer", 422,
         body={"dataset_id": "dataset_id", "sample_ids": [2 ** 64]}, loc=("body", "payload", "sample_ids", 0)),
    Case("POST /train/segmentation", "holdout fraction 1e400", 400,
         body='{"dataset_id": 1, "holdout_fraction": 1e400}'),
    Case("POST /train/encoder", "LPIPS weight Infinity", 400, body='{"generator_id": 1, "lpips_weight": Infinity}'),
    Case("POST /train/encoder", "LPIPS weight 10^6", 422, body={"generator_id": "generator_id", "lpips_weight": 1e6},
         loc=("body", "payload", "lpips_weight")),
    Case("POST /train/encoder", "batch 10^4", 422, body={"generator_id": "generator_id", "batch_size": 10 ** 4},
         loc=("body", "payload", "batch_size")),
    Case("POST /train/encoder", "annotator trains", 403, user="annotator", body={"generator_id": "generator_id"}),
    Case("POST /edits", "scale -Infinity", 400, user="artist",
         body='{"sample_id": 1, "mode": 1, "vectors": [{"vector_id": 1, "scale": -Infinity}]}'),
    Case("POST /edits", "33 vectors", 422, user="artist",
         body={"sample_id": "sample_id", "mode": 1, "vectors": [{"vector_id": "vector_id", "scale": 1}] * 33},
         loc=("body", "payload", "vectors")),
    Case("POST /edits", "class index 10^6", 422, user="artist",
         body={"sample_id": "sample_id", "mode": 3, "edited_classes": [10 ** 6]},
         loc=("body", "payload", "edited_classes", 0)),
    Case("POST /edits", "mode 4", 422, user="artist", body={"sample_id": "sample_id", "mode": 4},
         loc=("body", "payload", "mode")),
    Case("POST /edits", "annotator edits", 403, user="annotator", body={"sample_id": "sample_id", "mode": 1}),
    Case("GET /edits", "limit 10^6", 422, user="artist", query="limit=1000000", loc=("query", "limit")),
    Case("GET /edits/{edit_id}", "another user's edit", 404, user="artist2"),
    Case("GET /vectors", "NUL in the search text", 422, query="q=a%00b", loc=("query", "q")),
    Case("GET /vectors", "search text of 10^4 letters", 422, query="q=" + "a" * 10_000, loc=("query", "q")),
    Case("POST /vectors", "another user's edit", 404, user="artist2", body={"edit_id": "edit_id", "name": "mine"}),
    Case("POST /vectors", "scale range Infinity", 400, user="artist",
         body='{"edit_id": 1, "name": "v", "scale_max": Infinity}'),
    Case("POST /vectors", "33 tags", 422, user="artist",
         body={"edit_id": "edit_id", "name": "v", "tags": ["t"] * 33}, loc=("body", "payload", "tags")),
    Case("POST /vectors/upload", "not a vector file", 400, user="artist",
         form={"file": b"garbage", "generator_id": "generator_id"}),
    Case("POST /vectors/upload", "generator id of a word", 422, user="artist",
         form={"file": b"garbage", "generator_id": "x"}, loc=("form", "generator_id")),
    Case("GET /vectors/{vector_id}", "caller without a role", 403, user="nobody"),
    Case("PATCH /vectors/{vector_id}", "scale range Infinity", 400, user="artist", body='{"scale_max": Infinity}'),
    Case("PATCH /vectors/{vector_id}", "scale range NaN", 400, user="artist", body='{"scale_min": NaN}'),
    Case("PATCH /vectors/{vector_id}", "scale range 10^300", 422, user="artist", body={"scale_max": 1e300},
         loc=("body", "payload", "scale_max")),
    Case("PATCH /vectors/{vector_id}", "inverted scale range", 400, user="artist",
         body={"scale_min": 3, "scale_max": -3}),
    Case("PATCH /vectors/{vector_id}", "another artist's vector", 403, user="artist2", body={"name": "mine"}),
    Case("DELETE /vectors/{vector_id}", "another artist's vector", 403, user="artist2"),
    Case("GET /vectors/{vector_id}/file", "no such vector", 404, path={"vector_id": 10 ** 6}),
    Case("GET /compositions", "generator id -1", 422, query="generator_id=-1", loc=("query", "generator_id")),
    Case("POST /compositions", "no items", 422, user="artist",
         body={"name": "c", "generator_id": "generator_id", "items": []}, loc=("body", "payload", "items")),
    Case("POST /compositions", "scale 1e308 * 10", 400, user="artist",
         body='{"name": "c", "generator_id": 1, "items": [{"vector_id": 1, "scale": 1e309}]}'),
    Case("GET /compositions/{composition_id}", "no such composition", 404, path={"composition_id": 10 ** 6}),
    Case("DELETE /compositions/{composition_id}", "another artist's composition", 403, user="artist2"),
    Case("GET /jobs", "NUL in the status", 422, query="status=a%00b", loc=("query", "status")),
    Case("GET /jobs/{job_id}", "another user's job", 404, user="artist2"),
    Case("POST /jobs/{job_id}/cancel", "another user's job", 404, user="artist2"),
    Case("POST /jobs/{job_id}/retry", "another user's job", 404, user="artist2"),
]


# ---- cases generated from the routes and their schemas -------------------------------------------------------------

def _param_models(operation, source: str) -> list:
    return [m for m in operation.models if m.__ninja_param_source__ == source]


def _resolve(schema: dict, defs: dict) -> dict:
    """``schema`` with $ref followed and Optional's anyOf-null taken away."""
    while True:
        if "$ref" in schema:
            schema = {**defs[schema["$ref"].split("/")[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
        elif "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s.get("type") != "null"]
            if len(options) != 1:
                return schema
            schema = {**options[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
        else:
            return schema


def _leaves(schema: dict, defs: dict, loc: tuple):
    """(loc, schema) of every scalar and array in ``schema``, descending into objects and arrays of objects."""
    schema = _resolve(schema, defs)
    if schema.get("type") == "object" and "properties" in schema:
        for name, sub in schema["properties"].items():
            yield from _leaves(sub, defs, loc + (name,))
        return
    yield loc, schema
    items = _resolve(schema.get("items", {}), defs)
    if schema.get("type") == "array" and items.get("type") in ("object", "array", "string", "integer", "number"):
        yield from _leaves(items, defs, loc + (0,))


def request_fields():
    """(route, source, loc, schema) for every field a request can set: query, form and JSON body (path ids are
    looked up, never stored: a number that matches no row is a 404, see the generated path cases)."""
    for route, operation in ROUTES.items():
        for source in ("query", "form", "body"):
            for model in _param_models(operation, source):
                schema = model.model_json_schema()
                defs = schema.get("$defs", {})
                for name, sub in schema.get("properties", {}).items():
                    prefix = (source, name) if source == "body" else (source,)
                    for loc, leaf in _leaves(sub, defs, (name,) if source != "body" else ()):
                        yield route, source, prefix + loc, leaf


def _example(schema: dict) -> Any:
    """A value of the right type for ``schema`` (used to fill arrays that are too long)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        return schema.get("minimum", 0)
    if kind == "string":
        return "#000000" if schema.get("pattern") else "a" * max(schema.get("minLength", 1), 1)
    if kind == "boolean":
        return True
    return {}


def _bad_values(schema: dict) -> list[tuple[str, Any]]:
    """(what, value) that ``schema`` must refuse."""
    kind, bad = schema.get("type"), []
    if kind == "string" and "enum" not in schema:
        bad.append(("NUL character", "a\x00b"))
        if "maxLength" in schema:
            bad.append((f"{schema['maxLength'] + 1} characters", "a" * (schema["maxLength"] + 1)))
    if kind in ("integer", "number"):
        bad.append(("a word for a number", "many"))
        if "maximum" in schema:
            bad.append(("above its maximum", schema["maximum"] + 1))
        if "minimum" in schema:
            bad.append(("below its minimum", schema["minimum"] - 1))
        if "exclusiveMinimum" in schema:
            bad.append(("at its exclusive minimum", schema["exclusiveMinimum"]))
    if kind == "integer":
        bad.append(("a fraction", 1.5))
    if kind == "array":
        bad.append(("an object for a list", {"a": 1}))
        if "maxItems" in schema:
            bad.append((f"{schema['maxItems'] + 1} items", [_example(schema.get("items", {}))] * (schema["maxItems"] + 1)))
    return bad


def _nested(loc: tuple, value: Any) -> Any:
    """A JSON body that sets the field at ``loc`` (("classes", 0, "name") → {"classes": [{"name": value}]})."""
    for key in reversed(loc):
        value = [value] if isinstance(key, int) else {key: value}
    return value


def field_cases() -> list[Case]:
    cases = []
    for route, source, loc, schema in request_fields():
        for what, value in _bad_values(schema):
            label = f"{'.'.join(map(str, loc[1:] if source != 'body' else loc[2:]))}: {what}"
            if source == "body":
                cases.append(Case(route, label, 422, body=_nested(loc[2:], value), loc=loc))
            elif isinstance(value, (dict, list)):
                continue  # a query string or form field is always text
            elif source == "query":
                cases.append(Case(route, label, 422, query=f"{loc[1]}={_quote(value)}", loc=loc))
            else:
                cases.append(Case(route, label, 422, form={loc[1]: str(value)}, loc=loc))
    return cases


def _quote(value: Any) -> str:
    from urllib.parse import quote

    return quote(str(value))


def generated_cases() -> list[Case]:
    """What every route gets: no login, path ids that are not numbers or match nothing, and for a JSON body:
    deep nesting, NaN/Infinity literals, a list for an object, broken JSON and one too large to read."""
    cases = []
    for route, operation in ROUTES.items():
        if operation.auth_callbacks:
            cases.append(Case(route, "not logged in", 401, user=None))
        for name in re.findall(r"{(\w+)}", route):
            valid = ({"form": VALID.get(route)} if _param_models(operation, "file") else
                     {"body": VALID.get(route)} if _param_models(operation, "body") else {})
            cases.append(Case(route, f"{name} of a word", 422, path={name: "abc"}, loc=("path", name), **valid))
            cases.append(Case(route, f"{name} beyond a 64-bit integer", 404,
                              path={name: 2 ** 64}, **valid))
        if _param_models(operation, "body"):
            cases += [
                Case(route, f"{DEEP}-deep array", 400, body="[" * DEEP + "]" * DEEP),
                Case(route, f"{DEEP}-deep object", 400, body='{"a": ' * DEEP + "1" + "}" * DEEP),
                Case(route, "NaN literal", 400, body='{"a": NaN}'),
                Case(route, "-Infinity literal", 400, body='[-Infinity]'),
                Case(route, "a list for the object", 400, body=[1, 2]),
                Case(route, "a number for the object", 400, body="5"),
                Case(route, "broken JSON", 400, body='{"a": '),
                Case(route, "not UTF-8", 400, body=b'{"a": "\xff"}'),
                Case(route, "larger than the request limit", 413, body=TOO_LARGE),
            ]
    return cases


ALL_CASES = HOSTILE + generated_cases() + field_cases()


# ---- the tests -----------------------------------------------------------------------------------------------------

def test_every_route_has_a_hostile_case():
    """A new route needs a hand-written case in HOSTILE (or a reason in NO_INPUT)."""
    covered = {_case(case).route for case in HOSTILE} | set(NO_INPUT)
    assert not set(ROUTES) - covered, f"routes without a hostile case: {sorted(set(ROUTES) - covered)}"
    assert not covered - set(ROUTES), f"cases for routes that do not exist: {sorted(covered - set(ROUTES))}"
    with_input = {route for route, operation in ROUTES.items() if "{" in route and (
        _param_models(operation, "body") or _param_models(operation, "file"))}
    assert with_input == set(VALID), f"VALID needs a body for {sorted(with_input - set(VALID))}"


def test_every_request_field_is_bounded():
    """Every string a request sets has a maximum length, every number both bounds, every list a maximum size."""
    unbounded = []
    for route, source, loc, schema in request_fields():
        kind = schema.get("type")
        if kind == "string" and not ("maxLength" in schema or "enum" in schema or "pattern" in schema):
            unbounded.append((route, loc, "maxLength"))
        if kind in ("integer", "number") and "enum" not in schema and not (
                ("minimum" in schema or "exclusiveMinimum" in schema) and "maximum" in schema):
            unbounded.append((route, loc, "minimum and maximum"))
        if kind == "array" and "maxItems" not in schema:
            unbounded.append((route, loc, "maxItems"))
        if kind not in ("string", "integer", "number", "array", "boolean") and "enum" not in schema:
            unbounded.append((route, loc, f"a known type, not {schema}"))
    assert not unbounded, "\n".join(f"{route} {'.'.join(map(str, loc))}: no {what}" for route, loc, what in unbounded)


def _schema_classes() -> list:
    import importlib

    from ninja import Schema

    found = []
    for app in ("accounts", "datasets", "editing", "jobs", "registry"):
        module = importlib.import_module(f"webapp.{app}.schemas")
        found += [c for c in vars(module).values()
                  if isinstance(c, type) and issubclass(c, Schema) and c.__module__ == module.__name__]
    return found


def test_every_schema_float_is_finite():
    """Every float of every schema, in requests and responses, refuses ±Infinity and NaN (the shared FiniteFloat)."""
    import pydantic

    checked = []
    for schema in _schema_classes():
        json_schema = schema.model_json_schema()
        properties, defs = json_schema["properties"], json_schema.get("$defs", {})
        for name in properties:
            if _resolve(properties[name], defs).get("type") != "number":
                continue
            for value in (math.inf, -math.inf, math.nan):
                with pytest.raises(pydantic.ValidationError) as refused:
                    schema.model_validate({name: value})
                assert any(e["loc"] == (name,) and e["type"] == "finite_number" for e in refused.value.errors()), \
                    f"{schema.__name__}.{name} accepts {value}"
            checked.append(f"{schema.__name__}.{name}")
    assert {"VectorOut.scale_max", "TrainEncoderIn.lpips_weight", "JobOut.progress"} <= set(checked)


def test_renderer_never_writes_nan():
    """A non-finite value that reaches a response fails loudly instead of being sent as invalid JSON."""
    from webapp.api import api

    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="JSON"):
            api.renderer.render(None, {"scale": value}, response_status=200)


def test_stored_infinity_is_not_sent(shared_studio, client_for):
    """A row holding a non-finite float (written before these checks existed) makes a clear error, never bare
    ``Infinity`` in the response."""
    import pydantic

    from webapp.editing.models import EditVector

    EditVector.objects.filter(pk=shared_studio.vector.pk).update(scale_max=math.inf)
    with pytest.raises(pydantic.ValidationError, match="finite"):
        client_for(shared_studio.users.artist).get("/api/vectors")


@pytest.fixture(scope="module")
def _module_world(_module_studio, django_db_blocker):
    with django_db_blocker.unblock():
        return build_world(_module_studio)


@pytest.fixture
def world(_module_world, shared_studio):
    """shared_studio, a second artist, and objects of the artist that another user must not reach (built once per
    module like shared_studio; each test's changes are rolled back)."""
    return _module_world


def build_world(shared_studio) -> SimpleNamespace:
    from webapp.accounts.models import ApiToken
    from webapp.editing.models import Composition, CompositionItem, EditSession
    from webapp.jobs.models import Job

    users = shared_studio.users
    artist = users.artist
    job = Job.objects.create(kind=Job.Kind.SAMPLE, queue="interactive", status=Job.Status.FAILED, requested_by=artist,
                             params={"dataset_id": shared_studio.dataset.pk, "count": 1})
    edit = EditSession.objects.create(sample=shared_studio.samples[0], generator=shared_studio.generator,
                                      segmentation=shared_studio.segmentation, mode=1, user=artist)
    composition = Composition.objects.create(name="look", generator=shared_studio.generator, author=artist)
    CompositionItem.objects.create(composition=composition, vector=shared_studio.vector, scale=1.0)
    token, _ = ApiToken.issue(users.admin, "admin's")
    ids = {"token_id": token.pk, "admin_token": token.pk, "schema_id": shared_studio.schema.pk,
           "dataset_id": shared_studio.dataset.pk, "sample_id": shared_studio.samples[2].pk,
           "checkpoint_id": shared_studio.segmentation.pk, "generator_id": shared_studio.generator.pk,
           "edit_id": edit.pk, "vector_id": shared_studio.vector.pk, "composition_id": composition.pk,
           "job_id": job.pk}
    named = {"admin": users.admin, "artist": artist, "annotator": users.annotator, "nobody": users.nobody,
             "artist2": make_user("art2", "artist"), None: None}
    return SimpleNamespace(ids=ids, clients={key: _client(user) for key, user in named.items()})


def _client(user):
    """A test client logged in as ``user`` (its session is committed with the module's data)."""
    from django.test import Client

    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _counts() -> dict[str, int]:
    """Rows of every studio and auth table, in one query."""
    from django.apps import apps
    from django.db import connection

    models = [model for model in apps.get_models()
              if model._meta.app_label in ("accounts", "datasets", "editing", "jobs", "registry", "auth")]
    counts = ", ".join(f"(SELECT COUNT(*) FROM {connection.ops.quote_name(m._meta.db_table)})" for m in models)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {counts}")
        return dict(zip((m._meta.label for m in models), cursor.fetchone()))


def _files() -> set[str]:
    from webapp.storage import stored_names

    return set(stored_names())


def _with_ids(value: Any, ids: dict) -> Any:
    """``value`` with world.ids keys standing for ids replaced by the ids (only where a body field ends in _id)."""
    if isinstance(value, dict):
        return {k: ids.get(v, v) if k.endswith("_id") and isinstance(v, str) else _with_ids(v, ids)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_with_ids(v, ids) for v in value]
    return value


def _send(client, case: Case, ids: dict):
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile

    method, path = case.route.split(" ", 1)
    for name in re.findall(r"{(\w+)}", path):
        value = case.path.get(name, name)
        path = path.replace(f"{{{name}}}", str(ids.get(value, value)))
    url = f"/api{path}" + (f"?{case.query}" if case.query else "")
    send = getattr(client, method.lower())
    if case.form is not None:
        data = {k: SimpleUploadedFile("upload.bin", v) if isinstance(v, bytes) else ids.get(v, v)
                for k, v in case.form.items()}
        return send(url, data)
    if case.body is None:
        return send(url)
    if case.body is TOO_LARGE:
        body = b'"' + b"a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE - 1) + b'"'
    else:
        body = case.body if isinstance(case.body, (str, bytes)) else json.dumps(_with_ids(case.body, ids))
    return send(url, body, content_type="application/json")


def _readable(response) -> str:
    """The answer's ``detail`` as text; fails unless it is JSON that says what was wrong and nothing of the server."""
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    detail = response.json()["detail"]
    if isinstance(detail, list):  # a 422: one entry per refused parameter
        assert all(isinstance(e["msg"], str) and e["msg"] and isinstance(e["loc"], list) for e in detail), detail
        text = " ".join(e["msg"] for e in detail)
    else:
        text = detail
    assert isinstance(text, str) and text.strip(), detail
    for leak in ("Traceback", 'File "', "site-packages", " object at 0x", "studio-import-"):
        assert leak not in text, text
    assert not re.search(r"/tmp[\w]{8}/", text), text  # a private temporary folder's name (tempfile.mkdtemp)
    return text


def _case(param) -> Case:
    return param.values[0] if hasattr(param, "values") else param


@pytest.mark.parametrize("case", [pytest.param(_case(c), marks=getattr(c, "marks", ()), id=_case(c).id)
                                  for c in ALL_CASES])
def test_hostile_request(world, case):
    assert case.route in ROUTES
    client = world.clients[case.user]
    rows, files = _counts(), _files()

    response = _send(client, case, world.ids)

    assert response.status_code in (case.status if isinstance(case.status, tuple) else (case.status,)), \
        (response.status_code, response.content[:500])
    _readable(response)
    if case.loc is not None:
        locs = [tuple(e["loc"]) for e in response.json()["detail"]]
        assert any(loc[:len(case.loc)] == case.loc for loc in locs), locs
    assert _counts() == rows
    assert _files() == files
