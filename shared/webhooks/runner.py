"""The webhook runner: claim a due delivery, send it, log the attempt, schedule the next.

The delivery row is the truth and the queue a hint. A claim moves `next_attempt_at` to the end
of a lease, so a worker that dies mid-attempt leaves a row the sweep finds due again once the
lease runs out; a task for a row that is delivered, failed or not yet due does nothing.

An attempt is two statements, each a transaction of its own (autocommit: no BEGIN/COMMIT round
trips): the claim, which also reads the event and the signing secrets, and the record, which logs
the attempt, updates the endpoint's health and moves the delivery on (repository.py holds both).
Decrypted secrets are remembered per stored ciphertext, which a rotation replaces.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import DatabaseURL, Settings
from shared.crypto import SecretBox
from shared.db import autocommit
from shared.models import DeliveryStatus, WebhookEndpoint, WebhookTeamSecret
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
from shared.webhooks.repository import (
    Claim,
    Recorded,
    WebhookRepository,
    claim_delivery,
    claim_due,
    record_attempt,
    settle_delivery,
)

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
    return [_open(box, s) for s in out] if box is not None else out


@functools.lru_cache(maxsize=8)
def _box(keys: tuple[str, ...]) -> SecretBox:
    """One box per set of keys, for the life of the process (the cache below is per box)."""
    return SecretBox(keys)


@functools.lru_cache(maxsize=1024)
def _open(box: SecretBox, stored: str) -> str:
    """`box.open`, remembered per stored value: a ciphertext always opens to the same secret
    under the same keys, and a rotated or re-encrypted secret is a new ciphertext (a new entry),
    so nothing here can go stale."""
    return box.open(stored)


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
    """Make the next attempt of a delivery if it is due (a queue entry's task: retries and manual
    redeliveries); safe to run any number of times.

    Two statements on the wire, each its own transaction: the claim (which reads the event and
    the secrets), and after the request the record (attempt log, endpoint health, next state).
    No lock or connection is held during the request."""
    async with autocommit(deps.sessionmaker) as session:
        claim = await claim_delivery(session, delivery_id, lease_seconds(deps.settings))
    if claim is None:
        return "skipped"
    return await attempt(deps, claim, sender)


async def attempt(deps: Runtime, claim: Claim, sender: WebhookSender) -> str:
    """Send one claimed attempt and record it; schedules the retry if there is one."""
    settings = deps.settings
    box = _box(tuple(settings.webhook_secret_keys))
    if claim.endpoint_id is not None and not claim.endpoint_enabled:
        async with autocommit(deps.sessionmaker) as session:
            await settle_delivery(
                session,
                claim.id,
                claim.attempts,
                status=DeliveryStatus.FAILED,
                error="endpoint disabled",
            )
        return "disabled"
    stored = (claim.secret, claim.previous_secret, claim.previous_secret_expires_at)
    if stored[0] is None:  # a job's own webhook_url, and the team has no secret yet
        async with autocommit(deps.sessionmaker) as session:
            team = await WebhookRepository(session, box).team_secret(claim.team_id)
            stored = (team.secret, team.previous_secret, team.previous_secret_expires_at)
    assert stored[0] is not None
    secrets = active_secrets(stored[0], stored[1], stored[2], box)
    body = encode_payload(claim.payload)
    result = await send(
        sender,
        claim.url,
        body,
        sign_headers(secrets, claim.event_id, body),
        timeout_seconds=settings.webhook_timeout_seconds,
        allow_private=settings.webhook_allow_private_networks,
    )
    schedule = settings.webhook_schedule
    exhausted = claim.round_attempts >= len(schedule)
    delay = 0.0 if exhausted else schedule[claim.round_attempts]
    if result.retry_after is not None:
        delay = max(delay, result.retry_after)
    try:
        async with autocommit(deps.sessionmaker) as session:
            recorded = await record_attempt(
                session,
                claim,
                result,
                exhausted=exhausted,
                delay=delay,
                disable_after_seconds=settings.webhook_disable_after_seconds,
            )
    except IntegrityError:
        # The endpoint (and with it this delivery) was deleted during the attempt.
        return "deleted"
    outcome = _outcome(result, recorded)
    if outcome == "gone":
        log.warning("webhook endpoint disabled: 410 Gone", extra={"endpoint_id": claim.endpoint_id})
    elif recorded.endpoint_tripped:
        log.warning("webhook endpoint disabled: failing", extra={"endpoint_id": claim.endpoint_id})
    extra = {
        "delivery_id": claim.id,
        "event_id": claim.event_id,
        "team_id": claim.team_id,
        "attempt": claim.attempts,
        "status": result.status_code,
        "outcome": outcome,
    }
    log.info("webhook attempt", extra=extra)
    if outcome == "retry":
        await enqueue_delivery(
            deps.queue, deps.settings, claim.id, attempts=claim.attempts, defer_by=delay
        )
    return outcome


def _outcome(result: SendResult, recorded: Recorded) -> str:
    """The attempt's outcome as logged and returned by `deliver`."""
    if result.ok:
        return "succeeded"
    if result.status_code == 410 and recorded.endpoint_matched:
        return "gone"
    if recorded.status != DeliveryStatus.PENDING:
        return "failed"
    if not recorded.moved:
        return "superseded"  # the lease ran out and another attempt took over
    return "retry"


