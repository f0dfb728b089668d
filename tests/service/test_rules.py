"""Rules at the service level: admission, idempotency, the rate-limit window, cancel vs claim."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import SessionMaker, transaction
from shared.errors import IdempotencyConflict, LimitExceeded, ModelNotFound, RateLimited
from shared.jobs.lifecycle import CallOutcome, claim_call, finish_call
from shared.jobs.schemas import JobCreate
from shared.jobs.service import JobService
from shared.models import Call, CallStatus, Job, JobStatus, Team
from shared.runtime import Runtime
from shared.teams.limits import RedisRequestLimiter
from tests.harness import REDIS_URL
from tests.service.conftest import CountingLimiter, Factory


def _job(n: int = 1, model: str = "gpt-4o-mini", marker: str = "a") -> JobCreate:
    requests = [
        {"model": model, "messages": [{"role": "user", "content": f"{marker} {i}"}]}
        for i in range(n)
    ]
    return JobCreate.model_validate({"requests": requests})


async def test_idempotent_submission(
    session: AsyncSession, make_job: Factory, runtime: Runtime, limiter: CountingLimiter
) -> None:
    team, _, _ = await make_job(0)
    service = JobService(session, runtime)
    first = await service.submit_batch(team, _job(2), idempotency_key="k1")
    again = await service.submit_batch(team, _job(2), idempotency_key="k1")
    assert first.created and not again.created and again.job.id == first.job.id
    with pytest.raises(IdempotencyConflict):
        await service.submit_batch(team, _job(2, marker="b"), idempotency_key="k1")
    # only the first submission was admitted (and counted against the rate limit)
    assert limiter.consumed == [(team.id, 2)]
    rows = await session.execute(select(Call.id).where(Call.job_id == first.job.id))
    assert len(rows.all()) == 2


async def test_admission_refuses_before_anything_is_stored_or_counted(
    session: AsyncSession, make_job: Factory, runtime: Runtime, limiter: CountingLimiter
) -> None:
    team, existing, _ = await make_job(0, max_requests_per_job=2)
    service = JobService(session, runtime)
    with pytest.raises(LimitExceeded):
        await service.submit_batch(team, _job(3))
    with pytest.raises(ModelNotFound):
        await service.submit_batch(team, _job(1, model="no-such-model"))
    assert limiter.consumed == []
    jobs = await session.execute(select(Job.id).where(Job.team_id == team.id))
    assert jobs.scalars().all() == [existing.id]


async def test_step_calls_pass_the_same_admission(
    session: AsyncSession, make_job: Factory, runtime: Runtime, limiter: CountingLimiter
) -> None:
    team, job, _ = await make_job(0, status=JobStatus.OPEN, max_requests_per_job=1)
    service = JobService(session, runtime)
    request = _job(1).requests[0]
    await service.add_call(team, job.id, request)
    with pytest.raises(LimitExceeded):
        await service.add_call(team, job.id, request.model_copy(update={"custom_id": "x"}))
    assert limiter.consumed == [(team.id, 1)]


async def test_the_rate_window_is_a_calendar_minute() -> None:
    """With an injected clock: 3 per minute, the 4th refused until the minute turns."""
    now = [1_800_000_000.0 + 50]  # 10 s before a minute boundary (1_800_000_000 is one)
    redis = Redis.from_url(REDIS_URL)
    limiter = RedisRequestLimiter(redis, "svc-test:" + uuid.uuid4().hex[:8], clock=lambda: now[0])
    team = Team(id="t-rate", name="t", requests_per_minute=3)
    try:
        await limiter.consume(team, 2)
        await limiter.consume(team, 1)
        with pytest.raises(RateLimited) as refused:
            await limiter.consume(team, 1)
        assert refused.value.headers["Retry-After"] == "10"
        now[0] += 10  # the next minute
        await limiter.consume(team, 3)
        with pytest.raises(LimitExceeded):
            await limiter.consume(team, 4)  # more than a whole minute's worth: 400, not 429
    finally:
        await redis.aclose()


async def _blocked_on_a_lock(session: AsyncSession, pid: int) -> bool:
    row = await session.execute(
        text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
    )
    return row.scalar() == "Lock"


async def test_cancel_waits_for_a_claim_and_the_late_answer_is_discarded(
    sessionmaker: SessionMaker, make_job: Factory, runtime: Runtime
) -> None:
    async with transaction(sessionmaker) as s:
        team, job, (call,) = await make_job(1, db=s)
    try:
        claimer = sessionmaker()
        await claimer.begin()
        claimed = await claim_call(claimer, call.id, 30)  # holds the call's row lock
        assert claimed is not None

        async def cancel() -> Job:
            async with transaction(sessionmaker) as s:
                pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                pids.put_nowait(pid)
                return await JobService(s, runtime).cancel(team, job.id)

        pids: asyncio.Queue[int] = asyncio.Queue()
        cancelling = asyncio.create_task(cancel())
        pid = await pids.get()
        async with sessionmaker() as probe:
            for _ in range(200):  # wait on the database's own state, not on time
                if await _blocked_on_a_lock(probe, pid):
                    break
                await asyncio.sleep(0.02)
            assert await _blocked_on_a_lock(probe, pid), "cancel did not wait for the claim"
        await claimer.commit()
        await claimer.close()
        cancelled = await cancelling
        assert cancelled.status == JobStatus.CANCELLED
        ok = CallOutcome(CallStatus.SUCCEEDED, total_tokens=7)
        async with transaction(sessionmaker) as s:
            assert await finish_call(s, call.id, 1, ok) is None  # the late answer is discarded
        async with sessionmaker() as s:
            row = await s.get(Call, call.id)
            assert row is not None and row.status == CallStatus.CANCELLED
            ended = await s.get(Job, job.id)
            assert ended is not None and ended.total_tokens == 0
    finally:
        async with transaction(sessionmaker) as s:
            await s.execute(delete(Team).where(Team.id == team.id))


async def test_a_claim_after_cancel_finds_nothing(
    sessionmaker: SessionMaker, make_job: Factory, runtime: Runtime
) -> None:
    async with transaction(sessionmaker) as s:
        team, job, (call,) = await make_job(1, db=s)
    try:
        async with transaction(sessionmaker) as s:
            await JobService(s, runtime).cancel(team, job.id)
        async with transaction(sessionmaker) as s:
            assert await claim_call(s, call.id, 30) is None
            row = await s.get(Call, call.id)
            assert row is not None and row.status == CallStatus.CANCELLED and row.attempts == 0
    finally:
        async with transaction(sessionmaker) as s:
            await s.execute(delete(Team).where(Team.id == team.id))


async def test_a_submission_losing_the_idempotency_race_stores_and_holds_nothing(
    session: AsyncSession, make_job: Factory, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from decimal import Decimal

    from shared.billing import ledger

    team, _, _ = await make_job(0, enforce_credits=True)
    await ledger.add_grant(session, await ledger.lock_team(session, team.id), Decimal(5))
    service = JobService(session, runtime)
    first = await service.submit_batch(team, _job(2), idempotency_key="race")
    # The loser's own look-up ran before the winner stored its job: it misses, and its insert
    # meets the winner's key (ON CONFLICT DO NOTHING).
    real = service._idempotent
    misses = iter([None])

    async def late(team: Team, key: str | None, digest: str) -> Job | None:
        return next(misses, None) or await real(team, key, digest)

    monkeypatch.setattr(service, "_idempotent", late)
    again = await service.submit_batch(team, _job(2), idempotency_key="race")
    assert not again.created and again.job.id == first.job.id
    calls = await session.execute(select(Call.job_id).where(Call.team_id == team.id))
    assert calls.scalars().all() == [first.job.id, first.job.id]  # the loser stored none
    reserved = await session.scalar(select(Team.credits_reserved).where(Team.id == team.id))
    assert reserved == first.job.credits_reserved  # only the winner's reservation is held
