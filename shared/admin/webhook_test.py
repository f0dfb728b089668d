"""A test event sent to one endpoint, through the outbox like every other event."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.ids import new_id
from shared.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from shared.webhooks.events import NOTIFY_CHANNEL

TEST_EVENT = "webhook.test"


async def send_test_event(session: AsyncSession, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Record a `webhook.test` event and one pending delivery to `endpoint` (whatever its filter);
    the worker sends it after commit (NOTIFY, or its sweep)."""
    now = datetime.now(UTC)
    event = WebhookEvent(
        id=new_id("msg"),
        team_id=endpoint.team_id,
        type=TEST_EVENT,
        payload={
            "type": TEST_EVENT,
            "timestamp": now.isoformat(),
            "data": {"endpoint_id": endpoint.id, "message": "a test event from the portal"},
        },
        created_at=now,
    )
    session.add(event)
    await session.flush()
    delivery = WebhookDelivery(
        id=new_id("whdl"),
        team_id=endpoint.team_id,
        event_id=event.id,
        endpoint_id=endpoint.id,
        url=endpoint.url,
        status="pending",
        next_attempt_at=now,
    )
    session.add(delivery)
    await session.flush()
    await session.execute(select(func.pg_notify(NOTIFY_CHANNEL, "")))
    return delivery
