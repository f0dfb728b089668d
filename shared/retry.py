"""The one set of retry rules: what is transient, how long to wait, and how to retry a step.

`backoff` is the delay formula for everything that is tried again later (calls, queue retries,
background loops); `retrying` retries a step in-process (tenacity) with the same shape.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

log = logging.getLogger("saas_llm.retry")

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


def retrying(
    should_retry: Callable[[BaseException], bool],
    *,
    attempts: int,
    base: float = 0.5,
    cap: float = 4.0,
) -> AsyncRetrying:
    """In-process retries of a step through a short outage, with the same backoff shape:
    `async for attempt in retrying(...): with attempt: ...`; re-raises the last error."""
    return AsyncRetrying(
        retry=retry_if_exception(should_retry),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=base, max=cap, jitter=base),
        reraise=True,
    )


async def forever(step: Callable[[], Awaitable[None]], *, name: str, pause: float = 1.0) -> None:
    """Run a background loop (a listener, a consumer) and start it again whenever it ends or
    fails, after a pause that grows with consecutive quick failures (capped at `pause` x 8);
    only cancellation stops it."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() - started > HEALTHY_RUN_SECONDS:
                failures = 0  # it ran fine for a while: this is a new failure, not a streak
            failures += 1
            log.warning("%s failed; restarting", name, exc_info=failures == 1)
            await asyncio.sleep(backoff(failures, base=pause, cap=pause * 8))
        else:
            await asyncio.sleep(pause)  # it returned: never restart in a hot loop


HEALTHY_RUN_SECONDS = 30.0
