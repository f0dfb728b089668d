"""Queries for webhook rows; every team-facing query takes the team."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    Select,
    String,
    column,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.crypto import SecretBox
from shared.ids import new_id
from shared.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookTeamSecret,
)
from shared.webhooks.delivery import SendResult, generate_secret

_T = TypeVar("_T")


def _page(stmt: Select[_T], column: Any, after: str | None, limit: int) -> Select[_T]:
    """Newest first; `after` is the last id of the previous page."""
    stmt = stmt.order_by(column.desc()).limit(limit)
    if after:
        stmt = stmt.where(column < after)
    return stmt


class WebhookRepository:
    def __init__(self, session: AsyncSession, box: SecretBox | None = None) -> None:
        self.session = session
        self.box = box

    # -- endpoints ---------------------------------------------------------------------------

    async def endpoint(
        self, team_id: str, endpoint_id: str, *, for_update: bool = False
    ) -> WebhookEndpoint | None:
        stmt = select(WebhookEndpoint).where(
            WebhookEndpoint.team_id == team_id, WebhookEndpoint.id == endpoint_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def endpoints(
        self, team_id: str, *, after: str | None, limit: int
    ) -> Sequence[WebhookEndpoint]:
        stmt = select(WebhookEndpoint).where(WebhookEndpoint.team_id == team_id)
        return (
            (await self.session.execute(_page(stmt, WebhookEndpoint.id, after, limit)))
            .scalars()
            .all()
        )

    async def endpoints_for(self, team_id: str, event_type: str) -> Sequence[WebhookEndpoint]:
        """Enabled endpoints whose filter lets `event_type` through."""
        stmt = (
            select(WebhookEndpoint)
            .where(
                WebhookEndpoint.team_id == team_id,
                WebhookEndpoint.enabled.is_(True),
                or_(
                    WebhookEndpoint.event_types == [],
                    WebhookEndpoint.event_types.contains([event_type]),
                ),
            )
            .order_by(WebhookEndpoint.id)
        )
        return (await self.session.execute(stmt)).scalars().all()

    # -- team secret -------------------------------------------------------------------------

    async def team_secret(self, team_id: str, *, for_update: bool = False) -> WebhookTeamSecret:
        """The team's secret (as stored: encrypted), created on first use (safe under concurrent
        first uses)."""
        if self.box is None:
            raise RuntimeError("WebhookRepository needs a SecretBox to create a team secret")
        await self.session.execute(
            insert(WebhookTeamSecret)
            .values(team_id=team_id, secret=self.box.seal(generate_secret()))
            .on_conflict_do_nothing(index_elements=["team_id"])
        )
        stmt = select(WebhookTeamSecret).where(WebhookTeamSecret.team_id == team_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one()

    # -- events ------------------------------------------------------------------------------

    async def event(self, team_id: str, event_id: str) -> WebhookEvent | None:
        stmt = select(WebhookEvent).where(
            WebhookEvent.team_id == team_id, WebhookEvent.id == event_id
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def events(
        self,
        team_id: str,
        *,
        type_: str | None,
        job_id: str | None,
        after: str | None,
        limit: int,
    ) -> Sequence[WebhookEvent]:
        stmt = select(WebhookEvent).where(WebhookEvent.team_id == team_id)
        if type_:
            stmt = stmt.where(WebhookEvent.type == type_)
        if job_id:
            stmt = stmt.where(WebhookEvent.job_id == job_id)
        return (
            (await self.session.execute(_page(stmt, WebhookEvent.id, after, limit))).scalars().all()
        )

    # -- deliveries and attempts -------------------------------------------------------------

    async def delivery(self, team_id: str, delivery_id: str) -> WebhookDelivery | None:
        stmt = select(WebhookDelivery).where(
            WebhookDelivery.team_id == team_id, WebhookDelivery.id == delivery_id
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def deliveries(
        self,
        team_id: str,
        *,
        status: str | None,
        endpoint_id: str | None,
        event_id: str | None,
        after: str | None,
        limit: int,
    ) -> Sequence[WebhookDelivery]:
        stmt = select(WebhookDelivery).where(WebhookDelivery.team_id == team_id)
        if status:
            stmt = stmt.where(WebhookDelivery.status == status)
        if endpoint_id:
            stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
        if event_id:
            stmt = stmt.where(WebhookDelivery.event_id == event_id)
        return (
            (await self.session.execute(_page(stmt, WebhookDelivery.id, after, limit)))
            .scalars()
            .all()
        )

    async def attempts(
        self, team_id: str, delivery_id: str, *, after: str | None, limit: int
    ) -> Sequence[WebhookAttempt]:
        stmt = select(WebhookAttempt).where(
            WebhookAttempt.team_id == team_id, WebhookAttempt.delivery_id == delivery_id
        )
        return (
            (await self.session.execute(_page(stmt, WebhookAttempt.id, after, limit)))
            .scalars()
            .all()
        )

    async def count_endpoints(self, team_id: str) -> int:
        """The team's endpoints, counted under a per-team advisory lock held to commit, so that
        concurrent creations cannot pass the bound together."""
        await self.session.execute(
            select(func.pg_advisory_xact_lock(func.hashtext("webhook_endpoints:" + team_id)))
        )
        stmt = select(func.count()).select_from(WebhookEndpoint)
        return int(
            (
                await self.session.execute(stmt.where(WebhookEndpoint.team_id == team_id))
            ).scalar_one()
        )

    async def requeue(self, team_id: str, *conditions: Any) -> Sequence[WebhookDelivery]:
        """Put matching deliveries that are not pending back in line, with a fresh schedule."""
        stmt = (
            update(WebhookDelivery)
            .where(
                WebhookDelivery.team_id == team_id,
                WebhookDelivery.status != DeliveryStatus.PENDING,
                *conditions,
            )
            .values(
                status=DeliveryStatus.PENDING,
                round_attempts=0,
                next_attempt_at=func.now(),
                updated_at=func.now(),
            )
            .returning(WebhookDelivery)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def requeue_event(self, team_id: str, event_id: str) -> Sequence[WebhookDelivery]:
        """Every delivery of an event, except to endpoints that are disabled."""
        enabled = select(WebhookEndpoint.id).where(
            WebhookEndpoint.team_id == team_id, WebhookEndpoint.enabled.is_(True)
        )
        return await self.requeue(
            team_id,
            WebhookDelivery.event_id == event_id,
            or_(WebhookDelivery.endpoint_id.is_(None), WebhookDelivery.endpoint_id.in_(enabled)),
        )

    async def requeue_failed(
        self, team_id: str, endpoint_id: str, since: datetime
    ) -> Sequence[WebhookDelivery]:
        return await self.requeue(
            team_id,
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == DeliveryStatus.FAILED,
            WebhookDelivery.created_at >= since,
        )


# -- worker side: not team-facing, keyed by the delivery's own id ------------------------------


@dataclass(frozen=True)
class Claim:
    """A delivery taken for one attempt, with its event's payload and the signing secrets as
    stored (the endpoint's, or for a job's own URL the team's; None if the team has none yet)."""

    id: str
    team_id: str
    event_id: str
    endpoint_id: str | None
    url: str  # where this attempt goes: the endpoint's URL now
    attempts: int
    round_attempts: int
    payload: dict[str, Any]
    endpoint_enabled: bool | None  # None: no endpoint (a job's URL) or the endpoint is gone
    secret: str | None
    previous_secret: str | None
    previous_secret_expires_at: datetime | None


# Claim deliveries that are pending and due (arq and Postgres clocks may differ a little: a
# deferred task may come a bit early), moving `next_attempt_at` to the end of the lease, and read
# what the attempt needs, in one statement. The URL becomes the endpoint's current one (unless it
# is disabled): a customer who moves an endpoint gets its pending retries at the new URL.
# `<picked>` is the query of the ids to claim (`_claim_statement`).
_CLAIM_SQL = """
WITH picked AS MATERIALIZED (<picked>), claimed AS (
    UPDATE webhook_deliveries d SET
        attempts = d.attempts + 1,
        round_attempts = d.round_attempts + 1,
        next_attempt_at = now() + make_interval(secs => :lease),
        updated_at = now(),
        url = coalesce(
            (SELECT e.url FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled),
            d.url
        )
    FROM picked
    WHERE d.id = picked.id AND d.status = 'pending'
      AND d.next_attempt_at <= now() + interval '0.25 seconds'
    RETURNING d.id, d.team_id, d.event_id, d.endpoint_id, d.url, d.attempts, d.round_attempts
)
SELECT c.id, c.team_id, c.event_id, c.endpoint_id, c.url, c.attempts, c.round_attempts,
       ev.payload, ep.enabled AS endpoint_enabled,
       coalesce(ep.secret, ts.secret) AS secret,
       coalesce(ep.previous_secret, ts.previous_secret) AS previous_secret,
       coalesce(ep.previous_secret_expires_at, ts.previous_secret_expires_at)
           AS previous_secret_expires_at
FROM claimed c
JOIN webhook_events ev ON ev.id = c.event_id
LEFT JOIN webhook_endpoints ep ON ep.id = c.endpoint_id
LEFT JOIN webhook_team_secrets ts ON c.endpoint_id IS NULL AND ts.team_id = c.team_id
"""


def _claim_statement(picked: str) -> Any:
    """The claim of the deliveries whose ids the (constant) query `picked` selects."""
    return text(_CLAIM_SQL.replace("<picked>", picked)).columns(
        column("id", String),
        column("team_id", String),
        column("event_id", String),
        column("endpoint_id", String),
        column("url", String),
        column("attempts", Integer),
        column("round_attempts", Integer),
        column("payload", JSONB),
        column("endpoint_enabled", Boolean),
        column("secret", String),
        column("previous_secret", String),
        column("previous_secret_expires_at", DateTime(timezone=True)),
    )


# One delivery, by id (a queue entry's attempt).
_CLAIM = _claim_statement("SELECT CAST(:id AS varchar) AS id")
# The oldest due deliveries, up to :limit, skipping rows another worker is claiming: a sweep's
# claim, so that workers woken by the same commit share the deliveries instead of racing. In a
# materialised CTE, not `IN (subquery)`: a subquery may be scanned again per row of the UPDATE
# and then, skipping what it locked the first time, pick more than :limit rows.
_CLAIM_DUE = _claim_statement(
    """SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED"""
)


async def claim_delivery(
    session: AsyncSession, delivery_id: str, lease_seconds: float
) -> Claim | None:
    """Take a due pending delivery for one attempt; None if it is not due or not pending."""
    row = (await session.execute(_CLAIM, {"id": delivery_id, "lease": lease_seconds})).first()
    return None if row is None else Claim(**row._mapping)


async def claim_due(session: AsyncSession, limit: int, lease_seconds: float) -> list[Claim]:
    """Take up to `limit` due pending deliveries (oldest first) for one attempt each."""
    params = {"limit": limit, "lease": lease_seconds}
    return [Claim(**row._mapping) for row in (await session.execute(_CLAIM_DUE, params)).all()]


async def settle_delivery(
    session: AsyncSession,
    delivery_id: str,
    attempts: int,
    *,
    status: DeliveryStatus,
    error: str | None = None,
) -> None:
    """End a delivery's round without an answer (unless a later attempt took the row over)."""
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.attempts == attempts,
        )
        .values(
            status=status,
            next_attempt_at=None,
            last_status_code=None,
            last_error=error,
            delivered_at=None,
            updated_at=func.now(),
        )
    )


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt did: the delivery's status now, whether this attempt still
    held the row, and what the answer did to the endpoint."""

    status: DeliveryStatus
    moved: bool
    endpoint_matched: bool  # the endpoint exists at the URL the attempt went to
    endpoint_tripped: bool  # disabled now for failing too long


# The attempt's log row, the endpoint's health and the delivery's next state, in one statement.
# The endpoint counts only if it is still at the URL the attempt went to (an answer from an old
# URL says nothing about it: a 410 there must not disable it). It is locked first (FOR UPDATE in
# READ COMMITTED reads its latest version), then the delivery; written only if it changes. The
# delivery moves only if this attempt still holds it (same `attempts`): otherwise the lease ran
# out and another attempt took over.
_RECORD = text(
    """
