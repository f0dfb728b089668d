"""Money rules at the service level: burn order, expiry, periods with an injected clock, the
guarded budget reservation under real concurrency, settlement once, thresholds once, caps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing import budget as budgets
from shared.billing import ledger
from shared.billing.periods import next_period_start, period_start, set_clock
from shared.db import SessionMaker, transaction
from shared.errors import BudgetExceeded, InsufficientCredits, LimitExceeded
from shared.jobs import money
from shared.jobs.lifecycle import CallOutcome, claim_call, finish_call
from shared.jobs.money import reserve_for_call
from shared.jobs.schemas import JobCreate
from shared.jobs.service import JobService
from shared.models import (
    BudgetPeriod,
    Call,
    CallStatus,
    CreditEntry,
    CreditGrant,
    Job,
    JobStatus,
    Team,
    WebhookEvent,
)
from shared.runtime import Runtime
from tests.service.conftest import Factory

T0 = datetime(2026, 3, 31, 23, 59, 0, tzinfo=UTC)  # a Tuesday, the last minute of March


@pytest.fixture(autouse=True)
def fixed_worst_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the reservation's mechanics: each call's worst case is the amount
    the test gives it (`max_billed_usd`), not LiteLLM's count of its prompt (which
    tests/service/test_worst_case.py checks)."""

    async def given(team: Team, call: Call) -> Decimal | None:
        return call.max_billed_usd

    monkeypatch.setattr(money, "call_worst_case", given)


@pytest.fixture
def now() -> Iterator[list[datetime]]:
    """An injected clock for money code: set `now[0]`."""
    current = [T0]
    set_clock(lambda: current[0])
    yield current
    set_clock(None)


def _job(count: int = 1, **params: object) -> JobCreate:
    req = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **params}
    return JobCreate.model_validate({"requests": [dict(req) for _ in range(count)]})


async def _team(session: AsyncSession, **fields: object) -> Team:
    team = Team(id="t-" + uuid.uuid4().hex[:10], name="t", **fields)
    session.add(team)
    await session.flush()
    return team


async def _balance_is_ledger(session: AsyncSession, team: Team) -> Decimal:
    await session.refresh(team)
    assert await ledger.ledger_sum(session, team.id) == team.credits_balance
    return Decimal(team.credits_balance)


def test_periods_are_utc_calendar_boundaries() -> None:
    assert period_start(T0, "day") == datetime(2026, 3, 31, tzinfo=UTC)
    assert period_start(T0, "week") == datetime(2026, 3, 30, tzinfo=UTC)  # Monday
    assert period_start(T0, "month") == datetime(2026, 3, 1, tzinfo=UTC)
    assert next_period_start(T0, "month") == datetime(2026, 4, 1, tzinfo=UTC)
    assert next_period_start(T0, "week") == datetime(2026, 4, 6, tzinfo=UTC)
    later = T0 + timedelta(minutes=2)  # April 1st, 00:01
    assert period_start(later, "day") == datetime(2026, 4, 1, tzinfo=UTC)
    assert period_start(later, "week") == datetime(2026, 3, 30, tzinfo=UTC)  # same week


async def test_grants_burn_earliest_expiry_first_then_oldest(
    session: AsyncSession, now: list[datetime]
) -> None:
    team = await _team(session)
    locked = await ledger.lock_team(session, team.id)
    never = await ledger.add_grant(session, locked, Decimal(5))
    late = await ledger.add_grant(session, locked, Decimal(5), expires_at=T0 + timedelta(days=9))
    soon_old = await ledger.add_grant(
        session, locked, Decimal(3), expires_at=T0 + timedelta(days=2)
    )
    now[0] = T0 + timedelta(seconds=1)
    soon_new = await ledger.add_grant(
        session, locked, Decimal(3), expires_at=T0 + timedelta(days=2)
    )
    await ledger.debit(session, locked, "charge", Decimal(7))
    remaining = {
        g.id: g.remaining
        for g in (await session.execute(select(CreditGrant).where(CreditGrant.team_id == team.id)))
        .scalars()
        .all()
    }
    assert remaining[soon_old.grant_id] == 0  # type: ignore[index]
    assert remaining[soon_new.grant_id] == 0  # type: ignore[index]
    assert remaining[late.grant_id] == 4  # type: ignore[index]
    assert remaining[never.grant_id] == 5  # type: ignore[index]
    assert await _balance_is_ledger(session, team) == 9


