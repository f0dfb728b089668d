"""The API contract: each route's auth, scope, error statuses and content types, from one table.

`document(app)` walks the app's own route table once at startup. For every route it works out
who may call it (public, a team key, the admin key), the scope a team key needs, and each status
it can answer with the error envelope, and writes them into the route's OpenAPI `responses`.
A team route whose scope cannot be found refuses to start the app: a new route must say which
scope guards it (add it to `SCOPES` below), so it cannot be reachable by every restricted key by
accident.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field

Auth = Literal["public", "team", "admin", "metrics"]
SCOPE_KEY = "x-required-scope"


class ErrorDetail(BaseModel):
    """What went wrong; `type` is stable, `message` is for people."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Stable machine-readable code, e.g. `not_found`.")
    message: str
    request_id: str | None = Field(description="Also in the `X-Request-ID` header.")
    param: str | None = Field(default=None, description="The request field at fault, if any.")


class ErrorEnvelope(BaseModel):
    """Every error the API answers: `{"error": {"type", "message", "request_id", ...}}`."""

    error: ErrorDetail


ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}
STATUS_TEXT = {
    400: "Bad request: invalid JSON, or a value the API refuses (`error.param` names it).",
    401: "No API key, a malformed `Authorization` header, or an unknown, revoked or expired key.",
    402: "Not enough credits, or the team's budget is spent.",
    403: "The team is suspended, a model is not allowed, or the key lacks the route's scope.",
    404: "No such object for this team.",
    409: "The object's state does not allow this (or an Idempotency-Key conflict).",
    413: "The request body is too large.",
    422: "A field is missing or invalid (`error.details` lists them).",
    429: "A rate limit or a bound on a shared resource was reached; see `Retry-After`.",
    503: "A backing service (database, queue or model proxy) is unavailable; retry shortly.",
}
_WITH_RETRY_AFTER = {429, 503}

# Scopes of team routes, by path prefix; the first match wins. Reading needs `:read`, anything
# else `:write` where a resource has both.
SCOPES: tuple[tuple[str, str | None, str], ...] = (
    ("/api/webhooks", None, "webhooks"),
    ("/api/usage", None, "usage:read"),
    ("/api/credits", None, "usage:read"),
    ("/api/models", None, "jobs:read"),
    ("/api/jobs", "GET", "jobs:read"),
    ("/api/jobs", None, "jobs:write"),
)

# Statuses beyond the ones every route of its kind has (see `statuses`).
EXTRA: dict[str, tuple[int, ...]] = {
    "GET /api/models": (),
    "POST /api/jobs": (402, 409),
    "POST /api/jobs/{job_id}/calls": (402, 409),
    "POST /api/jobs/{job_id}/complete": (409,),
    "POST /api/jobs/{job_id}/cancel": (409,),
    "POST /api/webhooks/endpoints/{endpoint_id}/replay": (409,),
    "POST /api/webhooks/events/{event_id}/redeliver": (409,),
    "POST /api/admin/teams": (409,),
    "POST /api/admin/teams/{team_id}/credits": (409,),
    "POST /api/admin/jobs/{job_id}/refund": (409,),
}