WITH attempt AS (
    INSERT INTO webhook_attempts (id, team_id, delivery_id, event_id, endpoint_id, attempt, url,
                                  status_code, latency_ms, response_body, error)
    VALUES (:attempt_id, :team_id, :delivery_id, :event_id, :endpoint_id, :attempt, :url,
            :status_code, :latency_ms, :response_body, :attempt_error)
), endpoint AS (
    SELECT id, enabled, disabled_reason, failing_since,
           NOT :ok AND NOT :gone AND coalesce(
               failing_since <= now() - make_interval(secs => :disable_after), false
           ) AS tripped
    FROM webhook_endpoints
    WHERE id = :endpoint_id AND url = :url
    FOR UPDATE
), health AS (
    SELECT id, tripped,
           CASE WHEN :ok THEN NULL
                WHEN :gone THEN failing_since
                ELSE coalesce(failing_since, now()) END AS failing_since,
           enabled AND NOT (:gone OR tripped) AS enabled,
           CASE WHEN :gone THEN 'gone' WHEN tripped THEN 'failing'
                ELSE disabled_reason END AS disabled_reason
    FROM endpoint
), touched AS (
    UPDATE webhook_endpoints e SET
        failing_since = h.failing_since,
        enabled = h.enabled,
        disabled_reason = h.disabled_reason,
        updated_at = now()
    FROM health h
    WHERE e.id = h.id
      AND (e.failing_since, e.enabled, e.disabled_reason)
          IS DISTINCT FROM (h.failing_since, h.enabled, h.disabled_reason)
), verdict AS (
    SELECT CASE WHEN :ok THEN 'succeeded'
                WHEN :exhausted OR EXISTS (SELECT FROM health WHERE NOT enabled) THEN 'failed'
                ELSE 'pending' END AS status
), delivery AS (
    UPDATE webhook_deliveries d SET
        status = v.status,
        next_attempt_at = CASE WHEN v.status = 'pending'
                               THEN now() + make_interval(secs => :delay) END,
        last_status_code = :status_code,
        last_error = :delivery_error,
        delivered_at = CASE v.status WHEN 'succeeded' THEN now()
                                     WHEN 'failed' THEN NULL
                                     ELSE d.delivered_at END,
        updated_at = now()
    FROM verdict v
    WHERE d.id = :delivery_id AND d.status = 'pending' AND d.attempts = :attempt
    RETURNING d.id
)
SELECT v.status,
       EXISTS (SELECT FROM delivery) AS moved,
       EXISTS (SELECT FROM health) AS endpoint_matched,
       coalesce((SELECT tripped FROM health), false) AS endpoint_tripped
