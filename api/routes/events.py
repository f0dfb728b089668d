"""Live job status as Server-Sent Events: `GET /api/jobs/{id}/events`.

A stream is woken by the job's notifications (sent after each committed change) and by its
team's (a suspension closes it); it also re-reads the job every `JOBS_EVENTS_POLL_SECONDS`, in
case a notification was missed or Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError
from sqlalchemy import select

from api.deps import SessionDep, StateDep, TeamDep
from shared.jobs.service import JobService
from shared.models import JOB_TERMINAL, Team, TeamStatus
from shared.queue import job_channel, team_channel
from shared.runtime import Runtime

router = APIRouter(prefix="/api", tags=["jobs"])
HEARTBEAT_SECONDS = 15.0


def _event(name: str, event_id: int, data: str) -> bytes:
    return f"event: {name}\nid: {event_id}\ndata: {data}\n\n".encode()


async def _snapshot(rt: Runtime, team: Team, job_id: str) -> str | None:
    """The job as JSON, or None once its team is no longer active."""
    async with rt.sessionmaker() as session:
        status = (await session.execute(select(Team.status).where(Team.id == team.id))).scalar()
        if status != TeamStatus.ACTIVE:
            return None
        job = await JobService(session, rt).get_out(team, job_id)
    return job.model_dump_json()


async def job_stream(
    request: Request, rt: Runtime, team: Team, job_id: str, first: str
) -> AsyncIterator[bytes]:
    pubsub = rt.queue.pubsub()
    with contextlib.suppress(RedisError, OSError):
        await pubsub.subscribe(job_channel(rt.settings, job_id), team_channel(rt.settings, team.id))
    poll = rt.settings.jobs_events_poll_seconds
    try:
        event_id, last = 1, first
        yield b"retry: 2000\n\n" + _event("job", event_id, first)
        last_sent = time.monotonic()
        while json.loads(last)["status"] not in JOB_TERMINAL:
            if await request.is_disconnected():
                return
            try:
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll)
            except (RedisError, OSError, RuntimeError):
                await asyncio.sleep(poll)
            current = await _snapshot(rt, team, job_id)
            if current is None:
                error = {"type": "team_suspended", "message": f"team {team.id!r} is suspended"}
                yield _event("error", event_id + 1, json.dumps({"error": error}))
                return
            if current != last:
                event_id += 1
                last = current
                last_sent = time.monotonic()
                yield _event("job", event_id, current)
            elif time.monotonic() - last_sent > HEARTBEAT_SECONDS:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
    finally:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


@router.get("/jobs/{job_id}/events", response_model=None)
async def job_events(
    job_id: str, request: Request, team: TeamDep, session: SessionDep, state: StateDep
) -> StreamingResponse:
    """The job as it changes (`event: job`, the job as `GET /api/jobs/{id}` shows it); the
    stream ends after the job's terminal state, or with `event: error` if the team is suspended."""
    first = (await JobService(session, state).get_out(team, job_id)).model_dump_json()
    return StreamingResponse(
        job_stream(request, state, team, job_id, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
