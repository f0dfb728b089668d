"""State changes of calls and jobs, shared by the API, the worker and the reconciler.

Every change is a guarded UPDATE (`WHERE status = ...`), so a repeated task, a late answer or
two workers racing can never finish a call twice, count its tokens twice or end a job twice.

A job ends in exactly one place, `_end` (through `end_job`, or its last call's finish):
whichever path ends it (its last call, a cancel, a deadline, an expiry, a worker lost for
good), one statement sets its end, its money settlement, its usage rollup and its webhook event
(with the deliveries and their NOTIFY), and the job's live streams are woken once the
transaction commits.

Every change that takes a call out of `running` also settles its budget reservation
(`shared.billing.budget.settle_calls`, or the finish statement itself) in the same
transaction, once its job is locked.

Lock order, everywhere: a job's calls (by id), then the job, then budget rows, then the team (then
its grants and its usage rollup rows).
Cancel, reconciler and workers take them in that order, so they never deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    CTE,
    Interval,
    Select,
    String,
    Table,
    bindparam,
    column,
    func,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from shared.billing import budget as budgets
from shared.billing import ledger
from shared.billing.budget import settle_calls
from shared.billing.usage import roll_up_cte, roll_up_params
from shared.db import wake
from shared.jobs.money import price_call, settlement
from shared.jobs.views import job_out
from shared.models import (
    CALL_ACTIVE,
    JOB_CLOSED_ACTIVE,
    JOB_LIVE,
    JOB_TERMINAL,
    BudgetPeriod,
    Call,
    CallStatus,
    Job,
    JobStatus,
    Team,
    TeamStatus,
)
from shared.models.base import Money
from shared.webhooks.events import event_ctes, event_params


@dataclass(frozen=True)
class CallOutcome:
    """What a finished attempt produced."""

    status: CallStatus  # succeeded | failed
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    model_used: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: Decimal | None = None
    latency_ms: int | None = None
    litellm_call_id: str | None = None
    cached: bool = False


# Jobs whose queued calls may start (not paused, not ended).
JOB_RUNNABLE = (JobStatus.OPEN, JobStatus.QUEUED, JobStatus.RUNNING)


class TeamBusy(Exception):
    """The call's team already has its maximum number of calls running."""


# -- the job-end transition ----------------------------------------------------------------------


@dataclass(frozen=True)
class _EndFacts:
    """What ending a job needs, read in one statement once the job is locked."""

    team: Team  # locked
    job: Job  # as it is before its end (locked by the caller)
    counts: dict[str, int]  # its calls by status
    succeeded: list[tuple[str, Decimal | None, int | None]]  # (id, billed_usd, total_tokens)
    now: datetime  # the transaction's now(): the job's finished_at


# A call of the job (`job_id`) still queued or running, if any: one probe of
# `ix_calls_job_id_active`, newest seq first (calls start roughly in seq order, so the last one
# is active until the job's very end). Read before counting every call of a big job.
_LIVE_CALL = (
    select(Call.id)
    .where(Call.job_id == bindparam("job_id"), Call.status.in_(CALL_ACTIVE))
    .order_by(Call.seq.desc())
    .limit(1)
)


def _end_facts_statement(only_if_done: bool) -> Select[Any]:
    """`_end_facts`' statement, run with `job_id` and `team_id`; built once per shape."""
    live = _LIVE_CALL.scalar_subquery()
    by_status = (
        select(Call.status, func.count().label("n"))
        .where(Call.job_id == bindparam("job_id"))
        .group_by(Call.status)
        .subquery()
    )
    counts = select(
        func.jsonb_object_agg(by_status.c.status, by_status.c.n, type_=JSONB)
    ).scalar_subquery()
    ok = (
        select(
            func.array_agg(aggregate_order_by(Call.id, Call.seq)).label("ids"),
            func.array_agg(aggregate_order_by(Call.billed_usd, Call.seq)).label("billed"),
            func.array_agg(aggregate_order_by(Call.total_tokens, Call.seq)).label("tokens"),
        )
        .where(Call.job_id == bindparam("job_id"), Call.status == CallStatus.SUCCEEDED)
        .subquery()
    )
    stmt = (
        select(Team, Job, counts, ok.c.ids, ok.c.billed, ok.c.tokens, func.now())
        .select_from(Team)
        .join(Job, Job.id == bindparam("job_id"))
        .join(ok, true())
        .where(Team.id == bindparam("team_id"))
        .with_for_update(of=Team, key_share=True)  # as `ledger.lock_team`: see there
        .execution_options(populate_existing=True)
    )
    if only_if_done:
        stmt = stmt.where(live.is_(None))
    return stmt


