"""The team portal: a team's own jobs, usage and webhooks, opened from a single-use magic link.

Every query goes through the services with the session's team, so another team's job or
delivery answers 404 here exactly as it does on the team API. The portal may be framed by the
origins in PORTAL_FRAME_ANCESTORS (CSP frame-ancestors); its cookie is then SameSite=None.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from api.deps import SessionDep, StateDep
from api.ui import sessions
from api.ui.admin_pages import _range, chart_data, enqueue_deliveries, usage_csv
from api.ui.jobviews import JOB_STATUSES, job_context, job_events, job_filter
from api.ui.web import HTMLRoute, SignInRequired, render, secure_headers
from shared.admin import stats
from shared.admin.service import Actor, AuditLog, PortalLinks
from shared.admin.webhook_test import send_test_event
from shared.billing.service import CreditsService
from shared.errors import BadRequest, Unauthorized
from shared.jobs.views import job_out
from shared.models import Team
from shared.teams.service import TeamService
from shared.webhooks.schemas import EndpointCreate
from shared.webhooks.service import WebhookService

router = APIRouter(prefix="/portal", route_class=HTMLRoute, include_in_schema=False)


def _ancestors(state: StateDep) -> str:
    return " ".join(["'self'", *state.settings.frame_ancestors])


def _samesite(state: StateDep) -> sessions.SameSite:
    """None (and so Secure) when other origins may frame the portal: a cross-site frame gets no
    Lax cookie. Origins on the same site (another port of the same host) would get Lax ones,
    but the setting cannot tell them apart from other sites, so every framed portal uses None."""
    return "none" if state.settings.frame_ancestors else "lax"


async def portal_team(request: Request, session: SessionDep, state: StateDep) -> Team:
    request.state.frame_ancestors = _ancestors(state)
    max_seconds = state.settings.portal_session_hours * 3600
    data = sessions.read(request, state, sessions.PORTAL_COOKIE, max_seconds)
    if data is None:
        raise SignInRequired("/portal/signed-out")
    team = await TeamService(session).get(data.subject)
    if team.status != "active":
        raise Unauthorized(f"team {team.id!r} is {team.status}")
    request.state.portal_team = team
    request.state.csrf_token = data.csrf
    return team


PortalTeam = Annotated[Team, Depends(portal_team)]


async def portal_writer(request: Request, team: PortalTeam) -> Team:
    await sessions.check_csrf(request, request.state.csrf_token)
    return team


PortalWriter = Annotated[Team, Depends(portal_writer)]


def _audit(request: Request, session: SessionDep, team: Team, action: str, target: str) -> None:
    who = Actor(name=f"portal:{team.id}", id=None, source="portal", ip=sessions.client_ip(request))
    AuditLog(session).record(
        who, action, target_type="team", target_id=team.id, detail={"target": target}
    )


def _see(path: str) -> Response:
    return secure_headers(RedirectResponse(path, status_code=303), "'self'")


@router.get("/signed-out", response_class=HTMLResponse)
async def signed_out(request: Request, state: StateDep) -> Response:
    request.state.frame_ancestors = _ancestors(state)
    return render(request, "portal/signed_out.html", status_code=401)


@router.get("/enter/{token}", response_class=HTMLResponse)
async def enter_page(token: str, request: Request, state: StateDep) -> Response:
    """A button, not an automatic sign-in: link scanners that GET the URL cannot spend it."""
    request.state.frame_ancestors = _ancestors(state)
    holder = HTMLResponse("")
    csrf = sessions.pre_session(request, holder, state, _samesite(state))
    page = render(request, "portal/enter.html", {"token": token, "form_csrf": csrf})
    for header in holder.headers.getlist("set-cookie"):
        page.headers.append("set-cookie", header)
    return page


@router.post("/enter/{token}")
async def enter(token: str, request: Request, session: SessionDep, state: StateDep) -> Response:
    request.state.frame_ancestors = _ancestors(state)
    await sessions.check_pre_csrf(request, state)
    link = await PortalLinks(session).redeem(token)
    team = await TeamService(session).get(link.team_id)
    _audit(request, session, team, "portal.enter", link.id)
    response = _see("/portal")
    sessions.issue(
        response,
        state,
        cookie=sessions.PORTAL_COOKIE,
        subject=team.id,
        seconds=min(link.session_seconds, state.settings.portal_session_hours * 3600),
        path="/portal",
        samesite=_samesite(state),
        link_id=link.id,
    )
    return response


@router.post("/logout")
async def logout(request: Request, team: PortalWriter, state: StateDep) -> Response:
    response = _see("/portal/signed-out")
    sessions.clear(response, sessions.PORTAL_COOKIE, "/portal", _samesite(state))
    return response


# -- jobs -------------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def jobs(
    request: Request,
    team: PortalTeam,
    session: SessionDep,
    status: str | None = None,
    job_type: str | None = None,
    before: str | None = None,
) -> Response:
    f = job_filter(team_id=team.id, status=status, job_type=job_type, since=None, until=None)
    rows, more = await stats.jobs_page(session, f, before=before, limit=50)
    return render(
        request,
        "portal/jobs.html",
        {
            "page": "jobs",
            "jobs": [job_out(j, {}) for j in rows],
            "filters": {"status": status or "", "job_type": job_type or ""},
            "statuses": JOB_STATUSES,
            "next_before": rows[-1].id if more else None,
        },
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    job_id: str, request: Request, team: PortalTeam, session: SessionDep, state: StateDep
) -> Response:
    ctx = await job_context(session, state, team, job_id)
    return render(request, "portal/job.html", {"page": "jobs", "base": "/portal", **ctx})


@router.get("/jobs/{job_id}/live", response_class=HTMLResponse)
async def job_live(
    job_id: str, request: Request, team: PortalTeam, session: SessionDep, state: StateDep
) -> Response:
    ctx = await job_context(session, state, team, job_id)
    return render(request, "_job_live.html", {"base": "/portal", **ctx})


@router.get("/jobs/{job_id}/events", response_model=None)
async def job_stream(
    job_id: str, request: Request, team: PortalTeam, session: SessionDep, state: StateDep
) -> StreamingResponse:
    return await job_events(request, session, state, team, job_id)


# -- usage ------------------------------------------------------------------------------------


@router.get("/usage", response_class=HTMLResponse)
async def usage(
    request: Request,
    team: PortalTeam,
    session: SessionDep,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    start, end = _range(since, until)
    u = await stats.usage(session, start, end, team_id=team.id)
    return render(request, "portal/usage.html", {"page": "usage", "u": u, "chart": chart_data(u)})


@router.get("/usage.csv")
async def usage_export(
    team: PortalTeam, session: SessionDep, since: str | None = None, until: str | None = None
) -> Response:
    start, end = _range(since, until)
    u = await stats.usage(session, start, end, team_id=team.id)
    return usage_csv(u, f"usage-{team.id}-{start}-{end}.csv")


# -- credits ----------------------------------------------------------------------------------


@router.get("/credits", response_class=HTMLResponse)
async def credits(
    request: Request, team: PortalTeam, session: SessionDep, after: str | None = None
) -> Response:
    """The team's balance, live grants, budget and ledger: `GET /api/credits`, as a page."""
    overview = await CreditsService(session).overview(team, after=after or None, limit=20)
    return render(request, "portal/credits.html", {"page": "credits", "credits": overview})


