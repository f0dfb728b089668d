"""Money over HTTP: a team's credits and usage; the admin's grants, ledgers and usage."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse

from api.deps import AdminDep, SessionDep, StateDep, TeamDep
from api.routes.admin import audit_change
from shared.billing.schemas import (
    CreditsChange,
    CreditsOut,
    EntryOut,
    EntryPage,
    RefundIn,
    UsageOut,
)
from shared.billing.service import CreditsService, parse_window
from shared.billing.usage import to_csv, total, usage
from shared.db import after_commit
from shared.jobs.money import resume_after_commit

router = APIRouter(prefix="/api", tags=["billing"])
# Grants and adjustments are admin changes: audited like the others, in the same transaction.
admin_router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    dependencies=[AdminDep, Depends(audit_change, scope="function")],
)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
Group = Literal["day", "model", "job_type"]


@router.get("/credits")
async def credits(
    team: TeamDep,
    session: SessionDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=200),
) -> CreditsOut:
    """Balance, reserved credits, live grants with their expiry, the budget, recent entries."""
    return await CreditsService(session).overview(team, after=after, limit=limit)


async def _usage(
    request: Request,
    session: SessionDep,
    team_id: str | None,
    start: str | None,
    end: str | None,
    group_by: str,
) -> UsageOut | PlainTextResponse:
    lo, hi = parse_window(start, end)
    rows = await usage(session, team_id, lo, hi, group_by)  # type: ignore[arg-type]
    if "text/csv" in request.headers.get("accept", ""):
        return PlainTextResponse(to_csv(rows), media_type="text/csv")
    return UsageOut(
        team_id=team_id, group_by=group_by, from_=lo, to=hi, data=rows, total=total(rows)
    )


@router.get("/usage", response_model=None)
async def team_usage(
    request: Request,
    team: TeamDep,
    session: SessionDep,
    start: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    group_by: Group = "day",
) -> UsageOut | PlainTextResponse:
    """Jobs, calls, tokens, cost, billed price and credits; JSON, or CSV (`Accept: text/csv`)."""
    return await _usage(request, session, team.id, start, to, group_by)


@admin_router.get("/usage", response_model=None)
async def admin_usage(
    request: Request,
    session: SessionDep,
    team_id: str | None = None,
    start: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    group_by: Literal["day", "model", "job_type", "team"] = "team",
) -> UsageOut | PlainTextResponse:
    """The same across teams (or for `team_id`), also grouped by team."""
    return await _usage(request, session, team_id, start, to, group_by)


@admin_router.post("/teams/{team_id}/credits", status_code=201)
async def change_credits(
    team_id: str,
    data: CreditsChange,
    session: SessionDep,
    state: StateDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> EntryOut:
    """Grant credits (optionally expiring) or adjust the balance; paused work that now fits
    resumes once this commits."""
    entry, created = await CreditsService(session).change(
        team_id, data, idempotency_key=idempotency_key
    )
    if created:
        sessionmaker, queue = state.sessionmaker, state.queue
        after_commit(session, lambda: resume_after_commit(sessionmaker, queue, team_id))
    else:
        response.headers["Idempotent-Replayed"] = "true"
        response.status_code = 200
    return EntryOut.model_validate(entry)


@admin_router.post("/jobs/{job_id}/refund", status_code=201)
async def refund_job(
    job_id: str,
    session: SessionDep,
    state: StateDep,
    request: Request,
    response: Response,
    data: RefundIn | None = None,
    idempotency_key: IdempotencyKey = None,
) -> EntryOut:
    """Refund a job's whole charge, once: a `refund` entry with the balance after it (409 if the
    job has not ended, was not charged or was refunded already). With an `Idempotency-Key`, a
    repeat answers the same entry (200, `Idempotent-Replayed: true`)."""
    entry, created = await CreditsService(session).refund(
        job_id, data or RefundIn(), idempotency_key=idempotency_key
    )
    request.path_params["team_id"] = entry.team_id  # the audit entry's target
    if created:
        sessionmaker, queue, team_id = state.sessionmaker, state.queue, entry.team_id
        after_commit(session, lambda: resume_after_commit(sessionmaker, queue, team_id))
    else:
        response.headers["Idempotent-Replayed"] = "true"
        response.status_code = 200
    return EntryOut.model_validate(entry)


@admin_router.get("/teams/{team_id}/ledger")
async def team_ledger(
    team_id: str,
    session: SessionDep,
    after: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> EntryPage:
    """The team's ledger, newest first, in cursor pages (`after` = the previous `next_cursor`)."""
    return await CreditsService(session).ledger_page(team_id, after=after, limit=limit)
