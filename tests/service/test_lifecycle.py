"""Every way a job ends goes through `end_job`: the event is recorded in the same transaction and
the job's live streams are woken after commit, exactly once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import run_after_commit
from shared.jobs import lifecycle
from shared.jobs.lifecycle import CallOutcome, claim_call, end_job, end_unfinished, finish_call
from shared.jobs.reconciler import DEADLINE, EXPIRED, WORKER_LOST
from shared.jobs.service import JobService
from shared.models import CallStatus, JobStatus, TeamStatus, WebhookEvent
from shared.runtime import Runtime
from tests.service.conftest import Factory, Wakes


async def _events(session: AsyncSession, job_id: str) -> list[str]:
    rows = await session.execute(select(WebhookEvent.type).where(WebhookEvent.job_id == job_id))
    return list(rows.scalars().all())


async def _ended(session: AsyncSession, wakes: Wakes, job_id: str, status: str) -> None:
    """The job's one event is recorded and its wake-up runs once after commit."""
    assert await _events(session, job_id) == [f"job.{status}"]
    await run_after_commit(session)  # what the unit of work does right after its commit
    assert wakes.jobs.count(job_id) == 1


async def test_success_ends_through_the_transition(
    session: AsyncSession, make_job: Factory, wakes: Wakes
) -> None:
    _, job, (first, second) = await make_job(2, call_status=CallStatus.RUNNING)
    ok = CallOutcome(CallStatus.SUCCEEDED, prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert await finish_call(session, first.id, 1, ok) is None  # one call still running
    ended = await finish_call(session, second.id, 1, ok)
    assert ended is not None and ended.status == JobStatus.SUCCEEDED
    assert ended.total_tokens == 10 and ended.finished_at is not None
    await _ended(session, wakes, job.id, "succeeded")


async def test_a_failed_call_fails_the_job(
    session: AsyncSession, make_job: Factory, wakes: Wakes
) -> None:
    _, job, (call,) = await make_job(1, call_status=CallStatus.RUNNING)
    bad = CallOutcome(CallStatus.FAILED, error={"type": "provider_error", "message": "no"})
    ended = await finish_call(session, call.id, 1, bad)
    assert ended is not None and ended.status == JobStatus.FAILED
    assert ended.error is not None and ended.error["type"] == "calls_failed"
    await _ended(session, wakes, job.id, "failed")


async def test_cancel_ends_through_the_transition(
    session: AsyncSession, make_job: Factory, wakes: Wakes, runtime: Runtime
) -> None:
    team, job, calls = await make_job(3)
    cancelled = await JobService(session, runtime).cancel(team, job.id)
    assert cancelled.status == JobStatus.CANCELLED
    for call in calls:
        await session.refresh(call)
        assert call.status == CallStatus.CANCELLED
    await _ended(session, wakes, job.id, "cancelled")


async def test_deadline_fails_what_is_unfinished(
    session: AsyncSession, make_job: Factory, wakes: Wakes
) -> None:
    _, job, _ = await make_job(2, call_status=CallStatus.RUNNING)
    ended = await end_unfinished(session, job.id, CallStatus.FAILED, DEADLINE, job_error=None)
    assert ended is not None and ended.status == JobStatus.FAILED
    await _ended(session, wakes, job.id, "failed")


async def test_expiry_of_an_open_job(
    session: AsyncSession, make_job: Factory, wakes: Wakes
) -> None:
    _, job, _ = await make_job(1, status=JobStatus.OPEN)
    ended = await end_unfinished(session, job.id, CallStatus.CANCELLED, None, job_error=EXPIRED)
    assert ended is not None and ended.status == JobStatus.EXPIRED
    assert ended.error == EXPIRED
    await _ended(session, wakes, job.id, "expired")


async def test_worker_lost_on_every_attempt(
    session: AsyncSession, make_job: Factory, wakes: Wakes
) -> None:
    _, job, (call,) = await make_job(1, call_status=CallStatus.RUNNING)
    ended = await lifecycle.fail_call(session, call.id, WORKER_LOST)
    assert ended is not None and ended.status == JobStatus.FAILED
    await _ended(session, wakes, job.id, "failed")


async def test_a_job_ends_once(session: AsyncSession, make_job: Factory) -> None:
    _, job, (call,) = await make_job(1, call_status=CallStatus.RUNNING)
    ok = CallOutcome(CallStatus.SUCCEEDED, total_tokens=1)
    assert await finish_call(session, call.id, 1, ok) is not None
    # a repeated task, a late answer and the reconciler all find nothing left to do
    assert await finish_call(session, call.id, 1, ok) is None
    assert await lifecycle.maybe_finish_job(session, job.id) is None
    assert (
        await end_unfinished(session, job.id, CallStatus.FAILED, DEADLINE, job_error=None) is None
    )
    with pytest.raises(ValueError, match="already ended"):
        await end_job(session, job, JobStatus.FAILED)
    assert await _events(session, job.id) == ["job.succeeded"]
    await session.refresh(job)
    assert job.total_tokens == 1


async def test_end_job_takes_only_terminal_states(session: AsyncSession, make_job: Factory) -> None:
    _, job, _ = await make_job(1)
    with pytest.raises(ValueError, match="not a terminal"):
        await end_job(session, job, JobStatus.RUNNING)


async def test_a_suspended_teams_calls_stay_queued(
    session: AsyncSession, make_job: Factory
) -> None:
    team, _, (call,) = await make_job(1)
    team.status = TeamStatus.SUSPENDED
    await session.flush()
    assert await claim_call(session, call.id, 30) is None
    await session.refresh(call)
    assert call.status == CallStatus.QUEUED and call.attempts == 0
    team.status = TeamStatus.ACTIVE
    await session.flush()
    claimed = await claim_call(session, call.id, 30)
    assert claimed is not None and claimed.attempts == 1


async def test_a_paused_jobs_calls_wait_and_an_ended_jobs_calls_never_run(
    session: AsyncSession, make_job: Factory
) -> None:
    _, _, (waiting,) = await make_job(1, status=JobStatus.PAUSED)
    assert await claim_call(session, waiting.id, 30) is None
    await session.refresh(waiting)
    assert waiting.status == CallStatus.QUEUED
    _, _, (late,) = await make_job(1, status=JobStatus.CANCELLED)
    assert await claim_call(session, late.id, 30) is None
    await session.refresh(late)
    assert late.status == CallStatus.CANCELLED


async def test_suspending_a_team_wakes_its_streams(
    session: AsyncSession, make_job: Factory, wakes: Wakes
) -> None:
    from shared.teams.service import TeamService

    team, _, _ = await make_job(0)
    await TeamService(session).set_status(team.id, TeamStatus.SUSPENDED)
    await run_after_commit(session)
    assert wakes.teams == [team.id]


async def test_changes_in_one_transaction_wake_a_job_once(
    session: AsyncSession, make_job: Factory, wakes: Wakes
) -> None:
    _, job, calls = await make_job(3)
    for call in calls:
        assert await claim_call(session, call.id, 30) is not None
    ok = CallOutcome(CallStatus.SUCCEEDED, cost_usd=Decimal("0.1"), total_tokens=1)
    for call in calls:
        await finish_call(session, call.id, 1, ok)
    await run_after_commit(session)
    assert wakes.jobs == [job.id]
    await session.refresh(job)
    assert job.cost_usd == Decimal("0.3") and job.status == JobStatus.SUCCEEDED


async def test_a_live_worker_renews_only_its_running_calls_leases(
    session: AsyncSession, make_job: Factory
) -> None:
    from sqlalchemy import func

    from shared.jobs.lifecycle import renew_call_leases

    _, _, (running,) = await make_job(1, call_status=CallStatus.RUNNING)
    _, _, (queued,) = await make_job(1)
    running.lease_until = func.now()
    await session.flush()
    assert await renew_call_leases(session, [running.id, queued.id], 30) == 1
    await session.refresh(running)
    await session.refresh(queued)
    now = (await session.execute(select(func.now()))).scalar_one()
    assert running.lease_until is not None and (running.lease_until - now).total_seconds() == 30
    assert queued.lease_until is None
