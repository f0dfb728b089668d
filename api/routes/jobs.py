"""Team API: submit, read, wait for and cancel jobs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import AnyHttpUrl, BaseModel, TypeAdapter
from sqlalchemy import Select, select
from starlette.routing import Match
from starlette.types import Scope

from api.deps import ReadSessionDep, ReadTeamDep, SessionDep, StateDep, TeamDep
from api.middleware import JSONL_TYPES
from shared.db import commit
from shared.errors import BadRequest, ServiceUnavailable
from shared.jobs.jsonl import JsonlOptions, JsonlSubmission
from shared.jobs.money import record_job_paused
from shared.jobs.schemas import (
    PRIORITY_DOC,
    CallOut,
    JobCreate,
    JobList,
    JobOut,
    StepCallCreate,
    StepJobCreate,
)
from shared.jobs.service import JobService
from shared.jobs.views import call_out, job_out
from shared.models import CALL_TERMINAL, Call, CallStatus, JobStatus, Priority
from shared.money import money_str
from shared.queue import enqueue_new_calls
from shared.runtime import Runtime

router = APIRouter(prefix="/api", tags=["jobs"])
log = logging.getLogger("saas_llm.api")
RESULTS_PAGE = 1000
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


def _json(model: BaseModel, status_code: int = 200, replayed: bool = False) -> Response:
    """`model` serialised once by pydantic-core. Returning the model instead makes FastAPI
    dump it, validate it again against the route's response model and encode it a third time;
    the route still declares `response_model` for the OpenAPI document."""
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(
        model.model_dump_json(), status_code, headers=headers, media_type="application/json"
    )


async def _available(state: StateDep) -> list[str]:
    try:
        return await state.catalog.names()
    except Exception as exc:
        raise ServiceUnavailable("the model proxy is unavailable; retry shortly") from exc


@router.get("/models")
async def list_models(team: TeamDep, state: StateDep) -> dict[str, Any]:
    """Models this team may use."""
    names = await _available(state)
    allowed = set(team.allowed_models or [])
    data = [{"id": n, "object": "model"} for n in names if not allowed or n in allowed]
    return {"object": "list", "data": data}


class _JsonlRoute(APIRoute):
    """Matches only requests with a JSONL body, so that `POST /api/jobs` takes both bodies."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and not _is_jsonl(scope):
            return Match.NONE, {}
        return match, child


def _is_jsonl(scope: Scope) -> bool:
    for name, value in scope.get("headers") or []:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() in JSONL_TYPES
    return False


_background: set[asyncio.Task[None]] = set()
_URL = TypeAdapter(AnyHttpUrl)


async def _enqueue_later(state: Runtime, call_ids: list[str]) -> None:
    try:
        await enqueue_new_calls(state.queue, call_ids)
    except Exception:
        log.exception("enqueueing a JSONL job failed; the reconciler will enqueue its calls")


