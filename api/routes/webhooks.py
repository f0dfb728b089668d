"""Team API for webhooks: endpoints and secrets, events, deliveries, attempts, redelivery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import SessionDep, StateDep, TeamDep
from shared.db import after_commit
from shared.errors import BadRequest
from shared.models import DeliveryStatus, Team, WebhookDelivery
from shared.queue import enqueue_delivery
from shared.teams.limits import consume_per_minute
from shared.webhooks.schemas import (
    EVENT_TYPES,
    AttemptList,
    DeliveryList,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointList,
    EndpointOut,
    EndpointUpdate,
    EventList,
    EventOut,
    Redelivered,
    ReplayRequest,
    SecretOut,
)
from shared.webhooks.service import WebhookService, delivery_out, endpoint_out

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])
After = Annotated[str | None, Query(description="Cursor: the last id of the previous page.")]
Limit = Annotated[int, Query(ge=1, le=100)]


def _service(session: SessionDep, state: StateDep) -> WebhookService:
    return WebhookService(session, state.settings)


async def _enqueue_after_commit(
    team: Team, session: SessionDep, state: StateDep, deliveries: Sequence[WebhookDelivery]
) -> Redelivered:
    """Count the deliveries against the team's per-minute budget (or 429, and the request's
    transaction is rolled back: nothing is requeued), then enqueue them once committed."""
    await consume_per_minute(
        state.queue,
        f"{state.settings.worker_queue_name}:redeliveries:{team.id}",
        len(deliveries),
        state.settings.webhook_redeliveries_per_minute,
        "webhook redeliveries (WEBHOOK_REDELIVERIES_PER_MINUTE)",
    )
    jobs = [(d.id, d.attempts) for d in deliveries]

    async def enqueue() -> None:
        for delivery_id, attempts in jobs:
            await enqueue_delivery(state.queue, state.settings, delivery_id, attempts=attempts)

    after_commit(session, enqueue)
    data = [delivery_out(d) for d in deliveries]
    return Redelivered(data=data, count=len(data))


# -- endpoints ---------------------------------------------------------------------------------


@router.post("/endpoints", status_code=201)
async def create_endpoint(
    data: EndpointCreate, team: TeamDep, session: SessionDep, state: StateDep
) -> EndpointCreated:
    """Register an endpoint; its signing secret is in the answer."""
    return await _service(session, state).create_endpoint(team, data)


@router.get("/endpoints")
async def list_endpoints(
    team: TeamDep, session: SessionDep, state: StateDep, after: After = None, limit: Limit = 20
) -> EndpointList:
    rows, has_more = await _service(session, state).list_endpoints(team, after=after, limit=limit)
    return EndpointList(data=rows, has_more=has_more, next_cursor=rows[-1].id if has_more else None)


@router.get("/endpoints/{endpoint_id}")
async def get_endpoint(
    endpoint_id: str, team: TeamDep, session: SessionDep, state: StateDep
) -> EndpointOut:
    return endpoint_out(await _service(session, state).endpoint(team, endpoint_id))


@router.patch("/endpoints/{endpoint_id}")
async def update_endpoint(
    endpoint_id: str, data: EndpointUpdate, team: TeamDep, session: SessionDep, state: StateDep
) -> EndpointOut:
    """Change the URL, description, event filter or enabled flag."""
    return await _service(session, state).update_endpoint(team, endpoint_id, data)


@router.delete("/endpoints/{endpoint_id}", status_code=204)
async def delete_endpoint(
    endpoint_id: str, team: TeamDep, session: SessionDep, state: StateDep
) -> Response:
    await _service(session, state).delete_endpoint(team, endpoint_id)
    return Response(status_code=204)


@router.get("/endpoints/{endpoint_id}/secret")
async def get_endpoint_secret(
    endpoint_id: str, team: TeamDep, session: SessionDep, state: StateDep
) -> SecretOut:
    return await _service(session, state).endpoint_secret(team, endpoint_id)


@router.post("/endpoints/{endpoint_id}/rotate-secret")
async def rotate_endpoint_secret(
    endpoint_id: str, team: TeamDep, session: SessionDep, state: StateDep
) -> SecretOut:
    """A new secret; the previous one keeps signing alongside it during the grace period."""
    return await _service(session, state).rotate_endpoint_secret(team, endpoint_id)


@router.post("/endpoints/{endpoint_id}/replay")
async def replay_endpoint(
    endpoint_id: str, data: ReplayRequest, team: TeamDep, session: SessionDep, state: StateDep
) -> Redelivered:
    """Send again every failed delivery of this endpoint since `since`."""
    requeued = await _service(session, state).replay_failed(team, endpoint_id, data.since)
    return await _enqueue_after_commit(team, session, state, requeued)


# -- the team secret ---------------------------------------------------------------------------


@router.get("/secret")
async def get_team_secret(team: TeamDep, session: SessionDep, state: StateDep) -> SecretOut:
    """The secret that signs deliveries to a job's own `webhook_url` (created on first use)."""
    return await _service(session, state).team_secret(team)


