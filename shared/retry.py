"""The one set of retry rules for outbound HTTP: what is transient, and how long to wait."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})


def is_transient_status(status: int) -> bool:
    """408/409/425/429 and every 5xx are worth retrying; other 4xx are final."""
    return status in TRANSIENT_STATUSES or status >= 500


def is_transient_error(exc: BaseException) -> bool:
    """Transport errors (connect, read, timeouts, broken connections) are transient."""
    return isinstance(exc, httpx.TransportError)


def parse_retry_after(value: str | None, *, cap: float = 3600.0) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), cap)


def backoff(attempt: int, *, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter for `attempt` (1-based), never below `Retry-After`."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
