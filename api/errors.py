"""One place that turns every error into `{"error": {"type", "message", "request_id"}}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db import classify_db_error
from shared.errors import AppError
from shared.queue import PoolExhausted

log = logging.getLogger("saas_llm.api")

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    request: Request,
    status: int,
    type_: str,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "message": message,
        "request_id": getattr(request.state, "request_id", None),
    }
    if param:
        body["param"] = param
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(
        request,
        exc.status_code,
        exc.type,
        exc.message,
        param=exc.param,
        headers=exc.headers or None,
        **exc.extra,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(request, 400, "invalid_json", "the request body is not valid JSON")
    first = errors[0] if errors else {}
    where = _loc(tuple(first.get("loc", ())))
    message = f"{where}: {first.get('msg', 'invalid value')}" if where else first.get("msg", "")
    details = [
        {"param": _loc(tuple(e.get("loc", ()))), "message": e.get("msg")} for e in errors[:20]
    ]
    return error_response(
        request, 422, "validation_error", message, param=where or None, details=details
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(request, exc.status_code, type_, message, headers=headers)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("dependency unavailable: %s", type(exc).__name__)
    return error_response(
        request,
        503,
        "service_unavailable",
        "a backing service (database or queue) is unavailable; retry shortly",
        headers={"Retry-After": "2"},
    )


async def _pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    log.warning("Redis pool exhausted: %s", exc)
    return error_response(
        request,
        503,
        "service_unavailable",
        f"{exc}; retry shortly",
        headers={"Retry-After": "2"},
        setting="REDIS_MAX_CONNECTIONS",
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return error_response(request, 500, "internal_error", "internal error; it has been logged")


UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)


def install(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, _unavailable)
    app.add_exception_handler(PoolExhausted, _pool_exhausted)
    app.add_exception_handler(DBAPIError, _dbapi_error)
    app.add_exception_handler(PoolTimeout, _dbapi_error)
    app.add_exception_handler(Exception, _unhandled)


async def _dbapi_error(request: Request, exc: Exception) -> JSONResponse:
    """Database errors, classified once (`shared.db.classify_db_error`) for API and worker."""
    kind = classify_db_error(exc)
    if kind in ("outage", "transient"):
        # Unreachable, or a deadlock / serialization failure: nothing was written, and the same
        # request can be retried.
        return await _unavailable(request, exc)
    if kind == "data":
        return error_response(
            request, 400, "invalid_request_error", "a value in the request cannot be stored"
        )
    if kind == "integrity":
        log.warning("constraint refused a write: %s", type(exc).__name__)
        return error_response(
            request, 409, "conflict", "the request conflicts with the current state; retry"
        )
    return await _unhandled(request, exc)
