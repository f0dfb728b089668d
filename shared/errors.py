"""Domain errors, each with its HTTP status and a stable `type`.

AppError
├── BadRequest (400)            invalid_request_error
│   ├── ModelNotFound           model_not_found
│   └── LimitExceeded           limit_exceeded
├── Unauthorized (401)          authentication_error
├── Forbidden (403)             permission_error
│   ├── TeamSuspended           team_suspended
│   ├── ModelNotAllowed         model_not_allowed
│   └── InsufficientScope       insufficient_scope
├── NotFound (404)              not_found
├── Conflict (409)              conflict
│   └── IdempotencyConflict     idempotency_conflict
├── PayloadTooLarge (413)       payload_too_large
├── RateLimited (429)           rate_limit_exceeded
├── QuotaExceeded (429)         quota_exceeded (a bound on a shared resource)
├── InsufficientCredits (402)   insufficient_credits
├── BudgetExceeded (402)        budget_exceeded
└── ServiceUnavailable (503)    service_unavailable
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error the API turns into `{"error": {...}}`."""

    status_code = 400
    type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.extra = extra
        self.headers: dict[str, str] = {}


class BadRequest(AppError):
    status_code = 400
    type = "invalid_request_error"


class ModelNotFound(BadRequest):
    type = "model_not_found"


class LimitExceeded(BadRequest):
    type = "limit_exceeded"


class Unauthorized(AppError):
    status_code = 401
    type = "authentication_error"


class Forbidden(AppError):
    status_code = 403
    type = "permission_error"


class TeamSuspended(Forbidden):
    type = "team_suspended"


class ModelNotAllowed(Forbidden):
    type = "model_not_allowed"


class InsufficientScope(Forbidden):
    type = "insufficient_scope"


class NotFound(AppError):
    status_code = 404
    type = "not_found"


class Conflict(AppError):
    status_code = 409
    type = "conflict"


class IdempotencyConflict(Conflict):
    type = "idempotency_conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    type = "payload_too_large"


class InsufficientCredits(AppError):
    status_code = 402
    type = "insufficient_credits"


class BudgetExceeded(AppError):
    status_code = 402
    type = "budget_exceeded"


class RateLimited(AppError):
    status_code = 429
    type = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.headers["Retry-After"] = str(retry_after)


class QuotaExceeded(AppError):
    """A bound on a shared resource (open streams, endpoints) is reached; `setting` names it."""

    status_code = 429
    type = "quota_exceeded"

    def __init__(
        self, message: str, *, limit: int, setting: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message, limit=limit, setting=setting)
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)


class ServiceUnavailable(AppError):
    status_code = 503
    type = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 2, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.headers["Retry-After"] = str(retry_after)
