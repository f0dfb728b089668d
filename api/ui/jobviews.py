"""Job pages shared by the dashboard and the portal: filters, detail, live fragment, SSE."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api.routes.events import open_job_stream
from shared.admin.stats import JobFilter
from shared.errors import BadRequest
from shared.jobs.service import JobService
from shared.models import JOB_TERMINAL, Team
from shared.runtime import Runtime as AppState

JOB_STATUSES = ("open", "queued", "running", "succeeded", "failed", "cancelled", "expired")


def _time(value: str | None, param: str) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(
            f"{param} must be a date or time such as 2026-12-01T10:00", param=param
        ) from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def job_filter(
    *,
    team_id: str | None,
    status: str | None,
    job_type: str | None,
    since: str | None,
    until: str | None,
) -> JobFilter:
    if status and status not in JOB_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(JOB_STATUSES)}", param="status")
    return JobFilter(
        team_id=team_id or None,
        status=status or None,
        job_type=job_type or None,
        since=_time(since, "since"),
        until=_time(until, "until"),
    )


async def job_context(
    session: AsyncSession, state: AppState, team: Team, job_id: str
) -> dict[str, Any]:
    """The job (404 unless it belongs to `team`) and every call with its request."""
    service = JobService(session, state)
    job = await service.get_out(team, job_id)
    calls = await service.calls(team, job_id)
    return {"job": job, "calls": calls, "terminal": job.status in JOB_TERMINAL}


async def job_events(
    request: Request, session: AsyncSession, state: AppState, team: Team, job_id: str
) -> StreamingResponse:
    """The team API's SSE stream of the job, for a page's EventSource."""
    first = (await JobService(session, state).get_out(team, job_id)).model_dump_json()
    await session.close()  # the stream opens a short session per snapshot
    return await open_job_stream(request, state, team, job_id, first)
