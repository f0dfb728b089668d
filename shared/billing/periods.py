"""Budget periods: UTC calendar days, ISO weeks (Monday 00:00) and months; and the clock.

Money code reads the time through `clock()` so that tests can move it across a boundary: in
one process with `set_clock`, and across processes (API and workers agreeing on "now") with
`BILLING_CLOCK_FILE`, a file holding an offset in seconds added to the real time. That setting
is for tests only: a production start refuses it (`Settings.production_problems`), and
`install_clock` ignores it outside development."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from shared.config import Settings

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731
_injected = False


def clock() -> datetime:
    """Now, in UTC (injectable with `set_clock` for tests)."""
    return _now()


def injected() -> bool:
    """Whether a test clock replaces the real one (then rows that periods are computed from,
    such as a job's `created_at`, take their time from `clock()` too)."""
    return _injected


def created_stamp() -> dict[str, datetime]:
    """`created_at` for a new row whose time places it in a period (a job: its usage day): the
    test clock's when one is injected, else nothing (the database's `now()`)."""
    return {"created_at": clock()} if _injected else {}


def set_clock(now: Callable[[], datetime] | None) -> None:
    """Replace the clock (None: the real one)."""
    global _now, _injected
    _now = now or (lambda: datetime.now(UTC))
    _injected = now is not None


class FileClock:
    """The real time plus the offset (seconds, a decimal number) written in a file, re-read
    whenever the file changes; a missing or empty file means no offset."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._offset = timedelta(0)

    def __call__(self) -> datetime:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                with open(self.path) as f:
                    text = f.read().strip()
                self._offset = timedelta(seconds=float(text or 0))
                self._stamp = stamp
        except FileNotFoundError:
            self._stamp, self._offset = None, timedelta(0)
        return datetime.now(UTC) + self._offset


def install_clock(settings: Settings) -> None:
    """Use `BILLING_CLOCK_FILE`'s clock in this process (development and tests only)."""
    if settings.billing_clock_file and settings.is_development:
        set_clock(FileClock(settings.billing_clock_file))


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