# Built once per shape (see `_CLAIM`).
_END_FACTS = {flag: _end_facts_statement(flag) for flag in (False, True)}


async def _end_facts(
    session: AsyncSession, job_id: str, team_id: str, *, only_if_done: bool
) -> _EndFacts | None:
    """Lock the job's team (the lock order: after the job and budget rows) and read its calls'
    counts and the succeeded ones; with `only_if_done`, None (and no team lock) while a call of
    the job is still queued or running.

    The caller holds the job's lock, taken by an earlier statement: this statement's snapshot
    is taken after it, so it sees every call that another transaction ended and committed
    before that (each of them locks the job after its call, then commits). A call whose end is
    not committed yet belongs to a transaction that is waiting for the job's lock, and that one
    sees this transaction's call ended once it gets the lock."""
    stmt = _END_FACTS[only_if_done]
    params = {"job_id": job_id, "team_id": team_id}
    row = (await session.execute(stmt, params)).first()
    if row is None:
        return None
    team, job, by, ids, billed, tokens, now = row
    succeeded = list(zip(ids or [], billed or [], tokens or [], strict=True))
    return _EndFacts(team, job, dict(by or {}), succeeded, now)


def _outcome(counts: dict[str, int]) -> tuple[JobStatus, dict[str, Any] | None]:
    """How a closed job whose calls have all ended ends."""
    total = sum(counts.values())
    failed = counts.get(CallStatus.FAILED, 0)
    if failed:
        return JobStatus.FAILED, {
            "type": "calls_failed",
            "message": f"{failed} of {total} call(s) failed; see each call's error",
        }
    if counts.get(CallStatus.SUCCEEDED, 0) or total == 0:
        return JobStatus.SUCCEEDED, None
    return JobStatus.CANCELLED, None


def _shares() -> CTE:
    """Each charged call's share of the job's charge (`given_ids`, `given_shares`), as a CTE of
    the statement ending it."""
    given = (
        func.unnest(
            bindparam("given_ids", type_=ARRAY(String)),
            bindparam("given_shares", type_=ARRAY(Money)),
        )
        .table_valued("id", "share")
        .render_derived(name="given")
    )
    return (
        update(Call)
        .where(Call.id == given.c.id)
        .values(credits_charged=given.c.share)
        .returning(Call.id)
        .cte("shares")
    )


_JOBS = Job.__table__.c


def _end_statement(change_shape: int, with_shares: bool) -> Any:
    """`_end`'s statement for a team change of this shape (`ledger.change_shape`) and with or
    without charge shares; built once per shape (`_END`)."""
    stmt = (
        update(cast(Table, Job.__table__))
        .where(_JOBS.id == bindparam("end_job_id"))
        .values(
            status=bindparam("end_status", type_=_JOBS.status.type),
            error=bindparam("end_error", type_=_JOBS.error.type),
            finished_at=bindparam("end_finished_at", type_=_JOBS.finished_at.type),
            expires_at=None,
            credits_reserved=0,
            credits_charged=bindparam("end_charge", type_=_JOBS.credits_charged.type),
        )
        .returning(*_JOBS)
    )
    ctes = ledger.change_ctes(change_shape)
    if with_shares:
        ctes.append(_shares())
    ctes.extend(event_ctes())  # the job's event and its deliveries
    # Last: it reads the calls as they were before this statement, and the shares from
    # parameters (a statement cannot see its own writes).
    ctes.append(roll_up_cte())
    # A Core UPDATE loaded as `Job` rows, not an ORM UPDATE: the ORM marks an UPDATE of an
    # entity afresh on every execution (its strategy options), and so SQLAlchemy computes the
    # cache key of the whole statement again, CTEs included (100-300 µs by shape,
    # `python -m bench.cache_keys`). Here the key is computed once.
    return select(Job).from_statement(stmt.add_cte(*ctes)).execution_options(populate_existing=True)