async def test_an_expired_remainder_leaves_by_an_expiry_entry(
    session: AsyncSession, now: list[datetime]
) -> None:
    team = await _team(session)
    locked = await ledger.lock_team(session, team.id)
    await ledger.add_grant(session, locked, Decimal(10), expires_at=T0 + timedelta(hours=1))
    await ledger.add_grant(session, locked, Decimal(2))
    await ledger.debit(session, locked, "charge", Decimal(4))  # from the expiring grant
    assert await ledger.expire_grants(session) == 0  # not yet
    now[0] = T0 + timedelta(hours=1)
    assert await ledger.expire_grants(session) == 1
    assert await ledger.expire_grants(session) == 0  # once
    kinds = (
        await session.execute(
            select(CreditEntry.kind, CreditEntry.amount)
            .where(CreditEntry.team_id == team.id)
            .order_by(CreditEntry.id)
        )
    ).all()
    assert kinds[-1] == ("expiry", Decimal(-6))
    assert await _balance_is_ledger(session, team) == 2


async def test_monthly_allowance_once_per_month(session: AsyncSession, now: list[datetime]) -> None:
    team = await _team(session, monthly_allowance=Decimal(50))
    granted = await ledger.grant_allowances(session)
    assert team.id in granted
    assert team.id not in await ledger.grant_allowances(session)
    now[0] = T0 + timedelta(minutes=2)  # April
    assert team.id in await ledger.grant_allowances(session)
    assert await ledger.expire_grants(session) == 1  # March's allowance ended with March
    assert await _balance_is_ledger(session, team) == 50


async def _running_call(
    session: AsyncSession, make_job: Factory, team: Team, max_billed: str
) -> Call:
    _, _, (call,) = await make_job(1, team=team)
    call.max_billed_usd = Decimal(max_billed)
    await session.flush()
    claimed = await claim_call(session, call.id, 60)
    assert claimed is not None
    return claimed


async def test_a_reservation_is_settled_in_the_period_it_was_made(
    session: AsyncSession, make_job: Factory, now: list[datetime]
) -> None:
    team = await _team(session, budget_usd=Decimal("1"), budget_period="day")
    call = await _running_call(session, make_job, team, "0.4")
    assert await reserve_for_call(session, call) is None
    now[0] = T0 + timedelta(minutes=2)  # the day turns while the call runs
    ok = CallOutcome(
        CallStatus.SUCCEEDED,
        prompt_tokens=10,
        completion_tokens=10,
        total_tokens=20,
        cost_usd=Decimal("0.25"),
    )
    await finish_call(session, call.id, call.attempts, ok)
    rows = {
        r.period_start: (r.spent_usd, r.reserved_usd)
        for r in (
            await session.execute(select(BudgetPeriod).where(BudgetPeriod.team_id == team.id))
        )
        .scalars()
        .all()
    }
    assert rows == {period_start(T0, "day"): (Decimal("0.25"), Decimal(0))}
    st = await budgets.state(session, team)
    assert st is not None and st.spent_usd == 0 and st.period_start == period_start(now[0], "day")


async def test_a_refused_call_fails_with_budget_exceeded_and_releases_nothing(
    session: AsyncSession, make_job: Factory, now: list[datetime]
) -> None:
    team = await _team(session, budget_usd=Decimal("1"), budget_thresholds=[100])
    first = await _running_call(session, make_job, team, "0.6")
    second = await _running_call(session, make_job, team, "0.6")
    assert await reserve_for_call(session, first) is None
    refused = await reserve_for_call(session, second)
    assert refused is not None and refused["type"] == "budget_exceeded"
    assert refused["remaining_usd"] == "0.4"
    # the refusal announces the exhausted budget once
    await reserve_for_call(session, second)
    events = (
        await session.execute(
            select(WebhookEvent.type).where(
                WebhookEvent.team_id == team.id, WebhookEvent.type.like("budget.%")
            )
        )
    ).scalars()
    assert list(events) == ["budget.threshold_crossed"]
    await session.refresh(second)
    assert second.budget_reserved_usd is None


