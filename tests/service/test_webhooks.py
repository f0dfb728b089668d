"""Webhook outbox and delivery statements at the service level: who gets a delivery, what a
claim reads, and what one recorded answer does to the delivery and its endpoint."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.crypto import SecretBox, new_key
from shared.ids import new_id
from shared.models import (
    DeliveryStatus,
    Team,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from shared.webhooks.delivery import SendResult
from shared.webhooks.events import record_event
from shared.webhooks.repository import Claim, claim_delivery, record_attempt

ULID = re.compile(r"^whdl_[0-9A-HJKMNP-TV-Z]{26}$")
BOX = SecretBox([new_key()])
DAY = 24 * 3600.0


async def _team(session: AsyncSession) -> Team:
    team = Team(id="wh-" + uuid.uuid4().hex[:10], name="t")
    session.add(team)
    await session.flush()
    return team


async def _endpoint(
    session: AsyncSession, team: Team, *, types: list[str] | None = None, enabled: bool = True
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=new_id("whep"),
        team_id=team.id,
        url=f"https://{uuid.uuid4().hex[:8]}.example.com/hook",
        event_types=types or [],
        enabled=enabled,
        secret=BOX.seal("whsec_" + "A" * 32),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def _deliveries(session: AsyncSession, event_id: str) -> list[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)
    return list((await session.execute(stmt)).scalars())


async def _claim(session: AsyncSession, delivery: WebhookDelivery) -> Claim:
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id)
        .values(next_attempt_at=datetime.now(UTC) - timedelta(hours=1))
    )
    claim = await claim_delivery(session, delivery.id, 20.0)
    assert claim is not None
    return claim


def _answer(code: int | None) -> SendResult:
    return SendResult(status_code=code, latency_ms=3, response_body="", error=None)


async def test_an_event_gets_one_delivery_per_matching_enabled_endpoint_and_the_job_url(
    session: AsyncSession,
) -> None:
    team = await _team(session)
    everything = [await _endpoint(session, team) for _ in range(24)]  # past the default bound
    only_this = await _endpoint(session, team, types=["job.succeeded"])
    await _endpoint(session, team, types=["job.failed"])
    await _endpoint(session, team, enabled=False)
    event = await record_event(
        session, team.id, "job.succeeded", {"x": 1}, extra_url="https://job.example.com/h"
    )
    rows = await _deliveries(session, event.id)
    assert sorted(str(d.endpoint_id) for d in rows if d.endpoint_id) == sorted(
        e.id for e in [*everything, only_this]
    )
    assert [d.url for d in rows if d.endpoint_id is None] == ["https://job.example.com/h"]
    assert all(d.status == DeliveryStatus.PENDING and d.team_id == team.id for d in rows)
    # ULIDs of the event's millisecond, all different.
    assert all(ULID.match(d.id) for d in rows)
    assert {d.id[5:15] for d in rows} == {event.id[4:14]}
    assert len({d.id for d in rows}) == len(rows) == 26


async def test_an_event_nobody_listens_to_is_stored_without_deliveries(
    session: AsyncSession,
) -> None:
    team = await _team(session)
    await _endpoint(session, team, types=["credits.low"])
    event = await record_event(session, team.id, "job.failed", {"x": 1}, extra_url="")
    assert await _deliveries(session, event.id) == []


async def test_a_claim_reads_the_event_and_the_endpoint_secret_and_takes_the_new_url(
    session: AsyncSession,
) -> None:
    team = await _team(session)
    endpoint = await _endpoint(session, team)
    event = await record_event(session, team.id, "job.succeeded", {"x": 1})
    (delivery,) = await _deliveries(session, event.id)
    endpoint.url = "https://moved.example.com/hook"
    await session.flush()
    claim = await _claim(session, delivery)
    assert claim.payload == event.payload and claim.event_id == event.id
    assert claim.url == "https://moved.example.com/hook" and claim.endpoint_enabled is True
    assert claim.secret == endpoint.secret and (claim.attempts, claim.round_attempts) == (1, 1)
    # Leased: not due again until the lease ends.
    assert await claim_delivery(session, delivery.id, 20.0) is None


async def test_a_410_disables_the_endpoint_and_fails_the_delivery(session: AsyncSession) -> None:
    team = await _team(session)
    endpoint = await _endpoint(session, team)
    event = await record_event(session, team.id, "job.succeeded", {"x": 1})
    (delivery,) = await _deliveries(session, event.id)
    claim = await _claim(session, delivery)
    done = await record_attempt(
        session, claim, _answer(410), exhausted=False, delay=5, disable_after_seconds=DAY
    )
    assert (done.status, done.moved, done.endpoint_matched) == ("failed", True, True)
    await session.refresh(endpoint)
    await session.refresh(delivery)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "gone")
    assert (delivery.status, delivery.last_status_code, delivery.last_error) == (
        "failed",
        410,
        "HTTP 410",
    )
    attempts = (
        (await session.execute(select(WebhookAttempt).filter_by(delivery_id=delivery.id)))
        .scalars()
        .all()
    )
    assert [(a.attempt, a.status_code, a.url) for a in attempts] == [(1, 410, endpoint.url)]


async def test_failures_start_the_clock_then_disable_an_endpoint_failing_too_long(
    session: AsyncSession,
) -> None:
    team = await _team(session)
    endpoint = await _endpoint(session, team)
    event = await record_event(session, team.id, "job.succeeded", {"x": 1})
    (delivery,) = await _deliveries(session, event.id)
    claim = await _claim(session, delivery)
    first = await record_attempt(
        session, claim, _answer(500), exhausted=False, delay=5, disable_after_seconds=DAY
    )
    assert (first.status, first.moved, first.endpoint_tripped) == ("pending", True, False)
    await session.refresh(endpoint)
    assert endpoint.enabled and endpoint.failing_since is not None
    endpoint.failing_since = datetime.now(UTC) - timedelta(days=2)
    await session.flush()
    claim = await _claim(session, delivery)
    second = await record_attempt(
        session, claim, _answer(500), exhausted=False, delay=5, disable_after_seconds=DAY
    )
    assert (second.status, second.endpoint_tripped) == ("failed", True)
    await session.refresh(endpoint)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "failing")


async def test_a_success_clears_the_failing_clock_and_an_unchanged_endpoint_is_not_written(
    session: AsyncSession,
) -> None:
    team = await _team(session)
    endpoint = await _endpoint(session, team)
    event = await record_event(session, team.id, "job.succeeded", {"x": 1})
    (delivery,) = await _deliveries(session, event.id)
    stamp = datetime(2020, 1, 1, tzinfo=UTC)
    endpoint.failing_since = datetime.now(UTC) - timedelta(hours=1)
    await session.flush()
    await session.execute(
        update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id).values(updated_at=stamp)
    )
    claim = await _claim(session, delivery)
    done = await record_attempt(
        session, claim, _answer(204), exhausted=False, delay=5, disable_after_seconds=DAY
    )
    assert (done.status, done.moved) == ("succeeded", True)
    await session.refresh(endpoint)
    await session.refresh(delivery)
    assert endpoint.failing_since is None and endpoint.updated_at > stamp
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None
    # A failure while the clock already runs changes nothing on the endpoint.
    endpoint.failing_since = datetime.now(UTC) - timedelta(hours=1)
    await session.flush()
    await session.execute(
        update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id).values(updated_at=stamp)
    )
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id)
        .values(status=DeliveryStatus.PENDING)
    )
    claim = await _claim(session, delivery)
    await record_attempt(
        session, claim, _answer(503), exhausted=False, delay=5, disable_after_seconds=DAY
    )
    await session.refresh(endpoint)
    assert endpoint.updated_at == stamp and endpoint.enabled


async def test_an_answer_from_an_old_url_or_a_taken_over_attempt_changes_nothing_it_should_not(
    session: AsyncSession,
) -> None:
    team = await _team(session)
    endpoint = await _endpoint(session, team)
    event = await record_event(session, team.id, "job.succeeded", {"x": 1})
    (delivery,) = await _deliveries(session, event.id)
    claim = await _claim(session, delivery)
    endpoint.url = "https://elsewhere.example.com/hook"  # moved during the attempt
    await session.flush()
    done = await record_attempt(
        session, claim, _answer(410), exhausted=False, delay=5, disable_after_seconds=DAY
    )
    assert (done.status, done.endpoint_matched, done.moved) == ("pending", False, True)
    await session.refresh(endpoint)
    assert endpoint.enabled and endpoint.failing_since is None
    # Another attempt took the row over (the lease ran out): this one does not move it.
    stale = await _claim(session, delivery)
    await _claim(session, delivery)
    late = await record_attempt(
        session, stale, _answer(500), exhausted=False, delay=5, disable_after_seconds=DAY
    )
    assert not late.moved
    # The schedule is exhausted: failed for good.
    current = await _claim(session, delivery)
    last = await record_attempt(
        session, current, _answer(500), exhausted=True, delay=0, disable_after_seconds=DAY
    )
    assert (last.status, last.moved) == ("failed", True)
