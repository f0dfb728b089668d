"""The worker's finish transaction: a few statements on the wire, and exact when the calls of
one job finish at the same moment."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import delete, select

from shared.billing import ledger
from shared.config import Settings
from shared.db import SessionMaker, autocommit, create_engine, create_sessionmaker, transaction
from shared.jobs.lifecycle import CallOutcome, finish_call, finish_call_alone
from shared.llm.runner import _finish
from shared.models import CallStatus, CreditEntry, Job, JobStatus, Team, WebhookEvent
from shared.runtime import Runtime
from tests.pgwire import WireCounter
from tests.service.conftest import Factory

OK = CallOutcome(
    CallStatus.SUCCEEDED,
    prompt_tokens=2,
    completion_tokens=1,
    total_tokens=3,
    cost_usd=Decimal("0.01"),
)


@contextlib.asynccontextmanager
async def _counted(
    sessionmaker: SessionMaker, service_db: str, team: Team
) -> AsyncIterator[tuple[WireCounter, SessionMaker]]:
    """Sessions on one connection whose round trips `WireCounter` counts; deletes `team` after."""
    wire = WireCounter()
    wire.start()
    engine = create_engine(Settings(database_url=wire.route(service_db)), pool_size=1)
    try:
        yield wire, create_sessionmaker(engine)
    finally:
        await engine.dispose()
        wire.stop()
        async with transaction(sessionmaker) as s:
            await s.execute(delete(Team).where(Team.id == team.id))


async def _team_with_credits(sessionmaker: SessionMaker, **fields: object) -> Team:
    async with transaction(sessionmaker) as s:
        team = Team(id="t-" + uuid.uuid4().hex[:10], name="t", **fields)
        s.add(team)
        await s.flush()
        await ledger.add_grant(s, await ledger.lock_team(s, team.id), Decimal(10))
        return team


async def _ended_once(sessionmaker: SessionMaker, job_id: str, team_id: str) -> None:
    """The 12-call job of these tests ended once: its totals, one charge, one event."""
    async with transaction(sessionmaker) as s:
        row = (
            await s.execute(
                select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
            )
        ).scalar_one()
        assert row.status == JobStatus.SUCCEEDED
        assert (row.total_tokens, row.cost_usd, row.credits_charged) == (36, Decimal("0.12"), 1)
        events = await s.execute(select(WebhookEvent.type).where(WebhookEvent.job_id == job_id))
        assert list(events.scalars()) == ["job.succeeded"]
        locked = await ledger.lock_team(s, team_id)
        assert locked.credits_balance == 9 == await ledger.ledger_sum(s, team_id)


@pytest.mark.parametrize("path", ["one transaction", "alone"])
async def test_calls_finishing_together_end_their_job_once(
    sessionmaker: SessionMaker, make_job: Factory, runtime: Runtime, path: str
) -> None:
    """Both ways a call ends: in one transaction with its job's end (`finish_call`), and the
    worker's way for a job of several calls of a team without a budget (`_finish`: the end
    commits by itself, and whichever ends see no call left hand the job to its end)."""
    team = await _team_with_credits(sessionmaker)
    assert team.budget_usd is None
    try:
        async with transaction(sessionmaker) as s:
            _, job, calls = await make_job(12, team=team, db=s, call_status=CallStatus.RUNNING)

        async def finish(call_id: str) -> Job | None:
            if path == "alone":
                return await _finish(
                    runtime, call_id, 1, OK, team=team, model="gpt-4o-mini", job_calls=12
                )
            async with transaction(sessionmaker) as s:
                return await finish_call(s, call_id, 1, OK)

        ended = await asyncio.gather(*(finish(c.id) for c in calls))
        assert sum(e is not None for e in ended) == 1
        assert await finish(calls[0].id) is None  # a second answer for it is discarded
        await _ended_once(sessionmaker, job.id, team.id)
    finally:
        async with transaction(sessionmaker) as s:
            await s.execute(delete(Team).where(Team.id == team.id))


async def test_a_one_call_job_finishes_in_few_round_trips(
    sessionmaker: SessionMaker, make_job: Factory, service_db: str
) -> None:
    """With the team its claim read, the call's end, the job's end, its charge, usage rollup
    and event: BEGIN, the call, the end's facts, the end, the event (its endpoints and its
    row; no delivery without endpoints), COMMIT."""
    team = await _team_with_credits(sessionmaker)
    async with _counted(sessionmaker, service_db, team) as (wire, counted):
        async with transaction(sessionmaker) as s:
            calls = [
                (await make_job(1, team=team, db=s, call_status=CallStatus.RUNNING))[2][0]
                for _ in range(2)
            ]
        for call in calls:  # the first connects and prepares the statements: not counted
            wire.reset()
            async with transaction(counted) as s:
                ended = await finish_call(s, call.id, 1, OK, team=team, model=call.model_requested)
            assert ended is not None and ended.status == JobStatus.SUCCEEDED
        assert wire.round_trips <= 7, wire.statements
        job = ended
        async with transaction(sessionmaker) as s:
            charged = await s.execute(
                select(CreditEntry.amount).where(CreditEntry.job_id == job.id)
            )
            assert list(charged.scalars()) == [Decimal(-1)]


async def test_a_call_ended_alone_leaves_its_job_unlocked_and_takes_two_round_trips(
    sessionmaker: SessionMaker, make_job: Factory, service_db: str
) -> None:
    """Not the job's last call: its end and the probe for a live call, each committed by
    itself; the job's row is free as soon as the end's statement has run."""
    team = await _team_with_credits(sessionmaker)
    async with _counted(sessionmaker, service_db, team) as (wire, counted):
        async with transaction(sessionmaker) as s:
            _, job, calls = await make_job(3, team=team, db=s, call_status=CallStatus.RUNNING)
        for call in calls[:2]:  # the first connects and prepares the statements: not counted
            wire.reset()
            async with autocommit(counted) as s:
                last = await finish_call_alone(s, call.id, 1, OK, team=team, model="gpt-4o-mini")
                assert last is None  # calls[2] is still running
                # The session is still open; another transaction can lock the job at once.
                async with transaction(sessionmaker) as other:
                    await other.execute(
                        select(Job.id).where(Job.id == job.id).with_for_update(nowait=True)
                    )
        assert wire.round_trips <= 2, wire.statements
        async with autocommit(counted) as s:
            last = await finish_call_alone(s, calls[2].id, 1, OK, team=team, model="gpt-4o-mini")
        assert last == job.id
