"""Live job status as Server-Sent Events: `GET /api/jobs/{id}/events`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from api.deps import AppState, SessionDep, StateDep, TeamDep
from shared.jobs.service import JobService
from shared.models import JOB_TERMINAL, Team
from shared.queue import job_channel

router = APIRouter(prefix="/api", tags=["jobs"])
POLL_SECONDS = 2.0  # fallback when a notification is missed (or Redis is away)
HEARTBEAT_SECONDS = 15.0


def _event(name: str, event_id: int, data: str) -> bytes:
    return f"event: {name}\nid: {event_id}\ndata: {data}\n\n".encode()


async def _snapshot(state: AppState, team: Team, job_id: str) -> str:
    async with state.sessionmaker() as session:
        job = await JobService(session, state.settings).get_out(team, job_id)
    return job.model_dump_json()


async def _stream(
    request: Request, state: AppState, team: Team, job_id: str, first: str
) -> AsyncIterator[bytes]:
    pubsub = state.queue.pubsub()
    with contextlib.suppress(RedisError, OSError):
        await pubsub.subscribe(job_channel(state.settings, job_id))
    try:
        event_id, last = 1, first
        yield b"retry: 2000\n\n" + _event("job", event_id, first)
        last_sent = time.monotonic()
        while json.loads(last)["status"] not in JOB_TERMINAL:
            if await request.is_disconnected():
                return
            try:
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_SECONDS)
            except (RedisError, OSError, RuntimeError):
                await asyncio.sleep(POLL_SECONDS)
            current = await _snapshot(state, team, job_id)
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
    stream ends after the job's terminal state."""
    first = (await JobService(session, state.settings).get_out(team, job_id)).model_dump_json()
    return StreamingResponse(
        _stream(request, state, team, job_id, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
