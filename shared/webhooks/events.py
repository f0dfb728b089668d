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

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.ids import new_id
from shared.models import DeliveryStatus, WebhookDelivery, WebhookEvent
from shared.webhooks.repository import WebhookRepository

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


async def record_event(
    session: AsyncSession,
    team_id: str,
    type_: str,
    data: dict[str, Any],
    *,
    job_id: str | None = None,
    extra_url: str | None = None,
) -> WebhookEvent:
    """Store an event and one pending delivery per matching endpoint (and `extra_url`)."""
    now = datetime.now(UTC)
    event = WebhookEvent(
        id=new_id("msg"),
        team_id=team_id,
        type=type_,
        job_id=job_id,
        payload={"type": type_, "timestamp": now.isoformat(), "data": data},
        created_at=now,
    )
    session.add(event)
    endpoints = await WebhookRepository(session).endpoints_for(team_id, type_)
    targets: list[tuple[str | None, str]] = [(e.id, e.url) for e in endpoints]
    if extra_url:
        targets.append((None, extra_url))
    deliveries = [
        WebhookDelivery(
            id=new_id("whdl"),
            team_id=team_id,
            event_id=event.id,
            endpoint_id=endpoint_id,
            url=url,
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
        )
        for endpoint_id, url in targets
    ]
    await session.flush()  # the event first: deliveries reference it
    if deliveries:
        session.add_all(deliveries)
        await session.flush()
        await session.execute(select(func.pg_notify(NOTIFY_CHANNEL, "")))
    return event
