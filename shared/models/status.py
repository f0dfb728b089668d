"""The platform's vocabulary of states, one definition each.

StrEnum members compare equal to their strings, so rows, JSON and SQL read them as plain text.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """open -> queued -> running (<-> paused) -> succeeded | failed | cancelled | expired."""

    OPEN = "open"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in JOB_TERMINAL


class CallStatus(StrEnum):
    """queued -> running -> succeeded | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in CALL_TERMINAL


class JobStyle(StrEnum):
    BATCH = "batch"  # all calls submitted at once
    STEP = "step"  # calls added one at a time to an open job


class Priority(StrEnum):
    """A job's priority among its own team's queued calls (never across teams: see
    `shared.jobs.fairness`). Calls store its rank, which sorts: 0 high, 1 normal, 2 low."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return PRIORITY_RANK[self]


PRIORITY_RANK: dict[str, int] = {"high": 0, "normal": 1, "low": 2}


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TeamStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


JOB_TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)
# A job that may still change: open, queued, running or paused.
JOB_LIVE: frozenset[JobStatus] = frozenset(set(JobStatus) - JOB_TERMINAL)
# A closed job that is not finished: its calls decide when it ends.
JOB_CLOSED_ACTIVE: frozenset[JobStatus] = frozenset(
    {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED}
)
CALL_TERMINAL: frozenset[CallStatus] = frozenset(
    {CallStatus.SUCCEEDED, CallStatus.FAILED, CallStatus.CANCELLED}
)
CALL_ACTIVE: frozenset[CallStatus] = frozenset({CallStatus.QUEUED, CallStatus.RUNNING})
