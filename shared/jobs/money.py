"""Money at the moments of a job's life: a call's reservation before its provider request, its
billed price when it ends, the job's settlement at the job-end transition, pause and resume.

Lock order (as everywhere): a job's calls, the job, budget rows, the team, its grants, then the
team's usage rollup rows (in key order).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing import budget as budgets
from shared.billing import ledger
from shared.billing.admission import Worst, credits_needed
from shared.billing.prices import billed_price, counted_worst_case, counter_ready, credits_for
from shared.db import SessionMaker, transaction, wake
from shared.jobs.repository import JobRepository
from shared.jobs.views import job_out
from shared.models import CALL_ACTIVE, Call, CallStatus, Job, JobStatus, Team
from shared.money import money_str
from shared.queue import Queue, enqueue_calls
from shared.webhooks.events import record_event

log = logging.getLogger("saas_llm.billing")
PAUSABLE = (JobStatus.OPEN, JobStatus.QUEUED, JobStatus.RUNNING)


# -- calls --------------------------------------------------------------------------------------


async def price_call(
    session: AsyncSession,
    call_id: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    cost_usd: Decimal | None,
    *,
    team: Team | None = None,
    model: str | None = None,
) -> Decimal:
    """The billed price of a succeeded call, by its team's markup or override.

    With the team (the snapshot its claim read) and the call's model, or a team without
    per-model prices, it costs no query."""
    if team is None or (model is None and team.model_prices):
        row = (
            await session.execute(
                select(Team, Call.model_requested)
                .join(Call, Call.team_id == Team.id)
                .where(Call.id == call_id)
            )
        ).first()
        if row is None:
            return Decimal(0)
        team, model = row
    return billed_price(team, model or "", prompt_tokens or 0, completion_tokens or 0, cost_usd)


# Prompts larger than this are counted in a thread, so that the event loop keeps running.
COUNT_INLINE_BYTES = 16 * 1024


async def call_worst_case(team: Team, call: Call) -> Decimal | None:
    """The billed USD the call's provider request can cost at most, by LiteLLM's counter.

    Until the worker has warmed the counter (importing litellm takes seconds), the admission's
    byte bound stands in: it is never below the counter's figure, and waiting here would hold
    the claim's transaction open past the call's lease."""
    if not counter_ready() and call.max_billed_usd is not None:
        return call.max_billed_usd
    body = call.request
    size = len(json.dumps(body.get("messages") or [], ensure_ascii=False))
    if size > COUNT_INLINE_BYTES or not counter_ready():
        return (await asyncio.to_thread(counted_worst_case, team, body))[1]
    return counted_worst_case(team, body)[1]


async def reserve_for_call(
    session: AsyncSession, call: Call, team: Team | None = None
) -> dict[str, Any] | None:
    """Reserve the claimed call's worst case (LiteLLM's token count of its prompt x input price
    + max_tokens x output price) in its team's budget; None if it may run, else the error it is
    refused with (and the team's on_limit under "on_limit").

    `team`: the call's team as read in this transaction (the claim returns it), else selected.
    The reservation itself reads the budget afresh, so this row only decides whether to try."""
    if team is None:
        team = (await session.execute(select(Team).where(Team.id == call.team_id))).scalar_one()
    if team.budget_usd is None:
        return None
    try:
        amount = await call_worst_case(team, call)
    except Exception:  # the counter failed on this body: the admission bound still holds
        log.exception("token counter failed", extra={"call_id": call.id})
        amount = call.max_billed_usd
    if amount is not None and await budgets.reserve(session, team, call.id, amount):
        return None
    st = await budgets.state(session, team)
    assert st is not None
    await budgets.exhausted(session, team)
    return {
        "type": "budget_exceeded",
        "message": (
            f"the team's {st.period} budget has {money_str(st.remaining_usd)} USD left; this call "
            f"can cost up to {money_str(amount) if amount is not None else 'an unknown amount'}"
        ),
        "on_limit": team.on_limit,
        **st.as_dict(),
    }


# -- the job-end transition -------------------------------------------------------------------


@dataclass(frozen=True)
class Settlement:
    """What a job is charged at its end: `charge` credits, split over its calls as `shares`."""

    charge: Decimal
    shares: dict[str, Decimal]


def settlement(
    team: Team, status: JobStatus, succeeded: Sequence[tuple[str, Decimal | None, int | None]]
) -> Settlement:
    """The job's charge, by its (locked) team's billing mode; `succeeded` are its succeeded
    calls (id, billed_usd, total_tokens) in seq order. Only a succeeded job is charged: 1 credit
    in `job` mode (on its first call), its calls' credits in `usd`/`tokens` mode; failed,
    cancelled and expired jobs never. The transition runs once per job, so it is charged once."""
    if status != JobStatus.SUCCEEDED:
        return Settlement(Decimal(0), {})
    if team.billing_mode == "job":
        return Settlement(Decimal(1), {succeeded[0][0]: Decimal(1)} if succeeded else {})
    shares = {
        call_id: credits_for(team, Decimal(billed or 0), int(tokens or 0))
        for call_id, billed, tokens in succeeded
    }
    return Settlement(sum(shares.values(), Decimal(0)), shares)


# -- pause and resume ----------------------------------------------------------------------------


async def _job_event(session: AsyncSession, job: Job, type_: str) -> None:
    counts = (await JobRepository(session).counts([job.id]))[job.id]
    data = job_out(job, counts).model_dump(mode="json")
    await record_event(session, job.team_id, type_, data, job_id=job.id, extra_url=job.webhook_url)


async def record_job_paused(session: AsyncSession, job: Job) -> None:
    """The `job.paused` event of a job admitted paused."""
    await _job_event(session, job, "job.paused")


async def pause_job(session: AsyncSession, job_id: str, reason: str) -> bool:
    """Pause a live job at a money limit (its queued calls wait; running ones finish)."""
    stmt = (
        update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id == job_id, Job.status.in_(PAUSABLE))
        .values(status=JobStatus.PAUSED, paused_from=Job.status, pause_reason=reason)
        .returning(Job.id)
    )
    if (await session.execute(stmt)).first() is None:
        return False
    job = (
        await session.execute(
            select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
        )
    ).scalar_one()
    await _job_event(session, job, "job.paused")
    wake(session, "job", job_id)
    return True


async def _worst_of(session: AsyncSession, job_id: str) -> list[Worst]:
    rows = (
        await session.execute(
            select(Call.max_tokens, Call.max_billed_usd).where(
                Call.job_id == job_id, Call.status.in_(CALL_ACTIVE)
            )
        )
    ).all()
    return [Worst(int(t or 0), b) for t, b in rows]


async def resume_paused(session: AsyncSession, team_id: str, *, limit: int = 200) -> list[str]:
    """Resume the team's paused jobs that now fit (credits granted, budget raised, a new
    period), oldest first; returns their queued calls, to enqueue after commit."""
    jobs = (
        (
            await session.execute(
                select(Job)
                .where(Job.team_id == team_id, Job.status == JobStatus.PAUSED)
                .order_by(Job.created_at, Job.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
    if not jobs:
        return []
    team = (await session.execute(select(Team).where(Team.id == team_id))).scalar_one()
    st = await budgets.state(session, team)
    remaining = st.remaining_usd if st is not None else None
    worst = {job.id: await _worst_of(session, job.id) for job in jobs}
    team = await ledger.lock_team(session, team_id)
    to_enqueue: list[str] = []
    for job in jobs:
        if remaining is not None:
            cheapest = min((w.billed_usd or Decimal(0) for w in worst[job.id]), default=None)
            if cheapest is not None and remaining < cheapest:
                continue
            # Count what it may take, so that a small raise resumes a few jobs, not all of them
            # only to pause most again.
            remaining -= sum((w.billed_usd or Decimal(0) for w in worst[job.id]), Decimal(0))
        if job.pause_reason == "insufficient_credits":
            if team.enforce_credits:
                needed = credits_needed(team, worst[job.id], new_job=job.credits_reserved == 0)
                available = Decimal(team.credits_balance) - Decimal(team.credits_reserved)
                if available < needed:
                    continue
                team.credits_reserved = Decimal(team.credits_reserved) + needed
                job.credits_reserved = Decimal(job.credits_reserved) + needed
        job.status = job.paused_from or JobStatus.QUEUED
        job.paused_from = None
        job.pause_reason = None
        await session.flush()
        await _job_event(session, job, "job.resumed")
        wake(session, "job", job.id)
        ids = (
            await session.execute(
                select(Call.id).where(Call.job_id == job.id, Call.status == CallStatus.QUEUED)
            )
        ).scalars()
        to_enqueue.extend(ids)
    return to_enqueue


async def teams_with_paused_jobs(session: AsyncSession, *, limit: int = 500) -> list[str]:
    stmt = (
        select(Job.team_id)
        .where(Job.status == JobStatus.PAUSED)
        .group_by(Job.team_id)
        .order_by(func.min(Job.created_at))
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars().all())


async def resume_team(sessionmaker: SessionMaker, queue: Queue, team_id: str) -> int:
    """Resume what fits of a team's paused work in a transaction of its own (after a grant or a
    settings change committed), then enqueue it; returns the calls enqueued."""
    async with transaction(sessionmaker) as session:
        call_ids = await resume_paused(session, team_id)
    if call_ids:
        await enqueue_calls(queue, call_ids)
    return len(call_ids)


async def billing_pass(sessionmaker: SessionMaker, queue: Queue) -> dict[str, int]:
    """The reconciler's money step: expire grants, grant monthly allowances, and resume paused
    jobs that fit again (a new budget period, credits, a raised budget)."""
    async with transaction(sessionmaker) as session:
        expired = await ledger.expire_grants(session)
    async with transaction(sessionmaker) as session:
        allowances = len(await ledger.grant_allowances(session))
    async with transaction(sessionmaker) as session:
        teams = await teams_with_paused_jobs(session)
    resumed = 0
    for team_id in teams:
        resumed += await resume_team(sessionmaker, queue, team_id)
    return {"expired": expired, "allowances": allowances, "resumed_calls": resumed}


async def resume_after_commit(sessionmaker: SessionMaker, queue: Queue, team_id: str) -> None:
    """`resume_team` as after-commit work."""
    await resume_team(sessionmaker, queue, team_id)