async def test_thresholds_fire_once_each_per_period(
    session: AsyncSession, make_job: Factory, now: list[datetime]
) -> None:
    team = await _team(session, budget_usd=Decimal("1"), budget_thresholds=[50, 80, 100])

    async def spend(cost: str) -> None:
        call = await _running_call(session, make_job, team, cost)  # worst case = real price
        assert await reserve_for_call(session, call) is None
        outcome = CallOutcome(
            CallStatus.SUCCEEDED,
            prompt_tokens=1,
            completion_tokens=1,
            total_tokens=2,
            cost_usd=Decimal(cost),
        )
        await finish_call(session, call.id, call.attempts, outcome)

    for cost in ("0.3", "0.25", "0.1", "0.1"):  # 30 %, 55 %, 65 %, 75 %
        await spend(cost)
    await spend("0.1")  # 85 %
    rows = await session.execute(
        select(WebhookEvent.payload).where(
            WebhookEvent.team_id == team.id, WebhookEvent.type == "budget.threshold_crossed"
        )
    )
    crossed = [p["data"]["threshold_pct"] for p in rows.scalars()]
    assert crossed == [50, 80]


async def test_settlement_charges_a_succeeded_job_once_and_a_failed_one_never(
    session: AsyncSession, make_job: Factory, now: list[datetime]
) -> None:
    team = await _team(session)
    locked = await ledger.lock_team(session, team.id)
    await ledger.add_grant(session, locked, Decimal(10))
    _, _, (g,) = await make_job(1, team=team, call_status=CallStatus.RUNNING)
    _, _, (b,) = await make_job(1, team=team, call_status=CallStatus.RUNNING)
    ok = CallOutcome(CallStatus.SUCCEEDED, prompt_tokens=1, completion_tokens=1, total_tokens=2)
    failed = CallOutcome(CallStatus.FAILED, error={"type": "x", "message": "x"})
    ended = await finish_call(session, g.id, 1, ok)
    assert ended is not None and ended.credits_charged == 1
    assert await finish_call(session, g.id, 1, ok) is None  # a repeated task
    ended = await finish_call(session, b.id, 1, failed)
    assert ended is not None and ended.status == JobStatus.FAILED and ended.credits_charged == 0
    assert await _balance_is_ledger(session, team) == 9


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("usd", Decimal("100") * Decimal("0.0012")), ("tokens", Decimal("1.5"))],
)
async def test_usd_and_tokens_modes_charge_the_succeeded_calls(
    session: AsyncSession, make_job: Factory, mode: str, expected: Decimal
) -> None:
    team = await _team(
        session, billing_mode=mode, price_markup_pct=Decimal(20), tokens_per_credit=1000
    )
    _, _, calls = await make_job(2, team=team, call_status=CallStatus.RUNNING)
    outcome = CallOutcome(
        CallStatus.SUCCEEDED,
        prompt_tokens=500,
        completion_tokens=250,
        total_tokens=750,
        cost_usd=Decimal("0.0005"),
    )
    for call in calls:
        ended = await finish_call(session, call.id, 1, outcome)
    assert ended is not None
    assert ended.billed_usd == Decimal("0.0012")  # 2 x 0.0005 x 1.2
    assert ended.credits_charged == expected
    assert await _balance_is_ledger(session, team) == -expected


async def test_admission_caps_and_default_max_tokens(
    session: AsyncSession, runtime: Runtime
) -> None:
    team = await _team(session, max_n=2, max_tokens_cap=100, default_max_tokens=500)
    service = JobService(session, runtime)
    with pytest.raises(LimitExceeded) as n_error:
        await service.submit_batch(team, _job(1, n=3))
    assert n_error.value.param == "requests[0].n"
    with pytest.raises(LimitExceeded):
        await service.submit_batch(team, _job(1, max_tokens=101))
    submitted = await service.submit_batch(team, _job(1))
    call = (await session.execute(select(Call).where(Call.job_id == submitted.job.id))).scalar()
    assert call is not None and call.request["max_tokens"] == 100  # the default, within the cap
    assert call.max_billed_usd is not None and call.max_tokens is not None


