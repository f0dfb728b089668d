"""Budget periods: UTC calendar days, ISO weeks (Monday 00:00) and months; and the clock.

Money code reads the time through `clock()` so that tests can move it across a boundary."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def clock() -> datetime:
    """Now, in UTC (injectable with `set_clock` for tests)."""
    return _now()


def set_clock(now: Callable[[], datetime] | None) -> None:
    """Replace the clock (None: the real one)."""
    global _now
    _now = now or (lambda: datetime.now(UTC))


def period_start(now: datetime, period: str) -> datetime:
    """The start of the UTC calendar period that contains `now`."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r}")


def next_period_start(now: datetime, period: str) -> datetime:
    start = period_start(now, period)
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)