# Built once per shape (see `_CLAIM`).
_END = {
    (shape, shares): _end_statement(shape, shares)
    for shape in (0, 1, 2)
    for shares in (False, True)
}


async def _end(
    session: AsyncSession,
    job_id: str,
    status: JobStatus,
    error: dict[str, Any] | None,
    facts: _EndFacts,
) -> Job:
    """The transition itself, one statement: the job's end, its settlement (the credit
    reservation released, the charge on the job, its calls and the team, the ledger entry and
    the grants it burns), its usage rollup and its `job.<status>` event with the deliveries.

    The event's data is the job as the API will show it once ended: the job as the facts read
    it, with what this statement sets."""
    settled = settlement(facts.team, status, facts.succeeded)
    job_reserved = Decimal(facts.job.credits_reserved or 0)
    change = ledger.team_change(facts.team, charge=settled.charge, release=job_reserved)
    stmt = _END[ledger.change_shape(change), bool(settled.shares)]
    ended = job_out(facts.job, facts.counts).model_copy(
        update={
            "status": status.value,
            "error": error,
            "finished_at": facts.now,
            "expires_at": None,
            "credits_reserved": Decimal(0),
            "credits_charged": settled.charge,
        }
    )
    _, event = event_params(
        facts.job.team_id,
        f"job.{status.value}",
        ended.model_dump(mode="json"),
        job_id=job_id,
        extra_url=facts.job.webhook_url,
    )
    params: dict[str, Any] = {
        "end_job_id": job_id,
        "end_status": status,
        "end_error": error,
        "end_finished_at": facts.now,
        "end_charge": settled.charge,
        **ledger.change_params(change, job_id=job_id, note="job succeeded"),
        **roll_up_params(job_id, settled.shares),
        **event,
    }
    if settled.shares:
        params["given_ids"] = list(settled.shares)
        params["given_shares"] = list(settled.shares.values())
    job: Job = (await session.execute(stmt, params)).scalar_one()
    await ledger.applied(session, facts.team, change)
    wake(session, "job", job.id)
    return job


async def end_job(
    session: AsyncSession, job: Job, status: JobStatus, error: dict[str, Any] | None = None
) -> Job:
    """End a live job (locked by the caller) with a terminal `status`: the one place a job ends."""
    if status not in JOB_TERMINAL:
        raise ValueError(f"{status!r} is not a terminal job status")
    if job.status in JOB_TERMINAL:
        raise ValueError(f"job {job.id} has already ended ({job.status})")
    facts = await _end_facts(session, job.id, job.team_id, only_if_done=False)
    assert facts is not None
    return await _end(session, job.id, status, error, facts)


async def lock_job(session: AsyncSession, job_id: str) -> Job:
    stmt = (
        select(Job)
        .where(Job.id == job_id)
        .with_for_update()
        .execution_options(populate_existing=True)  # the row may have changed meanwhile
    )
    return (await session.execute(stmt)).scalar_one()


async def maybe_finish_job(session: AsyncSession, job_id: str) -> Job | None:
    """End a closed job whose calls have all ended; returns the job if this call ended it."""
    job = await lock_job(session, job_id)
    return await _finish_if_done(session, job.id, job.team_id, job.status)


async def _finish_if_done(
    session: AsyncSession, job_id: str, team_id: str, status: JobStatus
) -> Job | None:
    """End the locked job if it is closed and its calls have all ended."""
    if status not in JOB_CLOSED_ACTIVE:
        return None  # open (step style, more calls may come) or already ended
    facts = await _end_facts(session, job_id, team_id, only_if_done=True)
    if facts is None:
        return None
    end_status, error = _outcome(facts.counts)
    return await _end(session, job_id, end_status, error, facts)


