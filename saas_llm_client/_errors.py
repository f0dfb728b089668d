"""Errors raised by the client.

SaaSLLMError
├── APIError            an error answer (.status, .type, .message, .request_id)
│   ├── AuthenticationError   401
│   ├── NotFoundError         404
│   ├── ConflictError         409
│   └── RateLimitError        429
├── APIConnectionError  the API could not be reached (transport error)
└── WaitTimeout         wait() gave up before the job ended
"""

from __future__ import annotations

from typing import Any

import httpx


class SaaSLLMError(Exception):
    """Base of every error this client raises."""


class APIError(SaaSLLMError):
    """An error answer from the API, with the API's error type."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message
        self.request_id = request_id
        self.body = body


class AuthenticationError(APIError):
    pass


class NotFoundError(APIError):
    pass


class ConflictError(APIError):
    pass


class RateLimitError(APIError):
    pass


class PaymentRequiredError(APIError):
    """402: not enough credits (`insufficient_credits`) or budget (`budget_exceeded`); the
    balance or remaining budget is in `body["error"]`. Retrying will not help until an admin
    grants credits or raises the budget (or the budget period turns)."""


class APIConnectionError(SaaSLLMError):
    """The API could not be reached."""


class WaitTimeout(SaaSLLMError):
    """The job did not end within the wait's timeout."""

    def __init__(self, job_id: str, status: str, timeout: float) -> None:
        super().__init__(f"job {job_id} still {status} after {timeout}s")
        self.job_id = job_id
        self.status = status
        self.timeout = timeout


_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    402: PaymentRequiredError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
}


def raise_for_response(response: httpx.Response) -> None:
    """Raise the APIError matching an error answer; do nothing on success."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        type_ = str(error.get("type") or "error")
        message = str(error.get("message") or response.reason_phrase)
        request_id = error.get("request_id")
    else:
        type_, request_id = "http_error", None
        message = response.text[:500] or response.reason_phrase
    request_id = request_id or response.headers.get("x-request-id")
    cls = _BY_STATUS.get(response.status_code, APIError)
    raise cls(response.status_code, type_, message, request_id, body)
