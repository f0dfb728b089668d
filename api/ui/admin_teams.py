"""Dashboard team pages: search and create, and a team's keys, limits, models, status, portal."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import SessionDep, StateDep
from api.ui.auth import CurrentAdmin, Writer, audit
from api.ui.money_forms import billing_form_values, parse_form
from api.ui.web import HTMLRoute, render, secure_headers
from shared.admin import stats
from shared.admin.service import PortalLinks
from shared.billing.service import CreditsService
from shared.errors import BadRequest
from shared.jobs.repository import JobRepository
from shared.models import TeamStatus
from shared.teams.schemas import KeyCreate, TeamCreate, TeamUpdate
from shared.teams.service import TeamService

router = APIRouter(prefix="/admin/teams", route_class=HTMLRoute, include_in_schema=False)


def _limit(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise BadRequest(f"limits are whole numbers, not {value!r}")
    return int(value)


def _see(path: str) -> Response:
    return secure_headers(RedirectResponse(path, status_code=303))


@router.get("", response_class=HTMLResponse)
async def teams(
    request: Request,
    user: CurrentAdmin,
    session: SessionDep,
    q: str | None = None,
    after: str | None = None,
) -> Response:
    rows, more = await stats.teams_page(session, q=q, after=after, limit=50)
    return render(
        request,
        "admin/teams.html",
        {"page": "teams", "teams": rows, "q": q or "", "next_after": rows[-1].id if more else None},
    )


@router.post("")
async def create_team(
    request: Request,
    user: Writer,
    session: SessionDep,
    team_id: Annotated[str, Form(max_length=64)],
    name: Annotated[str, Form(max_length=200)],
) -> Response:
    data = parse_form(TeamCreate, {"team_id": team_id.strip(), "name": name.strip()})
    team = await TeamService(session).create(data)
    audit(request, session, user, "team.create", "team", team.id, name=team.name)
    return _see(f"/admin/teams/{team.id}")


LEDGER_PAGE = 20


async def _team_page(
    request: Request,
    session: SessionDep,
    team_id: str,
    *,
    status_code: int = 200,
    **extra: Any,
) -> Response:
    service = TeamService(session)
    team = await service.get(team_id)
    keys = await service.list_keys(team_id)
    recent = await JobRepository(session).list(
        team_id, status=None, job_type=None, after=None, limit=10
    )
    # The money views read through the same service as GET /api/credits and the admin ledger.
    credits = await CreditsService(session).overview(
        team, after=request.query_params.get("ledger_after") or None, limit=LEDGER_PAGE
    )
    return render(
        request,
        "admin/team.html",
        {
            "page": "teams",
            "team": team,
            "keys": keys,
            "jobs": recent,
            "credits": credits,
            # A fresh key per rendered grant form: a double submit of that form is one grant.
            "grant_key": secrets.token_urlsafe(18),
            "billing": billing_form_values(team),
            **extra,
        },
        status_code=status_code,
    )


@router.get("/{team_id}", response_class=HTMLResponse)
async def team_page(
    team_id: str, request: Request, user: CurrentAdmin, session: SessionDep
) -> Response:
    return await _team_page(request, session, team_id)


@router.post("/{team_id}/keys", response_class=HTMLResponse)
async def issue_key(
    team_id: str,
    request: Request,
    user: Writer,
    session: SessionDep,
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """The key is in this answer only (rendered, not redirected, so a reload cannot show it)."""
    created = await TeamService(session).create_key(team_id, KeyCreate(name=name.strip()))
    audit(request, session, user, "key.create", "api_key", created.id, team_id=team_id)
    return await _team_page(request, session, team_id, new_key=created)


@router.post("/{team_id}/keys/{key_id}/revoke")
async def revoke_key(
    team_id: str, key_id: str, request: Request, user: Writer, session: SessionDep
) -> Response:
    await TeamService(session).revoke_key(team_id, key_id)
    audit(request, session, user, "key.revoke", "api_key", key_id, team_id=team_id)
    return _see(f"/admin/teams/{team_id}")


@router.post("/{team_id}/settings")
async def update_team(
    team_id: str,
    request: Request,
    user: Writer,
    session: SessionDep,
    name: Annotated[str, Form(max_length=200)],
    allowed_models: Annotated[str, Form(max_length=20000)] = "",
    max_requests_per_job: Annotated[str, Form(max_length=12)] = "",
    max_calls_in_flight: Annotated[str, Form(max_length=12)] = "",
    requests_per_minute: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    models = sorted(
        {m.strip() for m in allowed_models.replace(",", "\n").splitlines() if m.strip()}
    )
    data = parse_form(
        TeamUpdate,
        {
            "name": name.strip(),
            "allowed_models": models,
            "max_requests_per_job": _limit(max_requests_per_job),
            "max_calls_in_flight": _limit(max_calls_in_flight),
            "requests_per_minute": _limit(requests_per_minute),
        },
    )
    await TeamService(session).update(team_id, data)
    audit(
        request,
        session,
        user,
        "team.update",
        "team",
        team_id,
        **data.model_dump(exclude_unset=True),
    )
    return _see(f"/admin/teams/{team_id}?saved=1")


@router.post("/{team_id}/suspend")
async def suspend(team_id: str, request: Request, user: Writer, session: SessionDep) -> Response:
    await TeamService(session).set_status(team_id, TeamStatus.SUSPENDED)
    audit(request, session, user, "team.suspend", "team", team_id)
    return _see(f"/admin/teams/{team_id}")


@router.post("/{team_id}/resume")
async def resume(team_id: str, request: Request, user: Writer, session: SessionDep) -> Response:
    await TeamService(session).set_status(team_id, TeamStatus.ACTIVE)
    audit(request, session, user, "team.resume", "team", team_id)
    return _see(f"/admin/teams/{team_id}")


@router.post("/{team_id}/portal-link", response_class=HTMLResponse)
async def portal_link(
    team_id: str, request: Request, user: Writer, session: SessionDep, state: StateDep
) -> Response:
    minted = await PortalLinks(session).mint(
        team_id,
        created_by=user.email,
        valid_minutes=state.settings.portal_link_minutes,
        session_hours=state.settings.portal_session_hours,
    )
    audit(request, session, user, "portal_link.create", "team", team_id, link_id=minted.link.id)
    url = str(request.base_url).rstrip("/") + f"/portal/enter/{minted.token}"
    return await _team_page(request, session, team_id, portal_url=url, portal_link=minted.link)