# -- calls ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeamGate:
    """What a claim must know of the call's team: read by the caller in the same transaction
    (the fair choice's query), or by `_check_team` itself."""

    team_id: str
    status: str
    max_calls_in_flight: int | None


@dataclass(frozen=True)
class Claim:
    """A claimed call with what its run needs: its team's row as the claim read it (budget,
    cache, markup) and its job's deadline, so none of them is selected again."""

    call: Call
    team: Team
    deadline: datetime | None
    job_calls: int = 0  # the job's calls when it was claimed (`Job.total_calls`)


async def _check_team(session: AsyncSession, call_id: str, gate: TeamGate | None = None) -> bool:
    """False if the call's team is suspended (the call stays queued until it is resumed).

    Holds the team's claim lock and raises `TeamBusy` if the team is at `max_calls_in_flight`."""
    if gate is None:
        row = (
            await session.execute(
                select(Call.team_id, Team.status, Team.max_calls_in_flight)
                .join(Team, Team.id == Call.team_id)
                .where(Call.id == call_id, Call.status == CallStatus.QUEUED)
            )
        ).first()
        if row is None:
            return True  # not queued any more: the claim below finds nothing
        gate = TeamGate(*row)
    if gate.status != TeamStatus.ACTIVE:
        return False
    if gate.max_calls_in_flight is None:
        return True
    # Serializes claims of this team's calls until commit, so concurrent workers cannot overshoot.
    # The count is a statement of its own: its snapshot must be taken once the lock is held, to
    # see every running call committed by the claim that held it before.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(gate.team_id))))
    running = (
        await session.execute(
            select(func.count()).where(
                Call.team_id == gate.team_id, Call.status == CallStatus.RUNNING
            )
        )
    ).scalar_one()
    if running >= gate.max_calls_in_flight:
        raise TeamBusy(gate.team_id)
    return True


def claim_ctes(*only_if: Any) -> tuple[CTE, CTE]:
    """The claim's two writes, as CTEs: `claimed` (the call marked running, one more attempt,
    every column returned) and `started` (its job started). Run with `call_id` and `lease` (a
    timedelta); `only_if`: more conditions of the claim (`shared.jobs.fairness`)."""
    job_runs = select(Job.id).where(Job.id == Call.job_id, Job.status.in_(JOB_RUNNABLE)).exists()
    claimed = (
        update(Call)
        .where(
            Call.id == bindparam("call_id"), Call.status == CallStatus.QUEUED, job_runs, *only_if
        )
        .values(
            status=CallStatus.RUNNING,
            attempts=Call.attempts + 1,
            started_at=func.coalesce(Call.started_at, func.now()),
            lease_until=func.now() + bindparam("lease", type_=Interval),
            next_attempt_at=None,
        )
        .returning(*Call.__table__.c)
        .cte("claimed")
    )
    started = (
        update(Job)
        .where(
            Job.id == claimed.c.job_id, (Job.status == JobStatus.QUEUED) | Job.started_at.is_(None)
        )
        .values(
            status=func.coalesce(func.nullif(Job.status, JobStatus.QUEUED), JobStatus.RUNNING),
            started_at=func.coalesce(Job.started_at, func.now()),
        )
        .returning(Job.id)
        .cte("started")
    )
    return claimed, started


def _claim_statement() -> Select[Call, datetime | None, int, Team]:
    """One statement: the call marked running, its job started, and the call, its job's
    deadline and number of calls and its team's row returned. Built once (`_CLAIM`), run with
    `call_id` and `lease` (a timedelta)."""
    claimed, started = claim_ctes()
    call = aliased(Call, claimed)
    # The jobs and teams rows are read from the statement's snapshot, as of before `started`
    # changed the job: its deadline is not among what `started` changes.
    return (
        select(call, Job.deadline_at, Job.total_calls, Team)
        .join(Job, Job.id == call.job_id)
        .join(Team, Team.id == call.team_id)
        .add_cte(started)
        .execution_options(populate_existing=True)
    )


# Built once: building it is most of a claim's CPU, and SQLAlchemy memoises its cache key.
_CLAIM = _claim_statement()