class Sweeper:
    """Sends the deliveries that are due from this process: new events' first attempts, attempts
    whose queue entry was lost, attempts of a worker that died (their lease ran out).

    A sweep claims up to the free slots (`WEBHOOK_MAX_CONCURRENCY` attempts in flight) in one
    statement and sends them here, with no queue entry between the commit and the request;
    workers woken by the same commit share the rows (SKIP LOCKED). What is left when the slots
    are full is swept again as soon as one frees up. Retries and manual redeliveries are
    deferred queue entries (`deliver`)."""

    def __init__(self, rt: Runtime, sender: WebhookSender) -> None:
        self.rt, self.sender = rt, sender
        self.slots = max(1, rt.settings.webhook_max_concurrency)
        self.tasks: set[asyncio.Task[str]] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        self._full = False

    async def sweep(self) -> int:
        """Claim what is due, up to the free slots, and start sending it; returns how many."""
        free = min(self.slots - len(self.tasks), SWEEP_BATCH)
        if free <= 0 or self.stopping:
            self._full = not self.stopping
            return 0
        async with autocommit(self.rt.sessionmaker) as session:
            claims = await claim_due(session, free, lease_seconds(self.rt.settings))
        for claim in claims:
            task = asyncio.create_task(self._attempt(claim))
            self.tasks.add(task)
            task.add_done_callback(self._done)
        self._full = len(claims) == free  # more may be due than there was room for
        if claims:
            log.debug("webhook sweep", extra={"claimed": len(claims)})
        return len(claims)

    async def _attempt(self, claim: Claim) -> str:
        try:
            return await attempt(self.rt, claim, self.sender)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The claim's lease runs out and a later sweep makes the attempt again.
            log.exception("webhook attempt failed", extra={"delivery_id": claim.id})
            return "error"

    def _done(self, task: asyncio.Task[str]) -> None:
        self.tasks.discard(task)
        if self._full:
            self._full = False
            self.wake.set()

    async def run(self) -> None:
        """Sweep when woken (a commit that recorded deliveries, a freed slot) and at least every
        `WEBHOOK_SWEEP_SECONDS`; runs until cancelled."""
        while True:
            try:
                await asyncio.wait_for(
                    self.wake.wait(), timeout=self.rt.settings.webhook_sweep_seconds
                )
            except TimeoutError:
                pass
            self.wake.clear()
            await self.sweep()

    async def drain(self, seconds: float) -> None:
        """Take nothing more, give the attempts in flight `seconds`, then cut them short (each is
        made again once its lease ends)."""
        self.stopping = True
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=seconds)
        for t in list(self.tasks):
            t.cancel()


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


async def run_sweeper(sweeper: Sweeper) -> None:
    """The sweeper, woken by the deliveries' NOTIFY; runs until cancelled."""
    listener = asyncio.create_task(
        forever(lambda: _listen(sweeper.rt, sweeper.wake), name="webhook listener")
    )
    try:
        await forever(sweeper.run, name="webhook sweep")
    finally:
        listener.cancel()
