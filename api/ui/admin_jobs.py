"""Dashboard job pages: every team's jobs with filters and keyset pages, detail, live, cancel."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select

from api.deps import SessionDep, StateDep
from api.ui.auth import CurrentAdmin, Writer, audit
from api.ui.jobviews import JOB_STATUSES, job_context, job_events, job_filter
from api.ui.web import HTMLRoute, render, secure_headers
from shared.admin import stats
from shared.errors import NotFound
from shared.jobs.service import JobService
from shared.jobs.views import job_out
from shared.models import Job, Team

router = APIRouter(prefix="/admin/jobs", route_class=HTMLRoute, include_in_schema=False)


async def _team_of(session: SessionDep, job_id: str) -> Team:
    row = (
        await session.execute(
            select(Team).join(Job, Job.team_id == Team.id).where(Job.id == job_id)
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return row


@router.get("", response_class=HTMLResponse)
async def jobs(
    request: Request,
    user: CurrentAdmin,
    session: SessionDep,
    team_id: str | None = None,
    status: str | None = None,
    job_type: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: str | None = None,
) -> Response:
    f = job_filter(team_id=team_id, status=status, job_type=job_type, since=since, until=until)
    rows, more = await stats.jobs_page(session, f, before=before, limit=50)
    filters = {
        "team_id": team_id or "",
        "status": status or "",
        "job_type": job_type or "",
        "since": since or "",
        "until": until or "",
    }
    return render(
        request,
        "admin/jobs.html",
        {
            "page": "jobs",
            "jobs": [job_out(j, {}) for j in rows],
            "filters": filters,
            "statuses": JOB_STATUSES,
            "next_before": rows[-1].id if more else None,
            "qs": urlencode({k: v for k, v in filters.items() if v}),
        },
    )


@router.get("/{job_id}", response_class=HTMLResponse)
async def job_page(
    job_id: str, request: Request, user: CurrentAdmin, session: SessionDep, state: StateDep
) -> Response:
    team = await _team_of(session, job_id)
    ctx = await job_context(session, state, team, job_id)
    return render(request, "admin/job.html", {"page": "jobs", "base": "/admin", **ctx})


@router.get("/{job_id}/live", response_class=HTMLResponse)
async def job_live(
    job_id: str, request: Request, user: CurrentAdmin, session: SessionDep, state: StateDep
) -> Response:
    team = await _team_of(session, job_id)
    ctx = await job_context(session, state, team, job_id)
    return render(request, "_job_live.html", {"base": "/admin", **ctx})


@router.get("/{job_id}/events", response_model=None)
async def job_stream(
    job_id: str, request: Request, user: CurrentAdmin, session: SessionDep, state: StateDep
) -> StreamingResponse:
    team = await _team_of(session, job_id)
    return await job_events(request, session, state, team, job_id)


@router.post("/{job_id}/cancel")
async def cancel(
    job_id: str, request: Request, user: Writer, session: SessionDep, state: StateDep
) -> Response:
    team = await _team_of(session, job_id)
    # The service aborts running calls and wakes the job's streams after commit.
    await JobService(session, state).cancel(team, job_id)
    audit(request, session, user, "job.cancel", "job", job_id, team_id=team.id)
    return secure_headers(RedirectResponse(f"/admin/jobs/{job_id}", status_code=303))
