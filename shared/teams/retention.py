"""Data retention: per-team deletion of request and response bodies, and erasure of a team's data.

A call's bodies (the prompt it was sent and the answer) are the only customer content the
platform keeps; tokens, cost, latency, status and billing are figures, never deleted by
retention. A team's `retention_days` makes the worker's retention cron replace the bodies of
calls of jobs that ended longer ago than that with a small marker; null keeps them for good.
"""

from __future__ import annotations

from sqlalchemy import Integer, cast, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import SessionMaker, transaction
from shared.errors import Conflict, NotFound
from shared.models import JOB_TERMINAL, Call, Job, Team, UsageRollup, WebhookEvent
from shared.teams.schemas import TeamDataDeleted

# What a call's `request` becomes once its bodies are deleted (the column is NOT NULL).
DELETED_REQUEST = {"deleted": "retention"}
RETENTION_BATCH = 1000


async def enforce_retention(sessionmaker: SessionMaker, batch: int = RETENTION_BATCH) -> int:
    """Delete bodies of calls of ended jobs past their team's `retention_days`, in batches of
    `batch` rows per transaction; returns how many calls were cleared. Safe to run anywhere."""
    marker = cast(literal(DELETED_REQUEST, JSONB), JSONB)
    cleared = 0
    while True:
        async with transaction(sessionmaker) as session:
            due = (
                select(Call.id)
                .join(Job, Job.id == Call.job_id)
                .join(Team, Team.id == Job.team_id)
                .where(
                    Team.retention_days.is_not(None),
                    Job.status.in_(list(JOB_TERMINAL)),
                    Job.finished_at
                    < func.now() - func.make_interval(0, 0, 0, cast(Team.retention_days, Integer)),
                    Call.request != marker,
                )
                .limit(batch)
                .with_for_update(of=Call, skip_locked=True)
            )
            result = await session.execute(
                update(Call)
                .where(Call.id.in_(due.scalar_subquery()))
                .values(request=marker, response=None)
                .returning(Call.id)
            )
            n = len(result.all())
        cleared += n
        if n < batch:
            return cleared


async def delete_team_data(session: AsyncSession, team_id: str) -> TeamDataDeleted:
    """Delete every job, call and webhook event (with deliveries and attempts) of a team; the
    team, its keys and its billing stay. Refused while a job is still active."""
    team = await session.get(Team, team_id, with_for_update=True)
    if team is None:
        raise NotFound(f"no team {team_id!r}")
    active = (
        await session.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.team_id == team_id, Job.status.not_in(list(JOB_TERMINAL)))
        )
    ).scalar_one()
    if active:
        raise Conflict(
            f"team {team_id!r} has {active} active job(s); cancel them or wait until they end"
        )
    calls = (
        await session.execute(select(func.count()).select_from(Call).where(Call.team_id == team_id))
    ).scalar_one()
    jobs = await session.execute(delete(Job).where(Job.team_id == team_id).returning(Job.id))
    await session.execute(delete(UsageRollup).where(UsageRollup.team_id == team_id))
    events = await session.execute(
        delete(WebhookEvent).where(WebhookEvent.team_id == team_id).returning(WebhookEvent.id)
    )
    return TeamDataDeleted(
        team_id=team_id,
        jobs=len(jobs.all()),
        calls=int(calls),
        webhook_events=len(events.all()),
    )