async def claim(
    session: AsyncSession, call_id: str, lease_seconds: float, gate: TeamGate | None = None
) -> Claim | None:
    """Mark a queued call running (one more attempt) and start its job; None if it is not
    queued any more, its team is suspended, or its job has ended (then the call is cancelled).

    `gate`: the call's team as the caller read it in this transaction (else it is read here).
    Raises `TeamBusy` when the team's in-flight limit is reached (the caller tries later)."""
    if not await _check_team(session, call_id, gate):
        return None
    params = {"call_id": call_id, "lease": timedelta(seconds=lease_seconds)}
    row = (await session.execute(_CLAIM, params)).first()
    if row is None:
        # A call added while its job was being cancelled or expired never runs; one of a paused
        # job stays queued.
        job_ended = (
            select(Job.id).where(Job.id == Call.job_id, Job.status.in_(JOB_TERMINAL)).exists()
        )
        await session.execute(
            update(Call)
            .execution_options(synchronize_session=False)
            .where(Call.id == call_id, Call.status == CallStatus.QUEUED, job_ended)
            .values(status=CallStatus.CANCELLED, finished_at=func.now(), lease_until=None)
        )
        return None
    call, deadline, job_calls, team = row
    wake(session, "job", call.job_id)
    return Claim(call, team, deadline, job_calls)


async def claim_call(session: AsyncSession, call_id: str, lease_seconds: float) -> Call | None:
    """`claim`, for a caller that needs only the call."""
    claimed = await claim(session, call_id, lease_seconds)
    return claimed.call if claimed is not None else None


async def renew_call_leases(session: AsyncSession, call_ids: list[str], seconds: float) -> int:
    """Extend the leases of these running calls (their worker is alive); returns how many."""
    result = await session.execute(
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id.in_(call_ids), Call.status == CallStatus.RUNNING)
        .values(lease_until=func.now() + timedelta(seconds=seconds))
        .returning(Call.id)
    )
    return len(result.all())


async def release_call(
    session: AsyncSession,
    call_id: str,
    attempt: int,
    *,
    delay: float,
    error: dict[str, Any] | None,
    refund_attempt: bool = False,
) -> bool:
    """Put a running call back in the queue to run again after `delay` seconds."""
    values: dict[str, Any] = {
        "status": CallStatus.QUEUED,
        "lease_until": None,
        "next_attempt_at": func.now() + timedelta(seconds=delay),
        "error": error,
    }
    if refund_attempt:
        values["attempts"] = Call.attempts - 1
    stmt = (
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id, Call.status == CallStatus.RUNNING, Call.attempts == attempt)
        .values(**values)
        .returning(Call.job_id)
    )
    job_id = (await session.execute(stmt)).scalar_one_or_none()
    if job_id is not None:
        await settle_calls(session, [call_id])
        wake(session, "job", job_id)
    return job_id is not None


# The end of a running call's attempt, in one statement: the call's outcome (once: guarded by
# its status and attempt), its addition to the job's totals, and the settlement of its budget
# reservation. `old` locks the call first and reads its reservation as it is now (FOR UPDATE
# returns the latest version of the row), since an UPDATE's RETURNING shows only the new one.
# The job's row is locked by `job` (after the call's: the lock order), the budget row by
# `budget` (after the job's: it reads `job`). RETURNING gives the job's status as it is once
# locked.
_FINISH_CTES = """
    WITH old AS (
        SELECT id, job_id, team_id, budget_reserved_usd AS reserved, budget_period_start AS ps
        FROM calls WHERE id = :id AND status = 'running' AND attempts = :attempt
        FOR UPDATE
    ), call AS (
        UPDATE calls c SET status = :status, response = :response, error = :error,
            model_used = :model_used, prompt_tokens = :pt, completion_tokens = :ct,
            total_tokens = :tt, cost_usd = :cost, billed_usd = :billed,
            latency_ms = :latency_ms, litellm_call_id = :litellm_call_id, cached = :cached,
            finished_at = now(), lease_until = NULL, budget_reserved_usd = NULL
        FROM old WHERE c.id = old.id
        RETURNING old.job_id, old.team_id, old.reserved, old.ps, c.billed_usd, c.total_tokens
    ), job AS (
        UPDATE jobs j SET prompt_tokens = j.prompt_tokens + coalesce(:pt, 0),
            completion_tokens = j.completion_tokens + coalesce(:ct, 0),
            total_tokens = j.total_tokens + coalesce(:tt, 0),
            cost_usd = j.cost_usd + coalesce(:cost, 0),
            billed_usd = j.billed_usd + coalesce(:billed, 0)
        FROM call WHERE j.id = call.job_id
        RETURNING {job_columns}, call.reserved, call.ps
    ), budget AS (
        UPDATE budget_periods b SET reserved_usd = b.reserved_usd - job.reserved,
            spent_usd = b.spent_usd + :spent
        FROM job
        WHERE job.reserved IS NOT NULL AND b.team_id = job.team_id AND b.period_start = job.ps
        RETURNING b.period, b.spent_usd, b.reserved_usd, b.thresholds_fired
    )"""
