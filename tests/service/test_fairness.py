"""The fair claim: a free slot goes to the team with the fewest calls running, and within a
team to the highest priority (`shared.jobs.fairness`)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.jobs.fairness import choose_and_claim, claim_fair
from shared.jobs.lifecycle import TeamBusy
from shared.jobs.schemas import ChatRequest, JobCreate, StepJobCreate
from shared.jobs.service import JobService
from shared.llm.cache import CachePolicy, cache_policy
from shared.models import Call, CallStatus, Job, JobStatus, Priority, TeamStatus
from shared.runtime import Runtime
from tests.service.conftest import Factory


async def _set_priority(session: AsyncSession, calls: list[Call], priority: Priority) -> None:
    await session.execute(
        update(Call).where(Call.id.in_([c.id for c in calls])).values(priority=priority.rank)
    )


async def test_a_flooding_teams_entry_runs_the_other_teams_call(
    session: AsyncSession, make_job: Factory
) -> None:
    flood_team, _, _ = await make_job(4, call_status=CallStatus.RUNNING)
    _, _, flood = await make_job(50, team=flood_team)
    _, _, (single,) = await make_job(1)
    claimed = await claim_fair(session, flood[0].id, 30)
    assert claimed.swapped and claimed.call is not None and claimed.call.id == single.id
    await session.refresh(flood[0])
    assert flood[0].status == CallStatus.QUEUED  # its entry goes back to the queue
    # Now both teams are busy and only the flood is left: the entry runs its own call.
    again = await claim_fair(session, flood[0].id, 30)
    assert not again.swapped and again.call is not None and again.call.id == flood[0].id
    # The other team's own entry finds its call already running: nothing to do.
    assert (await claim_fair(session, single.id, 30)).call is None


async def test_ties_keep_the_entrys_own_call(session: AsyncSession, make_job: Factory) -> None:
    _, _, (a, a2) = await make_job(2)
    _, _, (b,) = await make_job(1)
    claimed = await claim_fair(session, a.id, 30)  # both teams have 0 running
    assert not claimed.swapped and claimed.call is not None and claimed.call.id == a.id
    fair = await claim_fair(session, b.id, 30)  # 1 and 0 running: its own team is the fewest
    assert not fair.swapped and fair.call is not None and fair.call.id == b.id
    # 1, 1 and a new team with none running: the new team's call goes first.
    _, _, (other,) = await make_job(1)
    swapped = await claim_fair(session, a2.id, 30)
    assert swapped.swapped and swapped.call is not None and swapped.call.id == other.id


async def test_high_priority_calls_of_a_team_run_before_its_low_ones(
    session: AsyncSession, make_job: Factory
) -> None:
    team, _, low = await make_job(5)
    await _set_priority(session, low, Priority.LOW)
    _, _, high = await make_job(3, team=team)
    await _set_priority(session, high, Priority.HIGH)
    started = []
    for entry in low + high:  # the queue's order: the low job's entries first
        claimed = await claim_fair(session, entry.id, 30)
        if claimed.call is not None:
            started.append(claimed.call.id)
    # The first three low entries ran the high calls; then the low ones ran their own calls; the
    # high entries found their calls already running.
    assert started == [c.id for c in high] + [low[3].id, low[4].id]


async def test_suspended_busy_and_paused_teams_are_passed_over(
    session: AsyncSession, make_job: Factory
) -> None:
    flood_team, _, flood = await make_job(3)
    suspended, _, _ = await make_job(1)
    suspended.status = TeamStatus.SUSPENDED
    full, _, _ = await make_job(1, call_status=CallStatus.RUNNING, max_calls_in_flight=1)
    await make_job(1, team=full)
    await make_job(2, status=JobStatus.PAUSED)
    await session.flush()
    # Every other team is suspended, at its limit or paused: the flood's entry runs its own call.
    claimed = await claim_fair(session, flood[0].id, 30)
    assert not claimed.swapped and claimed.call is not None and claimed.call.id == flood[0].id
    assert flood_team.id == claimed.call.team_id


async def test_the_jobs_priority_is_stored_on_it_and_its_calls(
    session: AsyncSession, make_job: Factory, runtime: Runtime
) -> None:
    team, _, _ = await make_job(0)
    service = JobService(session, runtime)
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    batch = await service.submit_batch(
        team, JobCreate.model_validate({"requests": [ask, ask], "priority": "high"})
    )
    step = await service.create_step(team, StepJobCreate(priority=Priority.LOW))
    added = await service.add_call(team, step.id, ChatRequest.model_validate(ask))
    default = await service.submit_batch(team, JobCreate.model_validate({"requests": [ask]}))
    assert (batch.job.priority, step.priority, default.job.priority) == ("high", "low", "normal")
    ranks = await session.execute(
        select(Call.job_id, Call.priority).where(Call.team_id == team.id).order_by(Call.job_id)
    )
    assert sorted(ranks.all()) == sorted(
        [(batch.job.id, 0), (batch.job.id, 0), (step.id, 2), (default.job.id, 1)]
    )
    assert added.priority == 2


async def test_a_claim_starts_the_job_and_brings_back_its_deadline_and_team(
    session: AsyncSession, make_job: Factory
) -> None:
    team, job, (call,) = await make_job(1, cache_enabled=True, cache_ttl_seconds=60)
    job.deadline_at = (await session.execute(select(func.now()))).scalar_one()
    await session.flush()
    claimed = await claim_fair(session, call.id, 30)
    assert claimed.call is not None and claimed.call.id == call.id and not claimed.swapped
    assert (claimed.call.status, claimed.call.attempts) == (CallStatus.RUNNING, 1)
    assert claimed.deadline == job.deadline_at
    # The team's row, as the budget reservation, the cache and the price read it.
    assert claimed.team is not None and claimed.team.id == team.id
    assert cache_policy(claimed.team, 10) == CachePolicy(team.id, 60)
    started = (
        await session.execute(select(Job.status, Job.started_at).where(Job.id == job.id))
    ).one()
    assert started.status == JobStatus.RUNNING and started.started_at is not None


async def test_a_team_at_its_limit_is_busy_and_under_it_claims(
    session: AsyncSession, make_job: Factory
) -> None:
    team, _, _ = await make_job(1, call_status=CallStatus.RUNNING, max_calls_in_flight=2)
    _, _, (first, second) = await make_job(2, team=team)
    claimed = await claim_fair(session, first.id, 30)
    assert claimed.call is not None and claimed.call.id == first.id
    with pytest.raises(TeamBusy):
        await claim_fair(session, second.id, 30)
    await session.refresh(second)
    assert second.status == CallStatus.QUEUED and second.attempts == 0


async def test_the_choice_claims_in_its_own_statement_exactly_when_that_claim_is_one_statement(
    session: AsyncSession, make_job: Factory
) -> None:
    """`choose_and_claim` claims the entry's own call in the choice's statement only when
    `_pick` chooses that call and its claim is one statement (`Choice.one_statement`);
    otherwise it claims nothing and leaves the call queued for `claim_fair`."""
    _, _, (plain,) = await make_job(1)
    choice, claimed = await choose_and_claim(session, plain.id, 30)
    assert choice.one_statement and claimed is not None and claimed.call is not None
    assert claimed.call.id == plain.id and claimed.call.status == CallStatus.RUNNING
    assert claimed.team is not None and claimed.job_calls == 1
    # A team with an in-flight limit, or with a budget (its claim reserves), or a call that is
    # not the fair choice: chosen, not claimed.
    _, _, (limited,) = await make_job(1, max_calls_in_flight=2)
    _, _, (budgeted,) = await make_job(1, budget_usd=Decimal("5"))
    busy, _, _ = await make_job(3, call_status=CallStatus.RUNNING)
    _, _, (behind,) = await make_job(1, team=busy)
    for call, instead in ((limited, False), (budgeted, False), (behind, True)):
        choice, claimed = await choose_and_claim(session, call.id, 30)
        assert claimed is None and not choice.one_statement, call
        assert (choice.instead is not None) is instead
        assert choice.own is not None and choice.own.team_id == call.team_id
        await session.refresh(call)
        assert call.status == CallStatus.QUEUED
    # A call not queued any more: nothing to choose.
    choice, claimed = await choose_and_claim(session, plain.id, 30)
    assert choice.own is None and claimed is not None and claimed.call is None
