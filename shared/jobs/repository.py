"""Queries for jobs and calls; every team-facing query takes the team."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import Call, Job


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, team_id: str, job_id: str, *, for_update: bool = False) -> Job | None:
        stmt = select(Job).where(Job.team_id == team_id, Job.id == job_id)
        if for_update:
            # Fresh values: the row may have changed while we waited for its lock.
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_idempotency_key(self, team_id: str, key: str) -> Job | None:
        stmt = select(Job).where(Job.team_id == team_id, Job.idempotency_key == key)
        return (await self.session.execute(stmt)).scalar_one_or_none()

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
