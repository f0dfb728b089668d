"""The webhook runner: claim a due delivery, send it, log the attempt, schedule the next.

The delivery row is the truth and the queue a hint. A claim moves `next_attempt_at` to the end
of a lease, so a worker that dies mid-attempt leaves a row the sweep finds due again once the
lease runs out; a task for a row that is delivered, failed or not yet due does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import DatabaseURL, Settings
from shared.crypto import SecretBox
from shared.db import transaction
from shared.ids import new_id
from shared.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookTeamSecret,
)
from shared.queue import enqueue_delivery
from shared.retry import forever
from shared.runtime import Runtime
from shared.webhooks.delivery import (
    SendResult,
    WebhookSender,
    encode_payload,
    send,
    sign_headers,
)
from shared.webhooks.events import NOTIFY_CHANNEL
from shared.webhooks.repository import WebhookRepository, claim_delivery, due_deliveries

log = logging.getLogger("saas_llm.webhooks")
SWEEP_BATCH = 500


def active_secrets(
    secret: str,
    previous: str | None,
    previous_expires_at: datetime | None,
    box: SecretBox | None = None,
) -> list[str]:
    """The current secret, plus the previous one while its grace period lasts (decrypted with
    `box` when given)."""
    out = [secret]
    if previous and previous_expires_at and previous_expires_at > datetime.now(UTC):
        out.append(previous)
    return [box.open(s) for s in out] if box is not None else out


async def erase_expired_secrets(session: AsyncSession) -> int:
    """Clear previous secrets whose grace period is over; returns how many rows changed."""
    erased = 0
    for model in (WebhookEndpoint, WebhookTeamSecret):
        result = await session.execute(
            update(model)
            .where(model.previous_secret_expires_at <= func.now())
            .values(previous_secret=None, previous_secret_expires_at=None)
            .returning(model.previous_secret_expires_at)
        )
        erased += len(result.all())
    return erased


def lease_seconds(settings: Settings) -> float:
    return settings.webhook_timeout_seconds + 5.0


async def deliver(deps: Runtime, delivery_id: str, sender: WebhookSender) -> str:
    """Make the next attempt of a delivery if it is due; safe to run any number of times."""
    settings = deps.settings
    box = SecretBox(settings.webhook_secret_keys)
    async with transaction(deps.sessionmaker) as session:
        delivery = await claim_delivery(session, delivery_id, lease_seconds(settings))
        if delivery is None:
            return "skipped"
        event = await session.get(WebhookEvent, delivery.event_id)
        assert event is not None  # deliveries cascade with their event
        endpoint = None
        if delivery.endpoint_id is not None:
            endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
            if endpoint is None or not endpoint.enabled:
                await _settle(
                    session, delivery, status=DeliveryStatus.FAILED, error="endpoint disabled"
                )
                return "disabled"
            secrets = active_secrets(
                endpoint.secret,
                endpoint.previous_secret,
                endpoint.previous_secret_expires_at,
                box,
            )
            # The endpoint's URL now, not the one it had when the event was recorded: a customer
            # who moves an endpoint gets its pending retries and redeliveries at the new URL.
            url = endpoint.url
            if url != delivery.url:
                await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery.id)
                    .values(url=url, updated_at=func.now())
                )
        else:
            url = delivery.url  # a job's own webhook_url: fixed when the job was created
            team = await WebhookRepository(session, box).team_secret(delivery.team_id)
            secrets = active_secrets(
                team.secret, team.previous_secret, team.previous_secret_expires_at, box
            )
    body = encode_payload(event.payload)
    result = await send(
        sender,
        url,
        body,
        sign_headers(secrets, event.id, body),
        timeout_seconds=settings.webhook_timeout_seconds,
        allow_private=settings.webhook_allow_private_networks,
    )
    try:
        outcome, delay = await _record(deps, delivery, url, result)
    except IntegrityError:
        # The endpoint (and with it this delivery) was deleted during the attempt.
        return "deleted"
    extra = {
        "delivery_id": delivery.id,
        "event_id": event.id,
        "team_id": delivery.team_id,
        "attempt": delivery.attempts,
        "status": result.status_code,
        "outcome": outcome,
    }
    log.info("webhook attempt", extra=extra)
    if delay is not None:
        await enqueue_delivery(
            deps.queue, deps.settings, delivery.id, attempts=delivery.attempts, defer_by=delay
        )
    return outcome


async def _record(
    deps: Runtime, delivery: WebhookDelivery, url: str, result: SendResult
) -> tuple[str, float | None]:
    """Log the attempt (sent to `url`) and move the delivery on; returns the outcome and the
    next delay."""
    settings = deps.settings
    schedule = settings.webhook_schedule
    async with transaction(deps.sessionmaker) as session:
        session.add(
            WebhookAttempt(
                id=new_id("whatt"),
                team_id=delivery.team_id,
                delivery_id=delivery.id,
                event_id=delivery.event_id,
                endpoint_id=delivery.endpoint_id,
                attempt=delivery.attempts,
                url=url,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                response_body=result.response_body,
                error=result.error,
            )
        )
        endpoint = None
        if delivery.endpoint_id is not None:
            endpoint = (
                await session.execute(
                    select(WebhookEndpoint)
                    .where(WebhookEndpoint.id == delivery.endpoint_id)
                    .with_for_update()
                )
            ).scalar_one_or_none()
        if endpoint is not None and endpoint.url != url:
            # The URL changed during the attempt: the answer says nothing about the endpoint's
            # health (a 410 from the old URL must not disable it); the next attempt goes to the
            # new URL.
            endpoint = None
        error = result.error or (
            f"HTTP {result.status_code}" if result.status_code is not None else None
        )
        if result.ok:
            if endpoint is not None:
                endpoint.failing_since = None
            await _settle(
                session, delivery, status=DeliveryStatus.SUCCEEDED, code=result.status_code
            )
            return "succeeded", None
        if result.status_code == 410 and endpoint is not None:
            endpoint.enabled = False
            endpoint.disabled_reason = "gone"
            await _settle(session, delivery, status=DeliveryStatus.FAILED, code=410, error=error)
            log.warning("webhook endpoint disabled: 410 Gone", extra={"endpoint_id": endpoint.id})
            return "gone", None
        if endpoint is not None:
            now = datetime.now(UTC)
            if endpoint.failing_since is None:
                endpoint.failing_since = now
            elif now - endpoint.failing_since >= timedelta(
                seconds=settings.webhook_disable_after_seconds
            ):
                endpoint.enabled = False
                endpoint.disabled_reason = "failing"
                log.warning(
                    "webhook endpoint disabled: failing", extra={"endpoint_id": endpoint.id}
                )
        disabled = endpoint is not None and not endpoint.enabled
        if delivery.round_attempts >= len(schedule) or disabled:
            await _settle(
                session,
                delivery,
                status=DeliveryStatus.FAILED,
                code=result.status_code,
                error=error,
            )
            return "failed", None
        delay = schedule[delivery.round_attempts]
        if result.retry_after is not None:
            delay = max(delay, result.retry_after)
        moved = await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery.id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.attempts == delivery.attempts,
            )
            .values(
                next_attempt_at=func.now() + timedelta(seconds=delay),
                last_status_code=result.status_code,
                last_error=error,
                updated_at=func.now(),
            )
            .returning(WebhookDelivery.id)
        )
        if moved.scalar_one_or_none() is None:
            return "superseded", None  # the lease ran out and another attempt took over
        return "retry", delay


async def _settle(
    session: AsyncSession,
    delivery: WebhookDelivery,
    *,
    status: DeliveryStatus,
    code: int | None = None,
    error: str | None = None,
) -> None:
    """End a delivery's round (unless a later attempt already took the row over)."""
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery.id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.attempts == delivery.attempts,
        )
        .values(
            status=status,
            next_attempt_at=None,
            last_status_code=code,
            last_error=error,
            delivered_at=func.now() if status == DeliveryStatus.SUCCEEDED else None,
            updated_at=func.now(),
        )
    )


