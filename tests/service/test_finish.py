"""The worker's finish transaction: a few statements on the wire, and exact when the calls of
one job finish at the same moment."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import cache_key

from shared.billing import ledger
from shared.config import Settings
from shared.db import SessionMaker, autocommit, create_engine, create_sessionmaker, transaction
from shared.jobs.fairness import choose_and_claim
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


@pytest.mark.parametrize("only_call", [False, True])
async def test_a_one_call_job_finishes_in_few_round_trips(
    sessionmaker: SessionMaker, make_job: Factory, service_db: str, only_call: bool
) -> None:
    """With the team its claim read, the call's end, the job's end, its charge, usage rollup
    and event: BEGIN, the call, the end's facts, the end, the event (its endpoints and its
    row; no delivery without endpoints), COMMIT: 5. When the claim saw the job's only call
    (`only_call`, the worker's one-call jobs), the call's statement reads the end's facts: 4."""
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
                ended = await finish_call(
                    s, call.id, 1, OK, team=team, model=call.model_requested, only_call=only_call
                )
            assert ended is not None and ended.status == JobStatus.SUCCEEDED
        assert wire.round_trips <= (4 if only_call else 5), wire.statements
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


FAILED = CallOutcome(CallStatus.FAILED, error={"type": "provider_error", "message": "no"})


def _job_view(job: Job) -> dict[str, object]:
    return {
        k: getattr(job, k)
        for k in (
            "status",
            "error",
            "total_calls",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cost_usd",
            "billed_usd",
            "credits_charged",
            "credits_reserved",
            "expires_at",
        )
    }


@pytest.mark.parametrize("outcome", [OK, FAILED], ids=["succeeded", "failed"])
async def test_the_only_call_ends_its_job_as_the_end_facts_would(
    session: AsyncSession, make_job: Factory, outcome: CallOutcome
) -> None:
    """Two one-call jobs of one team, the same outcome: ended through `_FINISH_LAST` (the
    facts read by the call's statement) and through `_end_facts`, the two jobs, their charges,
    their ledger entries, their events and the team's balance after each are the same."""
    team, _, (a,) = await make_job(1, call_status=CallStatus.RUNNING)
    await ledger.add_grant(session, await ledger.lock_team(session, team.id), Decimal(10))
    _, _, (b,) = await make_job(1, team=team, call_status=CallStatus.RUNNING)
    seen = []
    for call, only_call in ((a, False), (b, True)):
        ended = await finish_call(
            session, call.id, 1, outcome, team=team, model="gpt-4o-mini", only_call=only_call
        )
        assert ended is not None
        assert ended.finished_at is not None
        entries = await session.execute(
            select(CreditEntry.kind, CreditEntry.amount).where(CreditEntry.job_id == ended.id)
        )
        event = (
            await session.execute(select(WebhookEvent).where(WebhookEvent.job_id == ended.id))
        ).scalar_one()
        own = ("id", "job_id", "created_at", "finished_at")  # the job's own id and times
        data = {k: v for k, v in event.payload["data"].items() if k not in own}
        balance = (await ledger.lock_team(session, team.id)).credits_balance
        seen.append((_job_view(ended), list(entries.all()), event.type, data, balance))
    assert seen[0][:4] == seen[1][:4]
    if outcome is OK:
        assert seen[0][0]["status"] == JobStatus.SUCCEEDED
        assert seen[0][1] == [("charge", Decimal(-1))]
        assert (seen[0][4], seen[1][4]) == (Decimal(9), Decimal(8))  # each charged once
    else:
        assert seen[0][0]["status"] == JobStatus.FAILED and seen[0][1] == []
        assert seen[0][4] == seen[1][4] == Decimal(10)  # failed work is not charged


async def test_only_call_falls_back_when_the_job_has_other_calls(
    session: AsyncSession, make_job: Factory
) -> None:
    """A claim's count can be wrong by the finish (a step job gains calls): the statement
    checks the job's row, and a job with another call, or still open, is not ended by it."""
    team, _, (first, second) = await make_job(2, call_status=CallStatus.RUNNING)
    assert await finish_call(session, first.id, 1, OK, only_call=True) is None
    ended = await finish_call(session, second.id, 1, OK, only_call=True)
    assert ended is not None and ended.status == JobStatus.SUCCEEDED
    assert ended.total_tokens == 6
    _, open_job, (call,) = await make_job(
        1, team=team, status=JobStatus.OPEN, call_status=CallStatus.RUNNING
    )
    assert await finish_call(session, call.id, 1, OK, only_call=True) is None
    await session.refresh(open_job)
    assert open_job.status == JobStatus.OPEN and open_job.total_tokens == 3
    assert await finish_call(session, call.id, 1, OK, only_call=True) is None  # once only


async def test_ending_a_job_computes_no_statement_cache_key_again(
    session: AsyncSession, make_job: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLAlchemy finds a statement's compiled SQL by its cache key, computed once per
    statement object. An ORM UPDATE is marked afresh on every execution, and its key, CTEs
    and all, computed again (100-300 µs for the job's end, `python -m bench.cache_keys`): the
    end is a Core UPDATE loaded as `Job` rows instead. After a first job's end, a second
    one's claim and finish compute none."""
    team, _, _ = await make_job(1, call_status=CallStatus.RUNNING)
    await ledger.add_grant(session, await ledger.lock_team(session, team.id), Decimal(10))
    computed: list[str] = []
    real = cache_key.HasCacheKey._generate_cache_key

    def counted(self: cache_key.HasCacheKey) -> Any:
        computed.append(type(self).__name__)
        return real(self)

    for watched in (False, True):
        _, _, (call,) = await make_job(1, team=team, call_status=CallStatus.QUEUED)
        if watched:
            monkeypatch.setattr(cache_key.HasCacheKey, "_generate_cache_key", counted)
        _, claimed = await choose_and_claim(session, call.id, 60)
        assert claimed is not None and claimed.call is not None
        ended = await finish_call(
            session, call.id, 1, OK, team=team, model="gpt-4o-mini", only_call=True
        )
        assert ended is not None and ended.status == JobStatus.SUCCEEDED
        assert ended.credits_charged is not None and ended.credits_charged > 0
    assert computed == []