async def test_reject_answers_402_with_what_is_left(
    session: AsyncSession, runtime: Runtime
) -> None:
    team = await _team(session, enforce_credits=True)
    service = JobService(session, runtime)
    with pytest.raises(InsufficientCredits) as no_credits:
        await service.submit_batch(team, _job(1))
    assert no_credits.value.extra["available"] == "0"
    assert no_credits.value.status_code == 402
    team2 = await _team(session, budget_usd=Decimal("0.000001"))
    with pytest.raises(BudgetExceeded) as no_budget:
        await service.submit_batch(team2, _job(1))
    assert no_budget.value.extra["remaining_usd"] == "0.000001"
    assert no_budget.value.status_code == 402


async def test_pause_accepts_the_job_paused_and_a_grant_resumes_it(
    session: AsyncSession, runtime: Runtime
) -> None:
    from shared.jobs.money import resume_paused

    team = await _team(session, enforce_credits=True, on_limit="pause")
    service = JobService(session, runtime)
    submitted = await service.submit_batch(team, _job(1))
    assert submitted.job.status == JobStatus.PAUSED
    assert submitted.job.pause_reason == "insufficient_credits"
    assert await resume_paused(session, team.id) == []  # still no credits
    locked = await ledger.lock_team(session, team.id)
    await ledger.add_grant(session, locked, Decimal(1))
    resumed = await resume_paused(session, team.id)
    assert len(resumed) == 1
    job = (
        await session.execute(
            select(Job).where(Job.id == submitted.job.id).execution_options(populate_existing=True)
        )
    ).scalar_one()
    assert job.status == JobStatus.QUEUED and job.credits_reserved == 1
    events = (
        await session.execute(select(WebhookEvent.type).where(WebhookEvent.job_id == job.id))
    ).scalars()
    assert list(events) == ["job.paused", "job.resumed"]


async def test_concurrent_reservations_never_pass_the_budget(
    sessionmaker: SessionMaker, make_job: Factory, now: list[datetime]
) -> None:
    """20 real transactions race for a budget that holds 7 worst cases: exactly 7 win."""
    team_id = "t-" + uuid.uuid4().hex[:10]
    async with transaction(sessionmaker) as s:
        s.add(Team(id=team_id, name="t", budget_usd=Decimal("0.7"), budget_thresholds=[]))
        await s.flush()
        team = await s.get(Team, team_id)
        assert team is not None
        calls = []
        for _ in range(20):
            _, _, (call,) = await make_job(1, team=team, db=s)
            call.max_billed_usd = Decimal("0.1")
            calls.append(call.id)
        await s.flush()

    async def attempt(call_id: str) -> bool:
        async with transaction(sessionmaker) as s:
            claimed = await claim_call(s, call_id, 60)
            assert claimed is not None
            return await reserve_for_call(s, claimed) is None

    try:
        results = await asyncio.gather(*(attempt(c) for c in calls))
        assert sum(results) == 7
        async with transaction(sessionmaker) as s:
            row = (
                await s.execute(select(BudgetPeriod).where(BudgetPeriod.team_id == team_id))
            ).scalar_one()
            assert row.reserved_usd == Decimal("0.7") and row.spent_usd == 0
    finally:
        async with transaction(sessionmaker) as s:
            await s.execute(delete(Team).where(Team.id == team_id))