async def submit_jsonl(
    request: Request,
    team: TeamDep,
    session: SessionDep,
    state: StateDep,
    job_type: Annotated[str | None, Query(max_length=100)] = None,
    webhook_url: Annotated[str | None, Query(max_length=2000)] = None,
    timeout_seconds: Annotated[float | None, Query(gt=0, le=3600)] = None,
    deadline_seconds: Annotated[float | None, Query(gt=0, le=7 * 24 * 3600)] = None,
    priority: Annotated[Priority, Query(description=PRIORITY_DOC)] = Priority.NORMAL,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Batch style with a JSONL body (`Content-Type: application/x-ndjson`): one request per
    line, up to `JOBS_MAX_JSONL_REQUESTS`; job fields as query parameters. Read as it arrives
    and stored in one transaction."""
    if idempotency_key is not None:
        raise BadRequest(
            "Idempotency-Key is not supported with a JSONL body; submit JSON for idempotency",
            param="Idempotency-Key",
        )
    if webhook_url is not None:
        try:
            webhook_url = str(_URL.validate_python(webhook_url))
        except ValueError as exc:
            raise BadRequest("webhook_url must be an http(s) URL", param="webhook_url") from exc
    submission = JsonlSubmission(session, state.settings, state.catalog, state.limiter)
    options = JsonlOptions(job_type, webhook_url, timeout_seconds, deadline_seconds, priority)
    job = await submission.submit(team, request.stream(), options)
    if submission.paused:
        await record_job_paused(session, job)  # it waits for credits or budget, not enqueued
    await commit(session)
    if not submission.paused:
        # Enqueued after the answer (a 50,000-call job takes a while); if this process dies
        # first, the reconciler enqueues the queued calls it finds without a queue entry.
        task = asyncio.create_task(_enqueue_later(state, submission.call_ids))
        _background.add(task)
        task.add_done_callback(_background.discard)
    return await JobService(session, state).get_out(team, job.id)


router.add_api_route(
    "/jobs",
    submit_jsonl,
    methods=["POST"],
    status_code=202,
    route_class_override=_JsonlRoute,
    openapi_extra={
        "requestBody": {
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            "required": True,
        }
    },
)


@router.post("/jobs", status_code=202, response_model=JobOut)
async def submit_job(
    data: JobCreate,
    team: TeamDep,
    session: SessionDep,
    state: StateDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Batch style: a job and all its calls, queued at once."""
    service = JobService(session, state)
    # A replay needs nothing but the database: answer it even while the proxy is away.
    if (original := await service.replay(team, data, idempotency_key)) is not None:
        return _json(await service.get_out(team, original.id), 202, replayed=True)
    submitted = await service.submit_batch(team, data, idempotency_key=idempotency_key)
    if not submitted.created:
        return _json(await service.get_out(team, submitted.job.id), 202, replayed=True)
    # Just stored (RETURNING): every call is queued; no need to read it all back.
    return _json(job_out(submitted.job, {CallStatus.QUEUED: len(submitted.call_ids)}), 202)


@router.post("/jobs/create", status_code=201)
async def create_step_job(
    data: StepJobCreate, team: TeamDep, session: SessionDep, state: StateDep
) -> JobOut:
    """Step style (the seed's endpoint): an open job that calls are added to one at a time."""
    job = await JobService(session, state).create_step(team, data)
    return job_out(job, {})


@router.post("/jobs/{job_id}/calls", status_code=202)
async def add_call(
    job_id: str, data: StepCallCreate, team: TeamDep, session: SessionDep, state: StateDep
) -> CallOut:
    """Queue one call on an open job; with `wait` > 0, answer when it ends (or the wait is over)."""
    call = await JobService(session, state).add_call(team, job_id, data)
    if data.wait <= 0:
        return call_out(call)
    await commit(session)  # the wait below must not hold the job's row lock
    wait = min(data.wait, state.settings.jobs_call_wait_max_seconds)
    return call_out(await _wait_for_call(state, team.id, job_id, call.id, wait))


async def _wait_for_call(
    state: StateDep, team_id: str, job_id: str, call_id: str, wait: float
) -> Call:
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        async with state.sessionmaker() as session:
            call = await session.get(Call, call_id)
            assert call is not None and call.team_id == team_id and call.job_id == job_id
            if call.status in CALL_TERMINAL or time.monotonic() >= deadline:
                return call
        await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 1.5, 0.5)


@router.post("/jobs/{job_id}/complete")
async def complete_job(job_id: str, team: TeamDep, session: SessionDep, state: StateDep) -> JobOut:
    """Close an open job; it ends when its last call ends."""
    service = JobService(session, state)
    await service.complete(team, job_id)
    return await service.get_out(team, job_id)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, team: TeamDep, session: SessionDep, state: StateDep) -> JobOut:
    """Stop queued calls from starting and abort running ones; nothing is charged."""
    service = JobService(session, state)
    await service.cancel(team, job_id)
    return await service.get_out(team, job_id)


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    team: ReadTeamDep,
    session: ReadSessionDep,
    state: StateDep,
    status: str | None = None,
    job_type: str | None = None,
    after: str | None = Query(
        default=None, description="Cursor: the last id of the previous page."
    ),
    limit: int = Query(default=20, ge=1, le=100),
) -> Response:
    """The team's jobs, newest first."""
    if status is not None and status not in set(JobStatus):
        raise BadRequest(f"unknown status {status!r}", param="status")
    jobs, has_more = await JobService(session, state).list_out(
        team, status=status, job_type=job_type, after=after, limit=limit
    )
    return _json(
        JobList(data=jobs, has_more=has_more, next_cursor=jobs[-1].id if has_more else None)
    )