_FINISH_BINDS = (
    bindparam("response", type_=Call.__table__.c.response.type),
    bindparam("error", type_=Call.__table__.c.error.type),
    bindparam("cost", type_=Money),
    bindparam("billed", type_=Money),
    bindparam("spent", type_=Money),
)
# The fragments put in below are column names of our own tables, never input.
_FINISH = text(
    _FINISH_CTES.format(job_columns="j.id, j.status, call.team_id")  # noqa: S608
    + """
    SELECT job.id, job.status, job.team_id, job.ps, budget.period, budget.spent_usd,
           budget.reserved_usd, budget.thresholds_fired
    FROM job LEFT JOIN budget ON true"""
).bindparams(*_FINISH_BINDS)


def _finish_last_statement() -> Any:
    """`_FINISH` for the call of a one-call job, which also reads what the job's end needs
    (`_EndFacts`) in the same statement: the job's row as its UPDATE left it, and the team's,
    locked after the budget row (the lock order: `team` reads `budget`, so it runs after it).

    Both rows are locked by this statement, and a locked row is read at its latest version
    (the UPDATE's; FOR NO KEY UPDATE's, as `_end_facts` reads the team). What the statement's
    snapshot cannot show, other calls of the job ended meanwhile, does not arise: a closed job
    with one call has no other (`finish_call` checks both on the job's row)."""
    jobs, teams, periods = Job.__table__.c, Team.__table__.c, BudgetPeriod.__table__.c
    returned = ", ".join(f"j.{c.name}" for c in jobs)
    returned += ", call.billed_usd AS call_billed, call.total_tokens AS call_tokens"
    selected = ", ".join([f"job.{c.name}" for c in jobs] + [f"team.{c.name}" for c in teams])
    sql = (
        _FINISH_CTES.format(job_columns=returned)  # noqa: S608
        + f""", team AS (
        SELECT t.* FROM teams t JOIN job ON t.id = job.team_id LEFT JOIN budget ON true
        FOR NO KEY UPDATE OF t
    )
    SELECT {selected}, job.call_billed, job.call_tokens, now() AS finish_now, job.ps,
           budget.period, budget.spent_usd, budget.reserved_usd, budget.thresholds_fired
    FROM job JOIN team ON true LEFT JOIN budget ON true"""  # noqa: S608
    )
    extra = [
        column("call_billed", Call.__table__.c.billed_usd.type),
        column("call_tokens", Call.__table__.c.total_tokens.type),
        column("finish_now", jobs.finished_at.type),
        column("ps", Call.__table__.c.budget_period_start.type),
        column("period", periods.period.type),
        column("spent_usd", periods.spent_usd.type),
        column("reserved_usd", periods.reserved_usd.type),
        column("thresholds_fired", periods.thresholds_fired.type),
    ]
    # Matched to the entities by position (`columns`), so the same names in both are fine.
    textual = text(sql).bindparams(*_FINISH_BINDS).columns(*jobs, *teams, *extra)
    return (
        select(Job, Team, *extra).from_statement(textual).execution_options(populate_existing=True)
    )


