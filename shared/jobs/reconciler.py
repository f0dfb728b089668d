"""The reconciler: makes Postgres and the queue agree again after crashes and lost Redis data.

Safe to run on every worker at once: each pass takes rows with `FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from arq.connections import ArqRedis
from sqlalchemy import func, select, update

from shared.db import SessionMaker, transaction
from shared.jobs.lifecycle import ACTIVE_CALL, maybe_finish_job
from shared.models import Call, Job
from shared.queue import enqueue_call
from shared.webhooks.events import record_job_event

log = logging.getLogger("saas_llm.reconciler")
BATCH = 500


@dataclass
class ReconcileReport:
    requeued: int = 0
    released: int = 0
    finished: int = 0
    expired: int = 0


async def reconcile(
    sessionmaker: SessionMaker, queue: ArqRedis, *, queued_grace_seconds: float
) -> ReconcileReport:
    """One pass; every step is idempotent."""
    report = ReconcileReport()
    grace = timedelta(seconds=queued_grace_seconds)

    # 1. Running calls whose lease ran out: their worker died. Hand them back to the queue.
    async with transaction(sessionmaker) as session:
        stale = (
            (
                await session.execute(
                    select(Call.id)
                    .where(Call.status == "running", Call.lease_until < func.now())
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        if stale:
            await session.execute(
                update(Call)
                .where(Call.id.in_(stale), Call.status == "running")
                .values(status="queued", lease_until=None, next_attempt_at=func.now())
            )
    report.released = len(stale)

    # 2. Queued calls due for a while: their queue entry may be lost. Enqueueing the same
    # attempt's id again is a no-op in arq when the entry still exists.
    async with transaction(sessionmaker) as session:
        due = (
            await session.execute(
                select(Call.id, Call.attempts)
                .where(
                    Call.status == "queued",
                    func.coalesce(Call.next_attempt_at, Call.created_at) < func.now() - grace,
                )
                .order_by(Call.created_at)
                .limit(BATCH * 4)
            )
        ).all()
    for call_id, attempts in due:
        await enqueue_call(queue, call_id, attempts=attempts)
    report.requeued = len(due)

    # 3. Closed jobs whose calls have all ended but that were never ended themselves.
    async with transaction(sessionmaker) as session:
        active = select(Call.id).where(Call.job_id == Job.id, Call.status.in_(ACTIVE_CALL))
        orphans = (
            (
                await session.execute(
                    select(Job.id)
                    .where(Job.status.in_(("queued", "running")), ~active.exists())
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for job_id in orphans:
            if await maybe_finish_job(session, job_id) is not None:
                report.finished += 1

    # 4. Jobs past their deadline: what is unfinished fails (late answers are discarded).
    async with transaction(sessionmaker) as session:
        late = (
            (
                await session.execute(
                    select(Job.id)
                    .where(
                        Job.status.in_(("open", "queued", "running")),
                        Job.deadline_at < func.now(),
                    )
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for job_id in late:
            await session.execute(
                update(Call)
                .where(Call.job_id == job_id, Call.status.in_(ACTIVE_CALL))
                .values(
                    status="failed",
                    finished_at=func.now(),
                    lease_until=None,
                    error={"type": "deadline_exceeded", "message": "the job's deadline passed"},
                )
            )
            await session.execute(
                update(Job).where(Job.id == job_id, Job.status == "open").values(status="running")
            )
            if await maybe_finish_job(session, job_id) is not None:
                report.finished += 1

    # 5. Step-style jobs left open past their expiry.
    async with transaction(sessionmaker) as session:
        expired = (
            (
                await session.execute(
                    select(Job)
                    .where(Job.status == "open", Job.expires_at < func.now())
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for job in expired:
            await session.execute(
                update(Call)
                .where(Call.job_id == job.id, Call.status.in_(ACTIVE_CALL))
                .values(status="cancelled", finished_at=func.now(), lease_until=None)
            )
            job.status = "expired"
            job.finished_at = func.now()
            job.error = {
                "type": "expired",
                "message": "the job was not completed before it expired",
            }
            await record_job_event(session, job)
            report.expired += 1

    if report.requeued or report.released or report.finished or report.expired:
        log.info("reconciled", extra=report.__dict__)
    return report
