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

from sqlalchemy import bindparam, text
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

# The event, one pending delivery per enabled endpoint whose filter lets the type through (and
# one to `extra_url`), and the NOTIFY if there is any delivery: one statement, one round trip.
# Delivery ids are ULIDs of the event's millisecond minted in SQL, one per row (how many
# endpoints match is only known there). Foreign keys are checked at the end of the statement,
# so the deliveries may reference the event inserted beside them.
_RECORD = text(
    f"""
WITH event AS (
    INSERT INTO webhook_events (id, team_id, type, job_id, payload, created_at)
    VALUES (:event_id, :team_id, :type, :job_id, :payload, :now)
    RETURNING id
), targets AS (
    SELECT id AS endpoint_id, url FROM webhook_endpoints
    WHERE team_id = :team_id AND enabled
      AND (event_types = '[]'::jsonb OR event_types @> jsonb_build_array(CAST(:type AS text)))
    UNION ALL
    SELECT NULL, CAST(:extra_url AS varchar) WHERE CAST(:extra_url AS varchar) IS NOT NULL
), minted AS (
    SELECT endpoint_id, url,
           ('x' || replace(gen_random_uuid()::text, '-', ''))::bit(128) AS bits
    FROM targets
), deliveries AS (
    INSERT INTO webhook_deliveries
        (id, team_id, event_id, endpoint_id, url, status, next_attempt_at)
    SELECT 'whdl_' || :ulid_time || {sql_ulid_random("m.bits")},
           :team_id, event.id, m.endpoint_id, m.url, 'pending', :now
    FROM minted m CROSS JOIN event
    RETURNING id
)
SELECT pg_notify(:channel, '') FROM deliveries LIMIT 1
"""  # noqa: S608 - the only fragment put in is a constant of shared.ids
).bindparams(bindparam("payload", type_=JSONB))


async def record_event(
    session: AsyncSession,
    team_id: str,
    type_: str,
    data: dict[str, Any],
    *,
    job_id: str | None = None,
    extra_url: str | None = None,
) -> WebhookEvent:
    """Store an event and one pending delivery per matching endpoint (and `extra_url`); the
    event returned is not attached to the session."""
    now = datetime.now(UTC)
    event = WebhookEvent(
        id=new_id("msg"),
        team_id=team_id,
        type=type_,
        job_id=job_id,
        payload={"type": type_, "timestamp": now.isoformat(), "data": data},
        created_at=now,
    )
    await session.flush()  # rows this one may refer to (a team, a job) first
    await session.execute(
        _RECORD,
        {
            "event_id": event.id,
            "team_id": team_id,
            "type": type_,
            "job_id": job_id,
            "payload": event.payload,
            "now": now,
            "extra_url": extra_url or None,
            "ulid_time": event.id.removeprefix("msg_")[:10],  # the event's millisecond
            "channel": NOTIFY_CHANNEL,
        },
    )
    return event
