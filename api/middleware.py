"""Pure ASGI middleware: request ids, access logs, and the request body size limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("saas_llm.access")
JSONL_TYPES = (b"application/x-ndjson", b"application/jsonl", b"application/x-jsonlines")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _TooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing lets it through to the 413 handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


def _error(status: int, type_: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"error": {"type": type_, "message": message, "request_id": request_id}}
    ).encode()


class RequestContextMiddleware:
    """Gives each request an id (or keeps a safe `X-Request-ID`), logs it, caps the body size."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, max_jsonl_bytes: int | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # JSONL job submissions (read line by line, never held whole) may be larger.
        self.max_jsonl_bytes = max_jsonl_bytes or max_body_bytes

    def _limit(self, scope: Scope, headers: dict[bytes, bytes]) -> int:
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if (
            scope.get("method") == "POST"
            and scope.get("path") == "/api/jobs"
            and content_type in JSONL_TYPES
        ):
            return self.max_jsonl_bytes
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SAFE_ID.match(given) else "req_" + uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        limit = self._limit(scope, headers)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send_with_id, request_id, limit)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send_with_id(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await self._reject(send_with_id, request_id, limit)
        finally:
            state = scope.get("state", {})
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status_holder["status"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "team_id": state.get("team_id"),
                },
            )

    async def _reject(self, send: Send, request_id: str, limit: int) -> None:
        body = _error(
            413,
            "payload_too_large",
            f"request body is larger than {limit} bytes",
            request_id,
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