_TEXT = {"schema": {"type": "string"}}
# One server-sent event of a job's stream: `event: job` with the job as JSON, or `event: error`
# with the error envelope (the team was suspended).
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["job", "error"]},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"anyOf": [{"$ref": "#/components/schemas/JobOut"}, ERROR_REF]},
        },
    },
}
# Success bodies that are not only JSON: `True` keeps the JSON one next to them.
CONTENT: dict[str, tuple[bool, dict[str, Any]]] = {
    # `Accept: application/x-ndjson` (or application/jsonl): one result per line.
    "GET /api/jobs/{job_id}/results": (True, {"application/x-ndjson": _TEXT}),
    "GET /api/jobs/{job_id}/events": (False, {"text/event-stream": {"itemSchema": SSE_EVENT}}),
    "GET /metrics": (False, {"text/plain": _TEXT}),
}
# Public routes' own answers that are not the error envelope.
OTHER: dict[str, dict[str, dict[str, Any]]] = {
    "GET /ready": {
        "503": {
            "description": "Not ready: the body says which dependency failed.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
}


@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    auth: Auth
    scope: str | None
    statuses: tuple[int, ...]


def route_key(method: str, path: str) -> str:
    return f"{method} {path}"


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def _auth(dependant: Dependant) -> Auth:
    from api.deps import get_read_team, get_team, require_admin
    from api.routes.health import metrics_auth

    calls = set(_calls(dependant))
    if require_admin in calls:
        return "admin"
    if get_team in calls or get_read_team in calls:
        return "team"
    if metrics_auth in calls:
        return "metrics"
    return "public"


def scope_of(method: str, path: str) -> str | None:
    """The scope a team key needs for `method path` (a route's path or a request's)."""
    for prefix, only_method, scope in SCOPES:
        if path.startswith(prefix) and only_method in (None, method):
            return scope
    return None


def _statuses(key: str, dependant: Dependant, has_body: bool, auth: Auth) -> tuple[int, ...]:
    """Every error status the route can answer."""
    if auth == "public":
        return ()
    if auth == "metrics":  # its own token (METRICS_TOKEN); 404 when metrics are off
        return (401, 404, 503)
    found = {400, 401, 429, 503}  # 400: also a value Postgres cannot store (e.g. a NUL byte)
    if auth == "team":
        found.add(403)
    if dependant.path_params:
        found.add(404)
    if dependant.path_params or dependant.query_params or has_body:
        found.add(422)
    if has_body:
        found.add(413)
    found.update(EXTRA.get(key, ()))
    return tuple(sorted(found))


def routes(app: FastAPI) -> list[RouteInfo]:
    """Every documented route of the app (its own route table), with auth, scope and statuses.

    Raises for a team route without a scope: the app must not start with one."""
    found = []
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute) or not context.include_in_schema:
            continue
        path = str(context.path_format)
        for method in sorted(context.methods or ()):
            auth = _auth(context.dependant)
            scope = scope_of(method, path) if auth == "team" else None
            key = route_key(method, path)
            if auth == "team" and scope is None:
                raise RuntimeError(f"team route {key} has no scope: add it to SCOPES in {__name__}")
            statuses = _statuses(key, context.dependant, context.body_field is not None, auth)
            found.append(RouteInfo(method, path, auth, scope, statuses))
    return found


def document(app: FastAPI) -> None:
    """Check the route table now (fail closed) and serve an OpenAPI document that has each
    route's error statuses, content types and scope."""
    table = routes(app)

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _schema(app, table)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def _error_response(status: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "description": STATUS_TEXT[status],
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if status in _WITH_RETRY_AFTER:
        entry["headers"] = RETRY_AFTER
    return entry


def _schema(app: FastAPI, table: list[RouteInfo]) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(envelope.pop("$defs", {}))
    components["ErrorEnvelope"] = envelope
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)  # FastAPI's 422 shape; ours is the envelope
    bearer = {"type": "http", "scheme": "bearer", "description": "A team key or the admin key."}
    schema["components"]["securitySchemes"] = {"bearer": bearer}
    for route in table:
        operation = schema["paths"][route.path][route.method.lower()]
        responses = operation.setdefault("responses", {})
        for status in route.statuses:
            responses[str(status)] = _error_response(status)
        key = route_key(route.method, route.path)
        ok = next((code for code in responses if code.startswith("2")), "200")
        if key in CONTENT:
            keep_json, content = CONTENT[key]
            current = responses[ok].get("content", {}) if keep_json else {}
            responses[ok]["content"] = {**current, **content}
        responses.update(OTHER.get(key, {}))
        if route.auth != "public":
            operation["security"] = [{"bearer": []}]
        if route.scope is not None:
            operation[SCOPE_KEY] = route.scope
            operation["description"] = (
                operation.get("description", "") + f"\n\nScope: `{route.scope}`."
            ).strip()
    return schema
