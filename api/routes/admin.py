"""Admin API: teams and their keys, portal links; every change is written to the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from api.deps import AdminDep, SessionDep, StateDep
from shared.admin.service import Actor, AuditLog, PortalLinks
from shared.db import after_commit
from shared.jobs.money import resume_after_commit
from shared.models import TeamStatus
from shared.teams import retention
from shared.teams.schemas import (
    KeyCreate,
    KeyCreated,
    KeyOut,
    TeamCreate,
    TeamDataDeleted,
    TeamOut,
    TeamUpdate,
)
from shared.teams.service import TeamService, key_out, team_out


async def audit_change(request: Request, session: SessionDep) -> AsyncIterator[None]:
    """After a successful POST/PATCH/PUT/DELETE, record it in the same transaction (so an entry
    exists exactly when the change does): the route, its path parameters, the caller's address."""
    yield
    if request.method in {"GET", "HEAD", "OPTIONS"}:
        return
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    params: dict[str, str] = dict(request.path_params)
    target_type = "team" if "team_id" in params else None
    AuditLog(session).record(
        Actor(
            name="admin-api-key",
            id=None,
            source="api",
            ip=request.client.host if request.client else None,
        ),
        f"{request.method} {template}",
        target_type=target_type,
        target_id=params.get("team_id"),
        detail=params,
    )


router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    dependencies=[AdminDep, Depends(audit_change, scope="function")],
)


@router.post("/teams", status_code=201)
async def create_team(data: TeamCreate, session: SessionDep, request: Request) -> TeamOut:
    team = await TeamService(session).create(data)
    request.path_params["team_id"] = team.id  # for the audit entry
    return team_out(team)


@router.get("/teams")
async def list_teams(
    session: SessionDep,
    after: str | None = None,
    limit: int = Query(default=50, ge=1, le=200),
) -> dict[str, Any]:
    teams = list(await TeamService(session).list(after=after, limit=limit + 1))
    page = teams[:limit]
    return {
        "object": "list",
        "data": [team_out(t) for t in page],
        "has_more": len(teams) > limit,
        "next_cursor": page[-1].id if len(teams) > limit else None,
    }


@router.get("/teams/{team_id}")
async def get_team(team_id: str, session: SessionDep) -> TeamOut:
    return team_out(await TeamService(session).get(team_id))


@router.patch("/teams/{team_id}")
async def update_team(
    team_id: str, data: TeamUpdate, session: SessionDep, state: StateDep
) -> TeamOut:
    """Change a team; paused work that fits its new budget or settings resumes after commit."""
    team = await TeamService(session).update(team_id, data)
    sessionmaker, queue = state.sessionmaker, state.queue
    after_commit(session, lambda: resume_after_commit(sessionmaker, queue, team_id))
    return team_out(team)


@router.post("/teams/{team_id}/suspend")
async def suspend_team(team_id: str, session: SessionDep) -> TeamOut:
    return team_out(await TeamService(session).set_status(team_id, TeamStatus.SUSPENDED))


@router.post("/teams/{team_id}/resume")
async def resume_team(team_id: str, session: SessionDep) -> TeamOut:
    return team_out(await TeamService(session).set_status(team_id, TeamStatus.ACTIVE))


@router.post("/teams/{team_id}/keys", status_code=201)
async def create_key(
    team_id: str, session: SessionDep, data: KeyCreate | None = None
) -> KeyCreated:
    return await TeamService(session).create_key(team_id, data or KeyCreate())


@router.get("/teams/{team_id}/keys")
async def list_keys(team_id: str, session: SessionDep) -> dict[str, Any]:
    keys = await TeamService(session).list_keys(team_id)
    return {"object": "list", "data": [key_out(k) for k in keys], "has_more": False}


@router.delete("/teams/{team_id}/keys/{key_id}")
async def revoke_key(team_id: str, key_id: str, session: SessionDep) -> KeyOut:
    return key_out(await TeamService(session).revoke_key(team_id, key_id))


@router.delete("/teams/{team_id}/data")
async def delete_team_data(team_id: str, session: SessionDep) -> TeamDataDeleted:
    """Delete the team's jobs, calls and webhook events; the team, its keys and billing stay."""
    return await retention.delete_team_data(session, team_id)


class PortalLinkCreate(BaseModel):
    model_config = {"extra": "forbid"}

    session_hours: float | None = Field(
        default=None, gt=0, le=24, description="Length of the portal session it opens (max 24)."
    )


class PortalLinkOut(BaseModel):
    object: str = "portal_link"
    id: str
    team_id: str
    url: str = Field(description="Open in a browser once; valid until expires_at.")
    expires_at: datetime
    session_hours: float


@router.post("/teams/{team_id}/portal-links", status_code=201)
async def create_portal_link(
    team_id: str,
    request: Request,
    session: SessionDep,
    state: StateDep,
    data: PortalLinkCreate | None = None,
) -> PortalLinkOut:
    """A single-use magic link into the team's portal (valid PORTAL_LINK_MINUTES, default 15)."""
    hours = min(
        (data.session_hours if data and data.session_hours else None)
        or state.settings.portal_session_hours,
        state.settings.portal_session_hours,
        24.0,
    )
    minted = await PortalLinks(session).mint(
        team_id,
        created_by="admin-api-key",
        valid_minutes=state.settings.portal_link_minutes,
        session_hours=hours,
    )
    base = str(request.base_url).rstrip("/")
    return PortalLinkOut(
        id=minted.link.id,
        team_id=team_id,
        url=f"{base}/portal/enter/{minted.token}",
        expires_at=minted.link.expires_at,
        session_hours=hours,
    )