FROM verdict v
"""
)


async def record_attempt(
    session: AsyncSession,
    claim: Claim,
    result: SendResult,
    *,
    exhausted: bool,
    delay: float,
    disable_after_seconds: float,
) -> Recorded:
    """Log the attempt and move the delivery on: delivered, failed (`exhausted` schedule, or the
    endpoint disabled), or due again in `delay` seconds."""
    error = result.error or (
        f"HTTP {result.status_code}" if result.status_code is not None else None
    )
    row = (
        await session.execute(
            _RECORD,
            {
                "attempt_id": new_id("whatt"),
                "team_id": claim.team_id,
                "delivery_id": claim.id,
                "event_id": claim.event_id,
                "endpoint_id": claim.endpoint_id,
                "attempt": claim.attempts,
                "url": claim.url,
                "status_code": result.status_code,
                "latency_ms": result.latency_ms,
                "response_body": result.response_body,
                "attempt_error": result.error,
                "ok": result.ok,
                "gone": result.status_code == 410,
                "exhausted": exhausted,
                "delay": delay,
                "disable_after": float(disable_after_seconds),
                "delivery_error": None if result.ok else error,
            },
        )
    ).one()
    return Recorded(
        status=DeliveryStatus(row.status),
        moved=row.moved,
        endpoint_matched=row.endpoint_matched,
        endpoint_tripped=row.endpoint_tripped,
    )