async def test_refusals_and_settlements_race_without_deadlock_or_overspend(
    sessionmaker: SessionMaker, make_job: Factory
) -> None:
    """40 workers' transactions at once: claim, reserve, then either fail with budget_exceeded
    (ending the job: settlement locks the team) or run and settle. No deadlock (the team lock
    must not wait for foreign-key share locks), and the budget holds."""
    from shared.llm.runner import _refused

    team_id = "t-" + uuid.uuid4().hex[:10]
    async with transaction(sessionmaker) as s:
        s.add(Team(id=team_id, name="t", budget_usd=Decimal("1.0"), budget_thresholds=[100]))
        await s.flush()
        team = await s.get(Team, team_id)
        assert team is not None
        calls = []
        for _ in range(40):
            _, _, (call,) = await make_job(1, team=team, db=s)
            call.max_billed_usd = Decimal("0.1")
            calls.append(call.id)

    async def run(call_id: str) -> str:
        async with transaction(sessionmaker) as s:
            claimed = await claim_call(s, call_id, 60)
            assert claimed is not None
            refused = await reserve_for_call(s, claimed)
            if refused is not None:
                return await _refused(s, claimed, refused)
        await asyncio.sleep(0.01)  # the provider request
        outcome = CallOutcome(
            CallStatus.SUCCEEDED,
            prompt_tokens=1,
            completion_tokens=1,
            total_tokens=2,
            cost_usd=Decimal("0.05"),
        )
        async with transaction(sessionmaker) as s:
            await finish_call(s, call_id, 1, outcome)
        return "succeeded"

    try:
        results = await asyncio.gather(*(run(c) for c in calls))
        assert set(results) == {"succeeded", "failed"} and results.count("succeeded") >= 10
        async with transaction(sessionmaker) as s:
            row = (
                await s.execute(select(BudgetPeriod).where(BudgetPeriod.team_id == team_id))
            ).scalar_one()
            assert row.reserved_usd == 0
            assert row.spent_usd == Decimal("0.05") * results.count("succeeded") <= 1
            assert row.thresholds_fired == [100]
            failed = (
                await s.execute(
                    select(Call.error).where(
                        Call.team_id == team_id, Call.status == CallStatus.FAILED
                    )
                )
            ).scalars()
            assert {e["type"] for e in failed} == {"budget_exceeded"}
    finally:
        async with transaction(sessionmaker) as s:
            await s.execute(delete(Team).where(Team.id == team_id))


async def test_reconciler_releases_a_dead_workers_reservation_and_resumes_at_a_new_period(
    sessionmaker: SessionMaker, make_job: Factory, now: list[datetime]
) -> None:
    """A worker died holding a reservation: the reconciler hands the call back and releases it.
    A job paused at the budget stays paused until the day turns, then resumes by itself."""
    from sqlalchemy import update

    from shared.config import Settings
    from shared.jobs import reconciler
    from shared.queue import create_queue
    from tests.harness import REDIS_URL

    team_id = "t-" + uuid.uuid4().hex[:10]
    settings = Settings(redis_url=REDIS_URL, worker_queue_name="svc-money:" + uuid.uuid4().hex[:8])
    queue = await create_queue(settings)
    try:
        async with transaction(sessionmaker) as s:
            s.add(
                Team(
                    id=team_id,
                    name="t",
                    budget_usd=Decimal("1"),
                    budget_period="day",
                    on_limit="pause",
                    budget_thresholds=[],
                )
            )
            await s.flush()
            team = await s.get(Team, team_id)
            assert team is not None
            _, _, (dead,) = await make_job(1, team=team, db=s)
            dead.max_billed_usd = Decimal("0.4")
            _, paused, (waiting,) = await make_job(1, team=team, db=s)
            waiting.max_billed_usd = Decimal("0.5")
        async with transaction(sessionmaker) as s:
            claimed = await claim_call(s, dead.id, 60)
            assert claimed is not None and await reserve_for_call(s, claimed) is None
            await s.execute(
                update(BudgetPeriod)
                .where(BudgetPeriod.team_id == team_id)
                .values(spent_usd=Decimal("0.3"))
            )
            await s.execute(
                update(Job)
                .where(Job.id == paused.id)
                .values(
                    status=JobStatus.PAUSED, paused_from="queued", pause_reason="budget_exceeded"
                )
            )
            # the worker dies: its lease runs out
            await s.execute(
                update(Call).where(Call.id == dead.id).values(lease_until=datetime(2000, 1, 1))
            )

        async def reconcile() -> None:
            await reconciler.reconcile(
                sessionmaker, queue, queued_grace_seconds=3600, max_attempts=3
            )

        await reconcile()
        async with transaction(sessionmaker) as s:
            row = (
                await s.execute(select(BudgetPeriod).where(BudgetPeriod.team_id == team_id))
            ).scalar_one()
            assert row.reserved_usd == 0 and row.spent_usd == Decimal("0.3")
            call = await s.get(Call, dead.id)
            assert call is not None and call.status == CallStatus.QUEUED
            assert call.budget_reserved_usd is None
            # 0.7 left of the day's budget holds the paused job's 0.5 worst case: it resumes
            job = await s.get(Job, paused.id)
            assert job is not None and job.status == JobStatus.QUEUED
            await s.execute(
                update(BudgetPeriod)
                .where(BudgetPeriod.team_id == team_id)
                .values(spent_usd=Decimal("0.9"))
            )
            await s.execute(
                update(Job)
                .where(Job.id == paused.id)
                .values(
                    status=JobStatus.PAUSED, paused_from="queued", pause_reason="budget_exceeded"
                )
            )
        await reconcile()
        async with transaction(sessionmaker) as s:
            job = await s.get(Job, paused.id)
            assert job is not None and job.status == JobStatus.PAUSED  # 0.1 left: still waits
        now[0] = T0 + timedelta(minutes=2)  # the next UTC day
        await reconcile()
        async with transaction(sessionmaker) as s:
            job = await s.get(Job, paused.id)
            assert job is not None and job.status == JobStatus.QUEUED and job.pause_reason is None
            events = (
                await s.execute(select(WebhookEvent.type).where(WebhookEvent.job_id == paused.id))
            ).scalars()
            assert list(events) == ["job.resumed", "job.resumed"]
    finally:
        await queue.delete(
            *[k async for k in queue.scan_iter(settings.worker_queue_name + "*")] or ["x"]
        )
        await queue.aclose()
        async with transaction(sessionmaker) as s:
            await s.execute(delete(Team).where(Team.id == team_id))