_FINISH_LAST = _finish_last_statement()


@dataclass(frozen=True)
class _EndRead:
    """What `_FINISH_LAST` read for the job's end: `_EndFacts` but the calls, and the call's
    own billed price and tokens as stored."""

    job: Job
    team: Team  # locked
    now: datetime
    billed: Decimal | None
    tokens: int | None


@dataclass(frozen=True)
class _Finished:
    job_id: str
    status: str  # the job's, as the statement locked it
    team_id: str
    read: _EndRead | None = None  # with `_FINISH_LAST`


async def _record_finish(
    session: AsyncSession,
    call_id: str,
    attempt: int,
    outcome: CallOutcome,
    *,
    team: Team | None,
    model: str | None,
    last: bool = False,
) -> _Finished | None:
    """`_FINISH` (`_FINISH_LAST` if `last`) and the budget thresholds it crossed, or None when
    the call was not this attempt's to finish any more."""
    billed = None
    if outcome.status == CallStatus.SUCCEEDED:
        billed = await price_call(
            session,
            call_id,
            outcome.prompt_tokens,
            outcome.completion_tokens,
            outcome.cost_usd,
            team=team,
            model=model,
        )
    params = {
        "id": call_id,
        "attempt": attempt,
        "status": outcome.status,
        "response": outcome.response,
        "error": outcome.error,
        "model_used": outcome.model_used,
        "pt": outcome.prompt_tokens,
        "ct": outcome.completion_tokens,
        "tt": outcome.total_tokens,
        "cost": outcome.cost_usd,
        "billed": billed,
        "latency_ms": outcome.latency_ms,
        "litellm_call_id": outcome.litellm_call_id,
        "cached": outcome.cached,
        "spent": billed or Decimal(0),
    }
    if last:
        row = (await session.execute(_FINISH_LAST, params)).first()
        if row is None:
            return None  # cancelled, re-claimed or already finished: discard this answer
        job, locked, stored, tokens, now, start, period, spent, reserved, fired = row
        read = _EndRead(job, locked, now, stored, tokens)
        finished = _Finished(job.id, job.status, job.team_id, read)
    else:
        row = (await session.execute(_FINISH, params)).first()
        if row is None:
            return None
        job_id, status, team_id, start, period, spent, reserved, fired = row
        finished = _Finished(job_id, status, team_id)
    if period is not None:
        await budgets.settled(
            session, finished.team_id, start, billed or Decimal(0), period, spent, reserved, fired
        )
    wake(session, "job", finished.job_id)
    return finished


async def finish_call(
    session: AsyncSession,
    call_id: str,
    attempt: int,
    outcome: CallOutcome,
    *,
    team: Team | None = None,
    model: str | None = None,
    only_call: bool = False,
) -> Job | None:
    """Record a running call's end once; add it to its job's totals; end the job if it was last.

    `team` (the snapshot its claim read) and `model` (the call's) price it without a query.
    `only_call` (its claim saw one call in its job) reads the job's end facts in the call's own
    statement (`_FINISH_LAST`): one round trip fewer when the job is closed and has no other
    call. Returns the job if this ended it.
    """
    finished = await _record_finish(
        session, call_id, attempt, outcome, team=team, model=model, last=only_call
    )
    if finished is None:
        return None
    status = JobStatus(finished.status)
    read = finished.read
    if read is not None and status in JOB_CLOSED_ACTIVE and read.job.total_calls == 1:
        # Its only call, ended by this statement: the counts `_end_facts` would read.
        succeeded = []
        if outcome.status == CallStatus.SUCCEEDED:
            succeeded.append((call_id, read.billed, read.tokens))
        counts = {CallStatus(outcome.status).value: 1}
        facts = _EndFacts(read.team, read.job, counts, succeeded, read.now)
        end_status, error = _outcome(counts)
        return await _end(session, finished.job_id, end_status, error, facts)
    # Whether it was the job's last call is decided by a statement of its own, after this one:
    # see `_end_facts`. Within this statement it cannot be: its snapshot was taken before the
    # job's lock was granted, so a call of the same job that another worker finished and
    # committed while this one waited for that lock still looks running here; each of the two
    # would then leave the job to the other, and no one would end it.
    return await _finish_if_done(session, finished.job_id, finished.team_id, status)


