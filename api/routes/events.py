"""Live job status as Server-Sent Events: `GET /api/jobs/{id}/events`.

A stream is woken by the job's notifications (sent after each committed change) and by its
team's (a suspension closes it); it also re-reads the job every `JOBS_EVENTS_POLL_SECONDS`, in
case a notification was missed or Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, cast

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from sqlalchemy import select

from api.deps import SessionDep, StateDep, TeamDep
from shared.config import Settings
from shared.errors import QuotaExceeded
from shared.jobs.service import JobService
from shared.models import JOB_TERMINAL, Team, TeamStatus
from shared.queue import PoolExhausted, Queue, job_channel, team_channel
from shared.runtime import Runtime

router = APIRouter(prefix="/api", tags=["jobs"])
HEARTBEAT_SECONDS = 15.0
LEASE_SECONDS = 60  # a team's stream slot in Redis lives this long unless renewed
log = logging.getLogger("saas_llm.api")

# Take a slot in the team's set of open streams, unless it already holds `limit` live ones.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class StreamSlots:
    """Bounds on open event streams: per process (here) and per team (all processes, Redis).

    Each stream holds a Redis connection and polls Postgres, so both are bounded. The per-team
    count is a sorted set of leases renewed while a stream lives, so a crashed process's streams
    stop counting after LEASE_SECONDS. If Redis is unreachable the per-team bound is skipped
    (logged) and only the per-process one holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.open = 0

    def _key(self, team_id: str) -> str:
        return f"{self.settings.worker_queue_name}:streams:{team_id}"

    async def take(self, redis: Queue, team_id: str) -> str:
        """A slot id, or 429 quota_exceeded."""
        per_process = self.settings.events_max_streams_per_process
        if self.open >= per_process:
            raise QuotaExceeded(
                f"this API process already serves {per_process} event streams; retry shortly",
                limit=per_process,
                setting="EVENTS_MAX_STREAMS_PER_PROCESS",
                retry_after=5,
            )
        slot = uuid.uuid4().hex
        per_team = self.settings.events_max_streams_per_team
        now = time.time()
        args = (str(now), str(per_team), str(now + LEASE_SECONDS), slot, str(LEASE_SECONDS * 2))
        try:
            result = redis.eval(_TAKE_SLOT, 1, self._key(team_id), *args)
            taken = bool(await asyncio.wait_for(cast(Awaitable[Any], result), timeout=2.0))
        except (RedisError, OSError, TimeoutError):
            log.warning("per-team stream bound not checked: Redis unavailable")
            taken = True
        if not taken:
            raise QuotaExceeded(
                f"team {team_id!r} already has {per_team} open event streams; close one",
                limit=per_team,
                setting="EVENTS_MAX_STREAMS_PER_TEAM",
                retry_after=5,
            )
        self.open += 1
        return slot

    async def renew(self, redis: Queue, team_id: str, slot: str) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(
                redis.zadd(self._key(team_id), {slot: time.time() + LEASE_SECONDS}, xx=True), 2.0
            )

    async def give_back(self, redis: Queue, team_id: str, slot: str) -> None:
        self.open -= 1
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(redis.zrem(self._key(team_id), slot), 2.0)


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


async def _subscribe(rt: Runtime, team: Team, job_id: str) -> PubSub:
    """The job's and team's channels; a full pool is a 503, an unreachable Redis falls back to
    polling."""
    pubsub = rt.queue.pubsub()
    try:
        await pubsub.subscribe(job_channel(rt.settings, job_id), team_channel(rt.settings, team.id))
    except PoolExhausted:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        raise
    except (RedisError, OSError):
        pass
    return pubsub


async def _stream(
    request: Request, rt: Runtime, team: Team, job_id: str, first: str, pubsub: PubSub, slot: str
) -> AsyncIterator[bytes]:
    slots: StreamSlots = request.app.state.event_streams
    poll = rt.settings.jobs_events_poll_seconds
    try:
        event_id, last = 1, first
        yield b"retry: 2000\n\n" + _event("job", event_id, first)
        last_sent = renewed = time.monotonic()
        while json.loads(last)["status"] not in JOB_TERMINAL:
            if await request.is_disconnected():
                return
            if time.monotonic() - renewed > LEASE_SECONDS / 3:
                renewed = time.monotonic()
                await slots.renew(rt.queue, team.id, slot)
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
        # A client that goes away cancels this generator; without the shield the first await
        # here would be cancelled too, and the slot and the pool's connection would leak.
        with anyio.CancelScope(shield=True):
            await slots.give_back(rt.queue, team.id, slot)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(pubsub.aclose(), 2.0)  # type: ignore[no-untyped-call]


async def open_job_stream(
    request: Request, state: Runtime, team: Team, job_id: str, first: str
) -> StreamingResponse:
    """The SSE response for a job whose first snapshot is `first` (the API route and the
    dashboard's pages both use it): takes one of the team's stream slots and subscribes."""
    slots: StreamSlots = request.app.state.event_streams
    slot = await slots.take(state.queue, team.id)
    try:
        pubsub = await _subscribe(state, team, job_id)
    except BaseException:
        await slots.give_back(state.queue, team.id, slot)
        raise
    return StreamingResponse(
        _stream(request, state, team, job_id, first, pubsub, slot),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/jobs/{job_id}/events", response_model=None)
async def job_events(
    job_id: str, request: Request, team: TeamDep, session: SessionDep, state: StateDep
) -> StreamingResponse:
    """The job as it changes (`event: job`, the job as `GET /api/jobs/{id}` shows it); the
    stream ends after the job's terminal state, or with `event: error` if the team is suspended."""
    first = (await JobService(session, state).get_out(team, job_id)).model_dump_json()
    return await open_job_stream(request, state, team, job_id, first)
