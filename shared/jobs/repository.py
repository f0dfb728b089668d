"""Queries for jobs and calls; every team-facing query takes the team.

The API's hot paths are SQLAlchemy Core, one statement each: a batch submission inserts the
job and all its calls in one statement (`insert_batch`), and a job or a page of jobs is read
with its calls counted by status in the same statement (`get_with_counts`, `list_with_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ARRAY,
    Integer,
    Numeric,
    Row,
    Select,
    String,
    Table,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import LateralFromClause

from shared.models import Call, CallStatus, Job

JOBS: Table = Job.__table__  # type: ignore[assignment]
CALLS: Table = Call.__table__  # type: ignore[assignment]
# Every column of a job under its attribute name (`metadata` is `metadata_`), for rows that
# `shared.jobs.views.job_out` reads like a `Job`.
JOB_COLUMNS = tuple(
    JOBS.c[attr.columns[0].name].label(attr.key) for attr in Job.__mapper__.column_attrs
)
COUNT_PREFIX = "n_"


@dataclass
class NewCalls:
    """The calls of a new batch job, column by column (one array parameter each)."""

    ids: list[str]
    custom_ids: list[str]
    models: list[str]
    requests: list[str]  # JSON text
    max_tokens: list[int | None]
    max_billed_usd: list[Decimal | None]
    priority: int


def _counts() -> LateralFromClause:
    """A job's calls by status, one column per status: one index range of the job's calls."""
    return (
        select(
            *[
                func.count().filter(Call.status == s).label(COUNT_PREFIX + s.value)
                for s in CallStatus
            ]
        )
        .where(Call.job_id == JOBS.c.id)
        .lateral("counts")
    )


def counts_of(row: Row[Any]) -> dict[str, int]:
    """The per-status counts of a row read `with_counts`."""
    return {s.value: getattr(row, COUNT_PREFIX + s.value) for s in CallStatus}


def _with_counts() -> Select[Any]:
    counts = _counts()
    return select(*JOB_COLUMNS, *counts.c).select_from(JOBS).join(counts, true())


# The hot statements are built once: SQLAlchemy then memoizes their cache keys, so a request
# pays neither for building them nor for walking them to find the compiled form.
_GET = _with_counts().where(
    JOBS.c.team_id == bindparam("team_id"), JOBS.c.id == bindparam("job_id")
)
_LISTS: dict[tuple[bool, bool, bool], Select[Any]] = {}


def _list_statement(status: bool, job_type: bool, after: bool) -> Select[Any]:
    stmt = _LISTS.get((status, job_type, after))
    if stmt is None:
        stmt = _with_counts().where(JOBS.c.team_id == bindparam("team_id"))
        if status:
            stmt = stmt.where(JOBS.c.status == bindparam("status"))
        if job_type:
            stmt = stmt.where(JOBS.c.job_type == bindparam("job_type"))
        if after:
            stmt = stmt.where(JOBS.c.id < bindparam("after"))
        stmt = stmt.order_by(JOBS.c.id.desc()).limit(bindparam("limit", type_=Integer))
        _LISTS[(status, job_type, after)] = stmt
    return stmt


def _insert_batch() -> Select[Any]:
    """The job (every column it is given, as `j_<column>`; `created_at` defaults to now()) and
    its calls from one array per column. ON CONFLICT on the Idempotency-Key index: a job
    without a key is not in that (partial) index and never conflicts."""
    values: dict[str, Any] = {
        name: bindparam("j_" + name, type_=JOBS.c[name].type) for name in JOB_INSERT_COLUMNS
    }
    values["created_at"] = func.coalesce(
        bindparam("j_created_at", type_=JOBS.c.created_at.type), func.now()
    )
    new_job = (
        pg_insert(JOBS)
        .values(values)
        .on_conflict_do_nothing(
            index_elements=[JOBS.c.team_id, JOBS.c.idempotency_key],
            index_where=JOBS.c.idempotency_key.is_not(None),
        )
        .returning(*JOBS.c)
        .cte("new_job")
    )
    rows = (
        func.unnest(
            bindparam("call_ids", type_=ARRAY(String)),
            bindparam("custom_ids", type_=ARRAY(String)),
            bindparam("models", type_=ARRAY(String)),
            bindparam("requests", type_=ARRAY(Text)),
            bindparam("max_tokens", type_=ARRAY(Integer)),
            bindparam("max_billed_usd", type_=ARRAY(Numeric)),
        )
        .table_valued(
            "id",
            "custom_id",
            "model",
            "request",
            "max_tokens",
            "max_billed_usd",
            with_ordinality="seq",
        )
        .render_derived()
    )
    new_calls = insert(CALLS).from_select(
        [
            "id",
            "job_id",
            "team_id",
            "seq",
            "custom_id",
            "model_requested",
            "request",
            "status",
            "priority",
            "max_tokens",
            "max_billed_usd",
        ],
        select(
            rows.c.id,
            new_job.c.id,
            new_job.c.team_id,
            rows.c.seq - 1,
            rows.c.custom_id,
            rows.c.model,
            cast(rows.c.request, JSONB),
            literal(CallStatus.QUEUED.value, String),
            bindparam("call_priority", type_=Integer),
            rows.c.max_tokens,
            rows.c.max_billed_usd,
        )
        .select_from(new_job)
        .join(rows, true()),
    )
    return select(
        *(new_job.c[attr.columns[0].name].label(attr.key) for attr in Job.__mapper__.column_attrs)
    ).add_cte(new_calls.cte("new_calls"))


# What a batch submission sets on its job (the rest are the columns' defaults).
JOB_INSERT_COLUMNS = (
    "id",
    "team_id",
    "style",
    "job_type",
    "metadata",
    "status",
    "priority",
    "pause_reason",
    "paused_from",
    "credits_reserved",
    "webhook_url",
    "idempotency_key",
    "request_hash",
    "total_calls",
    "deadline_at",
)
_INSERT_BATCH = _insert_batch()


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, team_id: str, job_id: str, *, for_update: bool = False) -> Job | None:
        stmt = select(Job).where(Job.team_id == team_id, Job.id == job_id)
        if for_update:
            # Fresh values: the row may have changed while we waited for its lock.
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_with_counts(self, team_id: str, job_id: str) -> Row[Any] | None:
        """The job (attributes as on `Job`) and its calls by status (`counts_of`)."""
        params = {"team_id": team_id, "job_id": job_id}
        row: Row[Any] | None = (await self.session.execute(_GET, params)).first()
        return row

    async def by_idempotency_key(self, team_id: str, key: str) -> Job | None:
        stmt = select(Job).where(Job.team_id == team_id, Job.idempotency_key == key)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def insert_batch(self, job: dict[str, Any], calls: NewCalls) -> Row[Any] | None:
        """Insert a job and its calls in one statement; the job's row as stored (attributes as
        on `Job`), or None when another job already holds its Idempotency-Key (then nothing is
        inserted). The calls travel as one array per column: one statement text for any size."""
        params: dict[str, Any] = {"j_" + name: job.get(name) for name in JOB_INSERT_COLUMNS}
        params["j_created_at"] = job.get("created_at")
        params.update(
            call_ids=calls.ids,
            custom_ids=calls.custom_ids,
            models=calls.models,
            requests=calls.requests,
            max_tokens=calls.max_tokens,
            max_billed_usd=calls.max_billed_usd,
            call_priority=calls.priority,
        )
        row: Row[Any] | None = (await self.session.execute(_INSERT_BATCH, params)).first()
        return row

    async def list(
        self,
        team_id: str,
        *,
        status: str | None,
        job_type: str | None,
        after: str | None,
        limit: int,
    ) -> Sequence[Job]:
        """Newest first; `after` is the last id of the previous page."""
        stmt = select(Job).where(Job.team_id == team_id).order_by(Job.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(Job.status == status)
        if job_type:
            stmt = stmt.where(Job.job_type == job_type)
        if after:
            stmt = stmt.where(Job.id < after)
        return (await self.session.execute(stmt)).scalars().all()

    async def list_with_counts(
        self,
        team_id: str,
        *,
        status: str | None,
        job_type: str | None,
        after: str | None,
        limit: int,
    ) -> Sequence[Row[Any]]:
        """Newest first (`after`: the last id of the previous page), each job with its calls by
        status (`counts_of`), in one statement."""
        stmt = _list_statement(bool(status), bool(job_type), bool(after))
        params = {
            "team_id": team_id,
            "status": status,
            "job_type": job_type,
            "after": after,
            "limit": limit,
        }
        rows: Sequence[Row[Any]] = (await self.session.execute(stmt, params)).all()
        return rows

    async def calls(self, team_id: str, job_id: str) -> Sequence[Call]:
        stmt = (
            select(Call)
            .where(Call.team_id == team_id, Call.job_id == job_id)
            .order_by(Call.custom_id, Call.seq)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def call(self, team_id: str, job_id: str, call_id: str) -> Call | None:
        stmt = select(Call).where(
            Call.team_id == team_id, Call.job_id == job_id, Call.id == call_id
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def counts(self, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Calls by status for each job: {job_id: {status: n}}."""
        if not job_ids:
            return {}
        stmt = (
            select(Call.job_id, Call.status, func.count())
            .where(Call.job_id.in_(job_ids))
            .group_by(Call.job_id, Call.status)
        )
        out: dict[str, dict[str, int]] = {job_id: {} for job_id in job_ids}
        for job_id, status, n in (await self.session.execute(stmt)).all():
            out[job_id][status] = n
        return out

    async def has_custom_id(self, job_id: str, custom_id: str) -> bool:
        stmt = select(Call.id).where(Call.job_id == job_id, Call.custom_id == custom_id).limit(1)
        return (await self.session.execute(stmt)).first() is not None

    async def next_seq(self, job_id: str) -> int:
        stmt = select(func.coalesce(func.max(Call.seq), -1) + 1).where(Call.job_id == job_id)
        return int((await self.session.execute(stmt)).scalar_one())
