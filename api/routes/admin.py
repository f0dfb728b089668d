"""Admin API: teams and their keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from api.deps import AdminDep, SessionDep
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

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[AdminDep])


@router.post("/teams", status_code=201)
async def create_team(data: TeamCreate, session: SessionDep) -> TeamOut:
    return team_out(await TeamService(session).create(data))


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
async def update_team(team_id: str, data: TeamUpdate, session: SessionDep) -> TeamOut:
    return team_out(await TeamService(session).update(team_id, data))


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
