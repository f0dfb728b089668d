"""A team's webhook endpoints, secrets, events and deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.crypto import SecretBox
from shared.errors import Conflict, NotFound, QuotaExceeded
from shared.ids import new_id
from shared.models import (
    DeliveryStatus,
    Team,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookTeamSecret,
)
from shared.webhooks.delivery import generate_secret
from shared.webhooks.repository import WebhookRepository
from shared.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointUpdate,
    EventOut,
    SecretOut,
)


def endpoint_out(e: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=e.id,
        url=e.url,
        description=e.description,
        event_types=list(e.event_types),
        enabled=e.enabled,
        disabled_reason=e.disabled_reason,
        failing_since=e.failing_since,
        created_at=e.created_at,
        updated_at=e.updated_at,
    )


def secret_out(row: WebhookEndpoint | WebhookTeamSecret, box: SecretBox) -> SecretOut:
    expires = row.previous_secret_expires_at
    if expires is not None and expires <= datetime.now(UTC):
        expires = None
    return SecretOut(secret=box.open(row.secret), previous_secret_expires_at=expires)


def event_out(e: WebhookEvent) -> EventOut:
    return EventOut(
        id=e.id, type=e.type, job_id=e.job_id, payload=e.payload, created_at=e.created_at
    )


def delivery_out(d: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        event_id=d.event_id,
        endpoint_id=d.endpoint_id,
        target="endpoint" if d.endpoint_id is not None else "job_url",
        url=d.url,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at if d.status == DeliveryStatus.PENDING else None,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        delivered_at=d.delivered_at,
        created_at=d.created_at,
        updated_at=d.updated_at,
    )


def attempt_out(a: WebhookAttempt) -> AttemptOut:
    return AttemptOut(
        id=a.id,
        delivery_id=a.delivery_id,
        event_id=a.event_id,
        endpoint_id=a.endpoint_id,
        attempt=a.attempt,
        url=a.url,
        status_code=a.status_code,
        latency_ms=a.latency_ms,
        response_body=a.response_body,
        error=a.error,
        created_at=a.created_at,
    )


class WebhookService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.box = SecretBox(settings.webhook_secret_keys)
        self.repo = WebhookRepository(session, self.box)

    # -- endpoints ---------------------------------------------------------------------------

    async def create_endpoint(self, team: Team, data: EndpointCreate) -> EndpointCreated:
        limit = self.settings.webhook_max_endpoints_per_team
        if await self.repo.count_endpoints(team.id) >= limit:
            raise QuotaExceeded(
                f"team {team.id!r} already has {limit} webhook endpoints; delete one first",
                limit=limit,
                setting="WEBHOOK_MAX_ENDPOINTS_PER_TEAM",
            )
        secret = generate_secret()
        endpoint = WebhookEndpoint(
            id=new_id("whep"),
            team_id=team.id,
            url=str(data.url),
            description=data.description,
            event_types=sorted(set(data.event_types)),
            enabled=data.enabled,
            disabled_reason=None if data.enabled else "manual",
            secret=self.box.seal(secret),
        )
        self.session.add(endpoint)
        await self.session.flush()
        await self.session.refresh(endpoint)
        return EndpointCreated(**endpoint_out(endpoint).model_dump(), secret=secret)

    async def endpoint(
        self, team: Team, endpoint_id: str, *, for_update: bool = False
    ) -> WebhookEndpoint:
        endpoint = await self.repo.endpoint(team.id, endpoint_id, for_update=for_update)
        if endpoint is None:
            raise NotFound(f"no webhook endpoint {endpoint_id!r}")
        return endpoint

    async def list_endpoints(
        self, team: Team, *, after: str | None, limit: int
    ) -> tuple[list[EndpointOut], bool]:
        rows = list(await self.repo.endpoints(team.id, after=after, limit=limit + 1))
        return [endpoint_out(e) for e in rows[:limit]], len(rows) > limit

    async def update_endpoint(
        self, team: Team, endpoint_id: str, data: EndpointUpdate
    ) -> EndpointOut:
        endpoint = await self.endpoint(team, endpoint_id, for_update=True)
        if data.url is not None and str(data.url) != endpoint.url:
            endpoint.url = str(data.url)
            endpoint.failing_since = None  # failures at the old address do not count for the new
        if data.description is not None:
            endpoint.description = data.description
        if data.event_types is not None:
            endpoint.event_types = sorted(set(data.event_types))
        if data.enabled is not None and data.enabled != endpoint.enabled:
            endpoint.enabled = data.enabled
            endpoint.disabled_reason = None if data.enabled else "manual"
            endpoint.failing_since = None
        await self.session.flush()
        await self.session.refresh(endpoint)
        return endpoint_out(endpoint)

    async def delete_endpoint(self, team: Team, endpoint_id: str) -> None:
        endpoint = await self.endpoint(team, endpoint_id, for_update=True)
        await self.session.delete(endpoint)
        await self.session.flush()

    async def endpoint_secret(self, team: Team, endpoint_id: str) -> SecretOut:
        return secret_out(await self.endpoint(team, endpoint_id), self.box)

    async def rotate_endpoint_secret(self, team: Team, endpoint_id: str) -> SecretOut:
        """A new secret; the old one keeps signing alongside it for the grace period."""
        endpoint = await self.endpoint(team, endpoint_id, for_update=True)
        self._rotate(endpoint)
        await self.session.flush()
        return secret_out(endpoint, self.box)

    # -- the team secret (a job's own webhook_url) -------------------------------------------

    async def team_secret(self, team: Team) -> SecretOut:
        return secret_out(await self.repo.team_secret(team.id), self.box)

    async def rotate_team_secret(self, team: Team) -> SecretOut:
        row = await self.repo.team_secret(team.id, for_update=True)
        self._rotate(row)
        await self.session.flush()
        return secret_out(row, self.box)

    def _rotate(self, row: WebhookEndpoint | WebhookTeamSecret) -> None:
        grace = self.settings.webhook_secret_grace_seconds
        row.previous_secret = row.secret if grace > 0 else None
        row.previous_secret_expires_at = (
            datetime.now(UTC) + timedelta(seconds=grace) if grace > 0 else None
        )
        row.secret = self.box.seal(generate_secret())

    # -- events, deliveries, attempts --------------------------------------------------------

    async def event(self, team: Team, event_id: str) -> EventOut:
        event = await self.repo.event(team.id, event_id)
        if event is None:
            raise NotFound(f"no webhook event {event_id!r}")
        return event_out(event)

    async def list_events(
        self,
        team: Team,
        *,
        type_: str | None,
        job_id: str | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[EventOut], bool]:
        rows = list(
            await self.repo.events(
                team.id, type_=type_, job_id=job_id, after=after, limit=limit + 1
            )
        )
        return [event_out(e) for e in rows[:limit]], len(rows) > limit

    async def delivery(self, team: Team, delivery_id: str) -> DeliveryOut:
        delivery = await self.repo.delivery(team.id, delivery_id)
        if delivery is None:
            raise NotFound(f"no webhook delivery {delivery_id!r}")
        return delivery_out(delivery)

    async def list_deliveries(
        self,
        team: Team,
        *,
        status: str | None,
        endpoint_id: str | None,
        event_id: str | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[DeliveryOut], bool]:
        rows = list(
            await self.repo.deliveries(
                team.id,
                status=status,
                endpoint_id=endpoint_id,
                event_id=event_id,
                after=after,
                limit=limit + 1,
            )
        )
        return [delivery_out(d) for d in rows[:limit]], len(rows) > limit

    async def list_attempts(
        self, team: Team, delivery_id: str, *, after: str | None, limit: int
    ) -> tuple[list[AttemptOut], bool]:
        await self.delivery(team, delivery_id)
        rows = list(await self.repo.attempts(team.id, delivery_id, after=after, limit=limit + 1))
        return [attempt_out(a) for a in rows[:limit]], len(rows) > limit

    # -- redelivery ----------------------------------------------------------------------------

    async def redeliver_event(self, team: Team, event_id: str) -> Sequence[WebhookDelivery]:
        """Send an event again to each of its targets that is not disabled; the caller enqueues."""
        await self.event(team, event_id)
        requeued = await self.repo.requeue_event(team.id, event_id)
        if not requeued:
            raise Conflict(
                f"event {event_id!r} has no delivery to redeliver "
                "(each is already pending, or its endpoint is disabled)"
            )
        return requeued

    async def replay_failed(
        self, team: Team, endpoint_id: str, since: datetime
    ) -> Sequence[WebhookDelivery]:
        """Send again every failed delivery of an endpoint created at or after `since`."""
        endpoint = await self.endpoint(team, endpoint_id)
        if not endpoint.enabled:
            raise Conflict(f"endpoint {endpoint_id!r} is disabled; enable it before a replay")
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return await self.repo.requeue_failed(team.id, endpoint.id, since)


async def reencrypt_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Re-encrypt every stored signing secret with the first key (after a new key was put in
    front of WEBHOOK_SECRETS_KEY); returns how many rows were rewritten."""
    changed = 0
    rows: list[WebhookEndpoint | WebhookTeamSecret] = [
        *(await session.execute(select(WebhookEndpoint).with_for_update())).scalars(),
        *(await session.execute(select(WebhookTeamSecret).with_for_update())).scalars(),
    ]
    if rows:
        for row in rows:
            row.secret = box.rotate(row.secret)
            if row.previous_secret is not None:
                row.previous_secret = box.rotate(row.previous_secret)
            changed += 1
    await session.flush()
    return changed