async def finish_call_alone(
    session: AsyncSession,
    call_id: str,
    attempt: int,
    outcome: CallOutcome,
    *,
    team: Team,
    model: str | None = None,
) -> str | None:
    """`finish_call` for a call without a budget reservation, on an autocommit session: the
    call's end and its job's totals are one statement that commits by itself, so the job's row
    is locked only while Postgres runs it, never across a round trip to the worker. With every
    worker slot on one big job, that lock is what its calls' ends queue on.

    Returns the job's id when the job may end now (it is closed and no call of it is queued or
    running any more), for `maybe_finish_job` in a transaction of its own; else None. The probe
    is a statement of its own, after the commit: the last of several concurrent ends to commit
    sees all the others committed, so at least one of them hands the job on (and
    `maybe_finish_job`, under the job's lock, ends it once). A worker that dies between the two
    leaves a job whose calls have all ended, which the reconciler ends (its step 3)."""
    finished = await _record_finish(session, call_id, attempt, outcome, team=team, model=model)
    if finished is None:
        return None
    job_id, status = finished.job_id, finished.status
    if JobStatus(status) not in JOB_CLOSED_ACTIVE:
        return None  # open (step style, more calls may come) or already ended
    live = (await session.execute(_LIVE_CALL, {"job_id": job_id})).first()
    return job_id if live is None else None


async def fail_call(session: AsyncSession, call_id: str, error: dict[str, Any]) -> Job | None:
    """End an unfinished call that cannot run any more; ends its job if it was the last."""
    stmt = (
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id, Call.status.in_(CALL_ACTIVE))
        .values(status=CallStatus.FAILED, error=error, finished_at=func.now(), lease_until=None)
        .returning(Call.job_id)
    )
    job_id = (await session.execute(stmt)).scalar_one_or_none()
    if job_id is None:
        return None
    await lock_job(session, job_id)
    await settle_calls(session, [call_id])
    wake(session, "job", job_id)
    return await maybe_finish_job(session, job_id)


async def lock_active_calls(session: AsyncSession, job_id: str) -> list[str]:
    """Lock a job's unfinished calls, in id order (before the job's own lock: see above)."""
    stmt = (
        select(Call.id)
        .where(Call.job_id == job_id, Call.status.in_(CALL_ACTIVE))
        .order_by(Call.id)
        .with_for_update()
    )
    return list((await session.execute(stmt)).scalars().all())


async def stop_calls(
    session: AsyncSession, call_ids: list[str], status: CallStatus, error: dict[str, Any] | None
) -> None:
    """End these (locked) unfinished calls of a locked job with `status`, without ending it."""
    if call_ids:
        await session.execute(
            update(Call)
            .execution_options(synchronize_session=False)
            .where(Call.id.in_(call_ids), Call.status.in_(CALL_ACTIVE))
            .values(status=status, error=error, finished_at=func.now(), lease_until=None)
        )
        await settle_calls(session, call_ids)


async def end_unfinished(
    session: AsyncSession,
    job_id: str,
    call_status: CallStatus,
    call_error: dict[str, Any] | None,
    *,
    job_error: dict[str, Any] | None,
) -> Job | None:
    """End a job's unfinished calls with `call_status`; with `job_error`, the job ends `expired`
    (step style, never completed), else it ends by its calls. Returns the job if this ended it."""
    call_ids = await lock_active_calls(session, job_id)
    job = await lock_job(session, job_id)
    await stop_calls(session, call_ids, call_status, call_error)
    if job.status not in JOB_LIVE:
        return None
    if job_error is not None:
        return await end_job(session, job, JobStatus.EXPIRED, job_error)
    if job.status == JobStatus.OPEN:
        job.status = JobStatus.RUNNING
        await session.flush()
    return await maybe_finish_job(session, job_id)