async def sweep(deps: Runtime) -> int:
    """Enqueue every due delivery (lost queue entries, crashed attempts, new events).

    The due ids are read in a short transaction and enqueued after it ends, so a slow Redis
    holds no row lock and no database connection. Two sweeps enqueueing the same row is
    harmless: the queue entry's id is per attempt, and the task re-reads the row."""
    async with transaction(deps.sessionmaker) as session:
        due = await due_deliveries(session, SWEEP_BATCH)
    for delivery_id, attempts in due:
        await enqueue_delivery(deps.queue, deps.settings, delivery_id, attempts=attempts)
    if due:
        log.debug("webhook sweep", extra={"enqueued": len(due)})
    return len(due)


def _setter(event: asyncio.Event) -> Callable[..., None]:
    return lambda *_: event.set()


async def _listen(rt: Runtime, wake: asyncio.Event) -> None:
    """Set `wake` whenever a transaction that recorded deliveries commits; returns when the
    connection closes (`forever` opens a new one)."""
    url = DatabaseURL(rt.settings.database_url)
    dsn = url.url("asyncpg").replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, **url.connect_args)
    try:
        closed = asyncio.Event()
        conn.add_termination_listener(_setter(closed))
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
        wake.set()  # notifications may have been missed while disconnected
        await closed.wait()
        raise ConnectionError("webhook listener connection closed")
    finally:
        if not conn.is_closed():
            await conn.close()


async def _sweep_when_woken(rt: Runtime, wake: asyncio.Event) -> None:
    while True:
        try:
            await asyncio.wait_for(wake.wait(), timeout=rt.settings.webhook_sweep_seconds)
        except TimeoutError:
            pass
        wake.clear()
        await sweep(rt)


async def run_sweeper(rt: Runtime) -> None:
    """Sweep when notified and at least every `webhook_sweep_seconds`; runs until cancelled."""
    wake = asyncio.Event()
    listener = asyncio.create_task(forever(lambda: _listen(rt, wake), name="webhook listener"))
    try:
        await forever(lambda: _sweep_when_woken(rt, wake), name="webhook sweep")
    finally:
        listener.cancel()
