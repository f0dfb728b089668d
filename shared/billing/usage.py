"""Usage reports: sums over a team's jobs (by the job's creation time), grouped by UTC day,
job type, model or team. Job figures are sums of their calls', so every grouping adds up to the
same totals. `credits` is net of refunds.

Ended jobs are read from `usage_rollup`, which the job-end transition keeps (`roll_up_cte`, in
the statement that ends the job, so a job is either live or rolled up, never both); live jobs
(few) are summed from their rows, in the same statement, so one snapshot answers. A window that
does not start and end at UTC midnights cannot be read from day rows and is summed from the
jobs and calls (served by `ix_jobs_team_id_created_at` and the calls' `(job_id, seq)` index)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import (
    CTE,
    Date,
    Integer,
    String,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing.schemas import UsageRow
from shared.models import JOB_LIVE, Call, Job, UsageRollup
from shared.models.base import Money
from shared.money import money_str

GroupBy = Literal["day", "model", "job_type", "team"]
FIELDS = (
    "group",
    "jobs",
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "billed_usd",
    "credits",
)


# A job's usage per model, added to (sign 1) or taken from (sign -1) its rollup rows. Rows are
# written in key order, so concurrent job ends of one team lock them in one order. A call's
# credits are its `credits_charged`, or its share in `:shares` (for the statement that ends the
# job, which writes them and cannot read its own writes).
_ROLL_UP_SQL = """
    WITH j AS (
        SELECT id, team_id, (created_at AT TIME ZONE 'UTC')::date AS day,
               coalesce(job_type, '') AS job_type, credits_refunded > 0 AS refunded
        FROM jobs WHERE id = ANY(:ids)
    ), c AS (
        SELECT c.job_id, c.model_requested AS model, count(*) AS calls, min(c.seq) AS first_seq,
               coalesce(sum(c.prompt_tokens), 0) AS pt,
               coalesce(sum(c.completion_tokens), 0) AS ct,
               coalesce(sum(c.total_tokens), 0) AS tt,
               coalesce(sum(c.cost_usd), 0) AS cost,
               coalesce(sum(c.billed_usd), 0) AS billed,
               coalesce(sum(coalesce(given.share, c.credits_charged)), 0) AS credits
        FROM calls c JOIN j ON j.id = c.job_id
        LEFT JOIN unnest(:share_ids, :shares) AS given(id, share) ON given.id = c.id
        GROUP BY c.job_id, c.model_requested
    ), r AS (
        SELECT j.team_id, j.day, c.model, j.job_type,
               (c.first_seq = min(c.first_seq) OVER (PARTITION BY c.job_id))::int AS jobs,
               1 AS model_jobs, c.calls, c.pt, c.ct, c.tt, c.cost, c.billed,
               CASE WHEN j.refunded THEN 0 ELSE c.credits END AS credits
        FROM c JOIN j ON j.id = c.job_id
        UNION ALL
        SELECT j.team_id, j.day, '', j.job_type, 1, 0, 0, 0, 0, 0, 0, 0, 0
        FROM j WHERE NOT EXISTS (SELECT 1 FROM calls WHERE calls.job_id = j.id)
    )
    INSERT INTO usage_rollup AS u (team_id, day, model, job_type, jobs, model_jobs, calls,
        prompt_tokens, completion_tokens, total_tokens, cost_usd, billed_usd, credits)
    SELECT team_id, day, model, job_type, :sign * sum(jobs), :sign * sum(model_jobs),
           :sign * sum(calls), :sign * sum(pt), :sign * sum(ct), :sign * sum(tt),
           :sign * sum(cost), :sign * sum(billed), :sign * sum(credits)
    FROM r GROUP BY team_id, day, model, job_type ORDER BY team_id, day, model, job_type
    ON CONFLICT (team_id, day, model, job_type) DO UPDATE SET
        jobs = u.jobs + excluded.jobs, model_jobs = u.model_jobs + excluded.model_jobs,
        calls = u.calls + excluded.calls, prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        total_tokens = u.total_tokens + excluded.total_tokens,
        cost_usd = u.cost_usd + excluded.cost_usd, billed_usd = u.billed_usd + excluded.billed_usd,
        credits = u.credits + excluded.credits
    """
_ROLL_UP_PARAMS = (
    bindparam("ids", type_=ARRAY(String)),
    bindparam("share_ids", type_=ARRAY(String)),
    bindparam("shares", type_=ARRAY(Money)),
)
_ROLL_UP = text(_ROLL_UP_SQL).bindparams(*_ROLL_UP_PARAMS)


async def roll_up_jobs(session: AsyncSession, job_ids: list[str], sign: int = 1) -> None:
    """Add the ended jobs' usage to the rollup (sign -1: take it out, to change a job)."""
    if job_ids:
        params = {"ids": list(job_ids), "sign": sign, "share_ids": [], "shares": []}
        await session.execute(_ROLL_UP, params)