# -- webhooks ---------------------------------------------------------------------------------


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks(
    request: Request, team: PortalTeam, session: SessionDep, state: StateDep
) -> Response:
    endpoints, _ = await WebhookService(session, state.settings).list_endpoints(
        team, after=None, limit=100
    )
    return render(request, "portal/webhooks.html", {"page": "webhooks", "endpoints": endpoints})


@router.post("/webhooks", response_class=HTMLResponse)
async def add_endpoint(
    request: Request,
    team: PortalWriter,
    session: SessionDep,
    state: StateDep,
    url: Annotated[str, Form(max_length=2048)],
    description: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    try:
        data = EndpointCreate(url=url.strip(), description=description.strip())
    except ValueError as exc:
        raise BadRequest(
            "url must be an http(s) address such as https://example.com/hooks", param="url"
        ) from exc
    service = WebhookService(session, state.settings)
    created = await service.create_endpoint(team, data)
    _audit(request, session, team, "portal.webhook_endpoint.create", created.id)
    return await _endpoint_page(
        request, session, state, team, created.id, new_secret=created.secret
    )


async def _endpoint_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    team: Team,
    endpoint_id: str,
    **extra: object,
) -> Response:
    service = WebhookService(session, state.settings)
    endpoint = await service.endpoint(team, endpoint_id)
    deliveries, _ = await service.list_deliveries(
        team, status=None, endpoint_id=endpoint.id, event_id=None, after=None, limit=30
    )
    attempts = {
        d.id: await stats.attempts_of(session, d.id, team_id=team.id) for d in deliveries[:10]
    }
    return render(
        request,
        "portal/endpoint.html",
        {
            "page": "webhooks",
            "e": endpoint,
            "deliveries": deliveries,
            "attempts_by": attempts,
            "replay_since": (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
            **extra,
        },
    )


@router.get("/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def endpoint_page(
    endpoint_id: str, request: Request, team: PortalTeam, session: SessionDep, state: StateDep
) -> Response:
    return await _endpoint_page(request, session, state, team, endpoint_id)


@router.post("/webhooks/{endpoint_id}/rotate", response_class=HTMLResponse)
async def rotate(
    endpoint_id: str, request: Request, team: PortalWriter, session: SessionDep, state: StateDep
) -> Response:
    secret = await WebhookService(session, state.settings).rotate_endpoint_secret(team, endpoint_id)
    _audit(request, session, team, "portal.webhook_endpoint.rotate_secret", endpoint_id)
    return await _endpoint_page(
        request, session, state, team, endpoint_id, new_secret=secret.secret
    )


@router.post("/webhooks/{endpoint_id}/test")
async def test_event(
    endpoint_id: str, request: Request, team: PortalWriter, session: SessionDep, state: StateDep
) -> Response:
    endpoint = await WebhookService(session, state.settings).endpoint(team, endpoint_id)
    delivery = await send_test_event(session, endpoint)
    enqueue_deliveries(session, state, [delivery])
    _audit(request, session, team, "portal.webhook_endpoint.test", endpoint_id)
    return _see(f"/portal/webhooks/{endpoint_id}?tested=1")


@router.post("/webhooks/{endpoint_id}/replay")
async def replay(
    endpoint_id: str,
    request: Request,
    team: PortalWriter,
    session: SessionDep,
    state: StateDep,
    since: Annotated[str, Form(max_length=40)],
) -> Response:
    try:
        when = datetime.fromisoformat(since)
    except ValueError as exc:
        raise BadRequest("since must be a time such as 2026-12-01T10:00", param="since") from exc
    requeued = list(
        await WebhookService(session, state.settings).replay_failed(team, endpoint_id, when)
    )
    enqueue_deliveries(session, state, requeued)
    _audit(request, session, team, "portal.webhook_endpoint.replay", endpoint_id)
    return _see(f"/portal/webhooks/{endpoint_id}?replayed={len(requeued)}")


@router.post("/webhooks/deliveries/{delivery_id}/redeliver")
async def redeliver(
    delivery_id: str, request: Request, team: PortalWriter, session: SessionDep, state: StateDep
) -> Response:
    service = WebhookService(session, state.settings)
    delivery = await service.delivery(team, delivery_id)
    requeued = list(await service.redeliver_event(team, delivery.event_id))
    enqueue_deliveries(session, state, requeued)
    _audit(request, session, team, "portal.webhook_event.redeliver", delivery.event_id)
    back = delivery.endpoint_id or ""
    return _see(f"/portal/webhooks/{back}?redelivered=1" if back else "/portal/webhooks")