async def test_spend_against_budgets_reads_this_periods_rows_nearest_the_budget_first(
    session: AsyncSession, now: list[datetime]
) -> None:
    day, week, month = (period_start(T0, p) for p in ("day", "week", "month"))
    nearly = await _team(session, budget_usd=Decimal("10"), budget_period="day")
    weekly = await _team(session, budget_usd=Decimal("4"), budget_period="week")
    idle = await _team(session, budget_usd=Decimal("3"), budget_period="month")
    zero = await _team(session, budget_usd=Decimal("0"), budget_period="month")
    unbudgeted = await _team(session)
    session.add_all(
        [
            BudgetPeriod(
                team_id=nearly.id,
                period_start=day,
                period="day",
                spent_usd=Decimal("8"),
                reserved_usd=Decimal("1.5"),
            ),
            # Yesterday's row is not today's spend.
            BudgetPeriod(
                team_id=nearly.id,
                period_start=day - timedelta(days=1),
                period="day",
                spent_usd=Decimal("10"),
                reserved_usd=Decimal("0"),
            ),
            BudgetPeriod(
                team_id=weekly.id,
                period_start=week,
                period="week",
                spent_usd=Decimal("1"),
                reserved_usd=Decimal("0"),
            ),
            BudgetPeriod(
                team_id=unbudgeted.id,
                period_start=month,
                period="month",
                spent_usd=Decimal("99"),
                reserved_usd=Decimal("0"),
            ),
        ]
    )
    await session.flush()
    mine = {nearly.id, weekly.id, idle.id, zero.id, unbudgeted.id}
    rows = [
        s for s in await budgets.spend_against_budgets(session, limit=10_000) if s.team_id in mine
    ]
    assert [s.team_id for s in rows] == [zero.id, nearly.id, weekly.id, idle.id]
    by = {s.team_id: s for s in rows}
    assert by[nearly.id].state.spent_usd == Decimal("8")
    assert by[nearly.id].state.reserved_usd == Decimal("1.5")
    assert by[nearly.id].used_pct == Decimal("95")
    assert by[nearly.id].state.period_start == day and by[nearly.id].recorded
    assert by[weekly.id].state.period_start == week and by[weekly.id].used_pct == Decimal("25")
    assert not by[idle.id].recorded and by[idle.id].state.spent_usd == 0
    assert by[zero.id].used_pct == Decimal(100)
    # Nothing was written: the idle team still has no row this period.
    assert (
        await session.execute(select(BudgetPeriod).where(BudgetPeriod.team_id == idle.id))
    ).first() is None
    # A new day: the daily team starts from nothing.
    later = await budgets.spend_against_budgets(
        session, limit=10_000, now=T0 + timedelta(minutes=2)
    )
    assert {s.team_id: s.state.spent_usd for s in later if s.team_id in mine}[nearly.id] == 0