# The job-end transition's CTE (see `roll_up_cte`): built once.
_ROLL_UP_CTE = (
    text(_ROLL_UP_SQL + " RETURNING u.team_id")
    .bindparams(*_ROLL_UP_PARAMS, bindparam("sign", type_=Integer))
    .columns(column("team_id"))
    .cte("rollup")
)


def roll_up_cte() -> CTE:
    """The ending job's usage into the rollup, as a CTE of the statement that ends the job
    (which writes the calls' shares of its charge), run with `roll_up_params`. The caller holds
    the team's lock, like every writer of the team's rollup rows."""
    return _ROLL_UP_CTE


def roll_up_params(job_id: str, shares: dict[str, Decimal]) -> dict[str, Any]:
    """The parameters of `roll_up_cte` for the job ending with these `shares` of its charge."""
    return {"ids": [job_id], "sign": 1, "share_ids": list(shares), "shares": list(shares.values())}


def _midnight(dt: datetime) -> bool:
    return dt.astimezone(UTC).time() == time(0)


def _raw_select(group_by: GroupBy, window: list[Any]) -> Any:
    """The sums over the jobs (and, by model, calls) in `window`."""
    net_job = Job.credits_charged - Job.credits_refunded
    if group_by == "model":
        key: Any = Call.model_requested
        net_call = case((Job.credits_refunded > 0, 0), else_=func.coalesce(Call.credits_charged, 0))
        return (
            select(
                key.label("k"),
                func.count(func.distinct(Call.job_id)).label("jobs"),
                func.count().label("calls"),
                func.coalesce(func.sum(Call.prompt_tokens), 0).label("pt"),
                func.coalesce(func.sum(Call.completion_tokens), 0).label("ct"),
                func.coalesce(func.sum(Call.total_tokens), 0).label("tt"),
                func.coalesce(func.sum(Call.cost_usd), 0).label("cost"),
                func.coalesce(func.sum(Call.billed_usd), 0).label("billed"),
                func.coalesce(func.sum(net_call), 0).label("credits"),
            )
            .join(Job, Job.id == Call.job_id)
            .where(*window)
            .group_by(key)
        )
    if group_by == "day":
        key = cast(func.timezone("UTC", Job.created_at), Date)
    elif group_by == "job_type":
        key = func.coalesce(Job.job_type, literal(""))
    else:
        key = Job.team_id
    return (
        select(
            key.label("k"),
            func.count().label("jobs"),
            func.coalesce(func.sum(Job.total_calls), 0).label("calls"),
            func.coalesce(func.sum(Job.prompt_tokens), 0).label("pt"),
            func.coalesce(func.sum(Job.completion_tokens), 0).label("ct"),
            func.coalesce(func.sum(Job.total_tokens), 0).label("tt"),
            func.coalesce(func.sum(Job.cost_usd), 0).label("cost"),
            func.coalesce(func.sum(Job.billed_usd), 0).label("billed"),
            func.coalesce(func.sum(net_job), 0).label("credits"),
        )
        .where(*window)
        .group_by(key)
    )