@router.post("/secret/rotate")
async def rotate_team_secret(team: TeamDep, session: SessionDep, state: StateDep) -> SecretOut:
    return await _service(session, state).rotate_team_secret(team)


# -- events, deliveries, attempts --------------------------------------------------------------


@router.get("/events")
async def list_events(
    team: TeamDep,
    session: SessionDep,
    state: StateDep,
    type: str | None = None,
    job_id: str | None = None,
    after: After = None,
    limit: Limit = 20,
) -> EventList:
    """The team's events, newest first."""
    if type is not None and type not in EVENT_TYPES:
        raise BadRequest(f"unknown event type {type!r}", param="type")
    rows, has_more = await _service(session, state).list_events(
        team, type_=type, job_id=job_id, after=after, limit=limit
    )
    return EventList(data=rows, has_more=has_more, next_cursor=rows[-1].id if has_more else None)


@router.get("/events/{event_id}")
async def get_event(event_id: str, team: TeamDep, session: SessionDep, state: StateDep) -> EventOut:
    return await _service(session, state).event(team, event_id)


@router.post("/events/{event_id}/redeliver", status_code=202)
async def redeliver_event(
    event_id: str, team: TeamDep, session: SessionDep, state: StateDep
) -> Redelivered:
    """Send an event again to each of its (enabled) targets, with a fresh retry schedule."""
    requeued = await _service(session, state).redeliver_event(team, event_id)
    return await _enqueue_after_commit(team, session, state, requeued)


@router.get("/deliveries")
async def list_deliveries(
    team: TeamDep,
    session: SessionDep,
    state: StateDep,
    status: str | None = None,
    endpoint_id: str | None = None,
    event_id: str | None = None,
    after: After = None,
    limit: Limit = 20,
) -> DeliveryList:
    """One row per event and target, newest first."""
    if status is not None and status not in set(DeliveryStatus):
        raise BadRequest(f"unknown status {status!r}", param="status")
    rows, has_more = await _service(session, state).list_deliveries(
        team, status=status, endpoint_id=endpoint_id, event_id=event_id, after=after, limit=limit
    )
    return DeliveryList(data=rows, has_more=has_more, next_cursor=rows[-1].id if has_more else None)


@router.get("/deliveries/{delivery_id}")
async def get_delivery(
    delivery_id: str, team: TeamDep, session: SessionDep, state: StateDep
) -> DeliveryOut:
    return await _service(session, state).delivery(team, delivery_id)


@router.get("/deliveries/{delivery_id}/attempts")
async def list_attempts(
    delivery_id: str,
    team: TeamDep,
    session: SessionDep,
    state: StateDep,
    after: After = None,
    limit: Limit = 20,
) -> AttemptList:
    """Every attempt of a delivery, newest first."""
    rows, has_more = await _service(session, state).list_attempts(
        team, delivery_id, after=after, limit=limit
    )
    return AttemptList(data=rows, has_more=has_more, next_cursor=rows[-1].id if has_more else None)