@router.get("/jobs/{job_id}", response_model=JobOut)
async def get_job(
    job_id: str,
    team: ReadTeamDep,
    session: ReadSessionDep,
    state: StateDep,
    include_calls: bool = Query(default=False, alias="include_calls"),
) -> Response:
    return _json(
        await JobService(session, state).get_out(team, job_id, include_calls=include_calls)
    )


@router.get("/jobs/{job_id}/calls/{call_id}")
async def get_call(
    job_id: str, call_id: str, team: TeamDep, session: SessionDep, state: StateDep
) -> CallOut:
    call = await JobService(session, state).call(team, job_id, call_id)
    return call_out(call, include_request=True)


def _result_line(call: Any) -> dict[str, Any]:
    """One result in the shape of OpenAI's Batch output."""
    response = None
    if call.status == CallStatus.SUCCEEDED:
        response = {"status_code": 200, "request_id": call.litellm_call_id, "body": call.response}
    error = call.error
    if call.status == CallStatus.CANCELLED and error is None:
        error = {"type": "cancelled", "message": "the call was cancelled"}
    return {
        "id": call.id,
        "custom_id": call.custom_id,
        "status": call.status,
        "response": response,
        "error": error,
        "cost_usd": money_str(call.cost_usd) if call.cost_usd is not None else None,
        "cached": call.cached,
    }


# Every column `_result_line` reads (and only those: the request bodies stay in the database).
RESULT_COLUMNS = (
    Call.id,
    Call.custom_id,
    Call.status,
    Call.response,
    Call.error,
    Call.cost_usd,
    Call.litellm_call_id,
    Call.cached,
)


def _results_query(team_id: str, job_id: str) -> Select[Any]:
    return (
        select(*RESULT_COLUMNS)
        .where(Call.team_id == team_id, Call.job_id == job_id)
        .order_by(Call.custom_id, Call.seq)
    )


async def _jsonl_lines(state: Runtime, team_id: str, job_id: str) -> AsyncIterator[bytes]:
    """Every result, read through a server-side cursor in its own session: constant memory."""
    async with state.sessionmaker() as session:
        rows = await session.stream(
            _results_query(team_id, job_id).execution_options(yield_per=RESULTS_PAGE)
        )
        async for part in rows.partitions():
            yield "".join(json.dumps(_result_line(row)) + "\n" for row in part).encode()


@router.get("/jobs/{job_id}/results", response_model=None)
async def job_results(
    job_id: str,
    request: Request,
    team: TeamDep,
    session: SessionDep,
    state: StateDep,
    after: str | None = Query(
        default=None, description="JSON: the custom_id of the previous page's last result."
    ),
    limit: int = Query(default=RESULTS_PAGE, ge=1, le=RESULTS_PAGE),
) -> Response:
    """Results in custom_id order: JSON pages (`after`, `limit`; `has_more`, `next_cursor`), or
    every result streamed as JSONL with `Accept: application/x-ndjson`."""
    service = JobService(session, state)
    job = await service.get(team, job_id)
    accept = request.headers.get("accept", "")
    if "application/x-ndjson" in accept or "application/jsonl" in accept:
        return StreamingResponse(
            _jsonl_lines(state, team.id, job.id), media_type="application/x-ndjson"
        )
    stmt = _results_query(team.id, job.id).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(Call.custom_id > after)
    rows = (await session.execute(stmt)).all()
    has_more = len(rows) > limit
    lines = [_result_line(row) for row in rows[:limit]]
    return JSONResponse(
        {
            "object": "list",
            "job_id": job.id,
            "status": job.status,
            "data": lines,
            "has_more": has_more,
            "next_cursor": lines[-1]["custom_id"] if has_more else None,
        }
    )
