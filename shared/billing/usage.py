"""Usage reports: sums over a team's jobs (by the job's creation time), grouped by UTC day,
job type, model or team. Job figures are sums of their calls', so every grouping adds up to the
same totals. Served by `ix_jobs_team_id_created_at` and the calls' `(job_id, seq)` index."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Date, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing.schemas import UsageRow
from shared.models import Call, Job
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


async def usage(
    session: AsyncSession,
    team_id: str | None,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
) -> list[UsageRow]:
    """One row per group, ordered by group."""
    window = [Job.created_at >= start, Job.created_at < end]
    if team_id is not None:
        window.append(Job.team_id == team_id)
    if group_by == "model":
        key: Any = Call.model_requested
        stmt = (
            select(
                key,
                func.count(func.distinct(Call.job_id)),
                func.count(),
                func.coalesce(func.sum(Call.prompt_tokens), 0),
                func.coalesce(func.sum(Call.completion_tokens), 0),
                func.coalesce(func.sum(Call.total_tokens), 0),
                func.coalesce(func.sum(Call.cost_usd), 0),
                func.coalesce(func.sum(Call.billed_usd), 0),
                func.coalesce(func.sum(Call.credits_charged), 0),
            )
            .join(Job, Job.id == Call.job_id)
            .where(*window)
            .group_by(key)
            .order_by(key)
        )
    else:
        if group_by == "day":
            key = cast(func.timezone("UTC", Job.created_at), Date)
        elif group_by == "job_type":
            key = func.coalesce(Job.job_type, literal(""))
        else:
            key = Job.team_id
        stmt = (
            select(
                key,
                func.count(),
                func.coalesce(func.sum(Job.total_calls), 0),
                func.coalesce(func.sum(Job.prompt_tokens), 0),
                func.coalesce(func.sum(Job.completion_tokens), 0),
                func.coalesce(func.sum(Job.total_tokens), 0),
                func.coalesce(func.sum(Job.cost_usd), 0),
                func.coalesce(func.sum(Job.billed_usd), 0),
                func.coalesce(func.sum(Job.credits_charged), 0),
            )
            .where(*window)
            .group_by(key)
            .order_by(key)
        )
    rows = (await session.execute(stmt)).all()
    return [
        UsageRow(
            group=str(r[0]),
            jobs=r[1],
            calls=r[2],
            prompt_tokens=r[3],
            completion_tokens=r[4],
            total_tokens=r[5],
            cost_usd=r[6],
            billed_usd=r[7],
            credits=r[8],
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
