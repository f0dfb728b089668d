"""Queries for webhook rows; every team-facing query takes the team."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.crypto import SecretBox
from shared.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookTeamSecret,
)
from shared.webhooks.delivery import generate_secret

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


async def claim_delivery(
    session: AsyncSession, delivery_id: str, lease_seconds: float
) -> WebhookDelivery | None:
    """Take a due pending delivery for one attempt; None if it is not due or not pending."""
    stmt = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            # arq and Postgres clocks may differ a little: a deferred task may come a bit early.
            WebhookDelivery.next_attempt_at <= func.now() + timedelta(seconds=0.25),
        )
        .values(
            attempts=WebhookDelivery.attempts + 1,
            round_attempts=WebhookDelivery.round_attempts + 1,
            next_attempt_at=func.now() + timedelta(seconds=lease_seconds),
            updated_at=func.now(),
        )
        .returning(WebhookDelivery)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def due_deliveries(session: AsyncSession, limit: int) -> Sequence[tuple[str, int]]:
    """(id, attempts) of pending deliveries that are due, oldest first; not locked: the claim
    decides which attempt runs, so two sweeps may both return a row."""
    stmt = (
        select(WebhookDelivery.id, WebhookDelivery.attempts)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= func.now(),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in (await session.execute(stmt)).all()]