def _rollup_select(group_by: GroupBy, team_id: str | None, start: datetime, end: datetime) -> Any:
    u = UsageRollup
    where = [u.day >= start.astimezone(UTC).date(), u.day < end.astimezone(UTC).date()]
    if team_id is not None:
        where.append(u.team_id == team_id)
    keys: dict[str, Any] = {"day": u.day, "job_type": u.job_type, "team": u.team_id}
    key = u.model if group_by == "model" else keys[group_by]
    jobs = u.model_jobs if group_by == "model" else u.jobs
    if group_by == "model":
        where.append(u.calls > 0)  # not the rows of jobs without calls
    return (
        select(
            key.label("k"),
            func.sum(jobs).label("jobs"),
            func.sum(u.calls).label("calls"),
            func.sum(u.prompt_tokens).label("pt"),
            func.sum(u.completion_tokens).label("ct"),
            func.sum(u.total_tokens).label("tt"),
            func.sum(u.cost_usd).label("cost"),
            func.sum(u.billed_usd).label("billed"),
            func.sum(u.credits).label("credits"),
        )
        .where(*where)
        .group_by(key)
    )


async def usage(
    session: AsyncSession,
    team_id: str | None,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
    *,
    rollup: bool = True,
) -> list[UsageRow]:
    """One row per group, ordered by group (`rollup=False`: summed from the jobs and calls)."""
    window = [Job.created_at >= start, Job.created_at < end]
    if team_id is not None:
        window.append(Job.team_id == team_id)
    if rollup and _midnight(start) and _midnight(end):
        live = _raw_select(group_by, [*window, Job.status.in_(list(JOB_LIVE))])
        parts = union_all(_rollup_select(group_by, team_id, start, end), live).subquery()
        stmt: Any = (
            select(
                parts.c.k,
                func.sum(parts.c.jobs),
                func.sum(parts.c.calls),
                func.sum(parts.c.pt),
                func.sum(parts.c.ct),
                func.sum(parts.c.tt),
                func.sum(parts.c.cost),
                func.sum(parts.c.billed),
                func.sum(parts.c.credits),
            )
            .group_by(parts.c.k)
            .having(func.sum(parts.c.jobs) > 0)
            .order_by(parts.c.k)
        )
    else:
        sub = _raw_select(group_by, window).subquery()
        stmt = select(*sub.c).order_by(sub.c.k)
    rows = (await session.execute(stmt)).all()
    return [
        UsageRow(
            group=str(r[0]),
            jobs=int(r[1]),
            calls=int(r[2]),
            prompt_tokens=int(r[3]),
            completion_tokens=int(r[4]),
            total_tokens=int(r[5]),
            cost_usd=Decimal(r[6]),
            billed_usd=Decimal(r[7]),
            credits=Decimal(r[8]),
        )
        for r in rows
    ]


def total(rows: Sequence[UsageRow]) -> UsageRow:
    def add(name: str) -> Any:
        return sum((getattr(r, name) for r in rows), Decimal(0) if "usd" in name else 0)

    return UsageRow(
        group="total",
        jobs=add("jobs"),
        calls=add("calls"),
        prompt_tokens=add("prompt_tokens"),
        completion_tokens=add("completion_tokens"),
        total_tokens=add("total_tokens"),
        cost_usd=add("cost_usd"),
        billed_usd=add("billed_usd"),
        credits=sum((r.credits for r in rows), Decimal(0)),
    )


def to_csv(rows: Sequence[UsageRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for r in rows:
        writer.writerow(
            [
                r.group,
                r.jobs,
                r.calls,
                r.prompt_tokens,
                r.completion_tokens,
                r.total_tokens,
                money_str(r.cost_usd),
                money_str(r.billed_usd),
                money_str(r.credits),
            ]
        )
    return out.getvalue()
