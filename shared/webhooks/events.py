"""Recording events inside the transaction that caused them (the outbox).

An event and its deliveries are rows written in the same transaction as the job's end, so a
process dying after the commit loses nothing: the worker's sweep finds due deliveries. The
transaction also sends a Postgres NOTIFY, which Postgres delivers only if it commits; workers
listening for it sweep at once, so delivery starts within milliseconds of the commit whichever
process (API, worker, reconciler) ended the job.

This module knows nothing of jobs: the jobs package calls `record_event` from its job-end
transition (`shared.jobs.lifecycle.end_job`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CTE, String, bindparam, column, func, select, table, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from shared.ids import new_id, sql_ulid_random
from shared.models import WebhookEvent

EVENT_TYPES = (
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.expired",
    "job.paused",
    "job.resumed",
    "budget.threshold_crossed",
    "credits.low",
)
NOTIFY_CHANNEL = "saas_llm_webhooks"

# The event, and one pending delivery per enabled endpoint whose filter lets the type through
# (and one to `extra_url`), each delivery sending the NOTIFY (Postgres sends one per
# transaction for the same channel and payload, and none if there is no delivery). Two
# data-modifying CTEs, `ev_event` and `ev_deliveries`, so that a statement of the caller (the
# end of a job) can carry them: no round trip of their own. Delivery ids are ULIDs of the
# event's millisecond minted in SQL, one per row (how many endpoints match is only known
# there). Foreign keys are checked at the end of the statement, so the deliveries may reference
# the event inserted beside them.
_EVENT = (
    "INSERT INTO webhook_events (id, team_id, type, job_id, payload, created_at)"
    " VALUES (:ev_id, :ev_team_id, :ev_type, :ev_job_id, :ev_payload, :ev_now) RETURNING id"
)
_DELIVERIES = f"""
INSERT INTO webhook_deliveries (id, team_id, event_id, endpoint_id, url, status, next_attempt_at)
SELECT 'whdl_' || :ev_ulid_time || {sql_ulid_random("m.bits")},
       :ev_team_id, ev_event.id, m.endpoint_id, m.url, 'pending', :ev_now
FROM (
    SELECT endpoint_id, url, ('x' || replace(gen_random_uuid()::text, '-', ''))::bit(128) AS bits
    FROM (
        SELECT id AS endpoint_id, url FROM webhook_endpoints
        WHERE team_id = :ev_team_id AND enabled
          AND (event_types = '[]'::jsonb
               OR event_types @> jsonb_build_array(CAST(:ev_type AS text)))
        UNION ALL
        SELECT NULL, CAST(:ev_extra_url AS varchar)
        WHERE CAST(:ev_extra_url AS varchar) IS NOT NULL
    ) targets
) m CROSS JOIN ev_event
RETURNING pg_notify(:ev_channel, '')
"""  # noqa: S608 - the only fragment put in is a constant of shared.ids


def event_ctes() -> list[CTE]:
    """The event's CTEs (`ev_event`, then `ev_deliveries`) for a statement of the caller's, run
    with `event_params`."""
    event = text(_EVENT).bindparams(bindparam("ev_payload", type_=JSONB))
    deliveries = text(_DELIVERIES)
    return [
        event.columns(column("id", String)).cte("ev_event"),
        deliveries.columns(column("pg_notify", String)).cte("ev_deliveries"),
    ]


_RECORD = select(func.count()).select_from(table("ev_deliveries")).add_cte(*event_ctes())


def event_params(
    team_id: str,
    type_: str,
    data: dict[str, Any],
    *,
    job_id: str | None = None,
    extra_url: str | None = None,
) -> tuple[WebhookEvent, dict[str, Any]]:
    """A new event (not attached to any session) and the parameters of `event_ctes` that
    store it."""
    now = datetime.now(UTC)
    event = WebhookEvent(
        id=new_id("msg"),
        team_id=team_id,
        type=type_,
        job_id=job_id,
        payload={"type": type_, "timestamp": now.isoformat(), "data": data},
        created_at=now,
    )
    params = {
        "ev_id": event.id,
        "ev_team_id": team_id,
        "ev_type": type_,
        "ev_job_id": job_id,
        "ev_payload": event.payload,
        "ev_now": now,
        "ev_extra_url": extra_url or None,
        "ev_ulid_time": event.id.removeprefix("msg_")[:10],  # the event's millisecond
        "ev_channel": NOTIFY_CHANNEL,
    }
    return event, params


async def record_event(
    session: AsyncSession,
    team_id: str,
    type_: str,
    data: dict[str, Any],
    *,
    job_id: str | None = None,
    extra_url: str | None = None,
) -> WebhookEvent:
    """Store an event and one pending delivery per matching endpoint (and `extra_url`), in one
    statement; the event returned is not attached to the session."""
    event, params = event_params(team_id, type_, data, job_id=job_id, extra_url=extra_url)
    await session.flush()  # rows this one may refer to (a team, a job) first
    await session.execute(_RECORD, params)
    return event
