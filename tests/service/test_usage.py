"""Usage reports from the rollup kept by the job-end transition equal the sums over the jobs and
calls exactly, after a mix of jobs (models, job types, days, failures, a cancel, a job without
calls, a live job, refunds); refunds are once, of the whole charge, and net in the credits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing import ledger
from shared.billing.schemas import RefundIn
from shared.billing.service import CreditsService
from shared.billing.usage import usage
from shared.errors import Conflict, IdempotencyConflict
from shared.jobs.lifecycle import CallOutcome, end_job, finish_call
from shared.models import Call, CallStatus, CreditEntry, Job, JobStatus, Team, UsageRollup
from tests.service.conftest import Factory

DAY0 = datetime(2026, 5, 4, tzinfo=UTC)


def _ok(tokens: int, cost: str) -> CallOutcome:
    return CallOutcome(
        CallStatus.SUCCEEDED,
        prompt_tokens=tokens,
        completion_tokens=tokens // 2,
        total_tokens=tokens + tokens // 2,
        cost_usd=Decimal(cost),
    )


async def _job(
    session: AsyncSession,
    make_job: Factory,
    team: Team,
    models: list[str],
    *,
    day: int,
    job_type: str | None,
    fail_last: bool = False,
) -> Job:
    _, job, calls = await make_job(len(models), team=team, call_status=CallStatus.RUNNING)
    await session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(created_at=DAY0 + timedelta(days=day, hours=3), job_type=job_type)
    )
    for call, model in zip(calls, models, strict=True):
        await session.execute(update(Call).where(Call.id == call.id).values(model_requested=model))
    ended = None
    for i, call in enumerate(calls):
        if fail_last and i == len(calls) - 1:
            outcome = CallOutcome(CallStatus.FAILED, error={"type": "x", "message": "x"})
        else:
            outcome = _ok(10 * (i + 1) + day, f"0.00{i + 1}{day}")
        ended = await finish_call(session, call.id, 1, outcome)
    assert ended is not None
    return ended


async def _compare(session: AsyncSession, team_id: str | None, start: datetime, end: datetime):
    answers = {}
    for group_by in ("day", "model", "job_type", "team"):
        fast = await usage(session, team_id, start, end, group_by)  # type: ignore[arg-type]
        raw = await usage(session, team_id, start, end, group_by, rollup=False)  # type: ignore[arg-type]
        assert [r.model_dump() for r in fast] == [r.model_dump() for r in raw], group_by
        answers[group_by] = fast
    return answers


@pytest.mark.parametrize("mode", ["job", "usd", "tokens"])
async def test_rollup_answers_equal_the_raw_sums(
    session: AsyncSession, make_job: Factory, mode: str
) -> None:
    team = Team(
        id="t-" + uuid.uuid4().hex[:10],
        name="t",
        billing_mode=mode,
        credits_per_usd=Decimal(1000),
        tokens_per_credit=7,
        price_markup_pct=Decimal(10),
    )
    session.add(team)
    await session.flush()
    jobs = [
        await _job(
            session, make_job, team, ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini"], day=0, job_type="a"
        ),
        await _job(session, make_job, team, ["gpt-4o"], day=0, job_type=None),
        await _job(
            session, make_job, team, ["gpt-4o", "gpt-4o-mini"], day=1, job_type="b", fail_last=True
        ),
        await _job(session, make_job, team, ["gpt-4o-mini"], day=2, job_type="a"),
        await _job(session, make_job, team, ["gpt-4o-mini", "gpt-4o"], day=2, job_type="b"),
    ]
    assert [j.status for j in jobs] == [
        "succeeded",
        "succeeded",
        "failed",
        "succeeded",
        "succeeded",
    ]
    # a cancelled job with a queued call, and a job without calls that expired
    _, cancelled, _ = await make_job(1, team=team)
    _, empty, _ = await make_job(0, team=team, status=JobStatus.OPEN)
    # a live job, with one call done and one running: summed from its rows, not rolled up
    _, live, (done, _running) = await make_job(2, team=team, call_status=CallStatus.RUNNING)
    for job, day in ((cancelled, 1), (empty, 2), (live, 2)):
        await session.execute(
            update(Job).where(Job.id == job.id).values(created_at=DAY0 + timedelta(days=day))
        )
        await session.refresh(job)
    await end_job(session, cancelled, JobStatus.CANCELLED)
    await end_job(session, empty, JobStatus.EXPIRED)
    assert await finish_call(session, done.id, 1, _ok(5, "0.0005")) is None

    rows = (
        (await session.execute(select(UsageRollup).where(UsageRollup.team_id == team.id)))
        .scalars()
        .all()
    )
    assert rows and sum(r.jobs for r in rows) == 7  # every ended job, once
    start, end = DAY0, DAY0 + timedelta(days=3)
    before = await _compare(session, team.id, start, end)
    credits = sum((Decimal(j.credits_charged) for j in jobs), Decimal(0))
    assert credits > 0
    assert sum((r.credits for r in before["day"]), Decimal(0)) == credits
    assert sum(r.jobs for r in before["day"]) == 8  # the live one too

    # refund the first job: once, the whole charge, net in every grouping
    service = CreditsService(session)
    entry, created = await service.refund(jobs[0].id, RefundIn(note="r"), idempotency_key="k1")
    assert created and entry.kind == "refund" and entry.amount == jobs[0].credits_charged
    again, created = await service.refund(jobs[0].id, RefundIn(note="r"), idempotency_key="k1")
    assert not created and again.id == entry.id
    with pytest.raises(IdempotencyConflict):
        await service.refund(jobs[1].id, RefundIn(note="r"), idempotency_key="k1")
    with pytest.raises(Conflict):
        await service.refund(jobs[0].id, RefundIn(), idempotency_key=None)  # already refunded
    with pytest.raises(Conflict):
        await service.refund(jobs[2].id, RefundIn(), idempotency_key=None)  # failed: no charge
    with pytest.raises(Conflict):
        await service.refund(live.id, RefundIn(), idempotency_key=None)  # not ended
    after = await _compare(session, team.id, start, end)
    refunded = Decimal(jobs[0].credits_charged)
    assert sum((r.credits for r in after["model"]), Decimal(0)) == credits - refunded
    assert sum((r.credits for r in after["day"]), Decimal(0)) == credits - refunded
    assert [r.jobs for r in after["day"]] == [r.jobs for r in before["day"]]
    assert [r.billed_usd for r in after["model"]] == [r.billed_usd for r in before["model"]]
    await session.refresh(team)
    assert await ledger.ledger_sum(session, team.id) == team.credits_balance
    refunds = (
        (
            await session.execute(
                select(CreditEntry).where(
                    CreditEntry.team_id == team.id, CreditEntry.kind == "refund"
                )
            )
        )
        .scalars()
        .all()
    )
    assert [(e.job_id, e.amount) for e in refunds] == [(jobs[0].id, refunded)]
    assert refunds[0].balance_after == team.credits_balance

    # a window that does not start at midnight is summed from the rows (same function)
    odd = await usage(session, team.id, start + timedelta(hours=2), end, "day")
    assert sum(r.jobs for r in odd) == 8
