"""The reconciler: makes Postgres and the queue agree again after crashes and lost Redis data.

Safe to run on every worker at once: each pass takes rows with `FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, tuple_, update

from shared.billing.budget import settle_calls
from shared.db import SessionMaker, transaction
from shared.jobs.lifecycle import end_unfinished, fail_call, maybe_finish_job
from shared.jobs.money import billing_pass
from shared.models import (
    CALL_ACTIVE,
    JOB_CLOSED_ACTIVE,
    JOB_LIVE,
    Call,
    CallStatus,
    Job,
    JobStatus,
    Team,
    TeamStatus,
)
from shared.queue import Queue, enqueue_call, missing_call_tasks

log = logging.getLogger("saas_llm.reconciler")
BATCH = 500
REQUEUE_PAGES = 20


@dataclass
class ReconcileReport:
    requeued: int = 0
    released: int = 0
    finished: int = 0
    expired: int = 0
    failed: int = 0
    resumed: int = 0


WORKER_LOST = {
    "type": "worker_lost",
    "message": "the worker running this call stopped on every attempt",
}
DEADLINE = {"type": "deadline_exceeded", "message": "the job's deadline passed"}
EXPIRED = {"type": "expired", "message": "the job was not completed before it expired"}


async def reconcile(
    sessionmaker: SessionMaker,
    queue: Queue,
    *,
    queued_grace_seconds: float,
    max_attempts: int,
) -> ReconcileReport:
    """One pass; every step is idempotent."""
    report = ReconcileReport()
    grace = timedelta(seconds=queued_grace_seconds)

    # 1. Running calls whose lease ran out: their worker died. Hand them back to the queue, or
    # fail them once they have used every attempt (a call that kills its worker must not loop).
    async with transaction(sessionmaker) as session:
        stale = (
            await session.execute(
                select(Call.id, Call.attempts)
                .where(Call.status == CallStatus.RUNNING, Call.lease_until < func.now())
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
        ).all()
        retry = [call_id for call_id, attempts in stale if attempts < max_attempts]
        if retry:
            await session.execute(
                update(Call)
                .where(Call.id.in_(retry), Call.status == CallStatus.RUNNING)
                .values(status=CallStatus.QUEUED, lease_until=None, next_attempt_at=func.now())
            )
            await settle_calls(session, retry)
    report.released = len(retry)
    for call_id, attempts in stale:
        if attempts >= max_attempts:
            async with transaction(sessionmaker) as session:
                await fail_call(session, call_id, WORKER_LOST)
            report.failed += 1

    # 2. Queued calls due for a while: their queue entry may be lost. Pages through them (so a
    # large backlog that is merely waiting, e.g. behind a team's in-flight limit, does not hide
    # lost ones behind it) and enqueues only those whose entry is missing. Calls of suspended
    # teams wait, without queue entries, until the team is resumed.
    team_active = select(Team.id).where(Team.id == Call.team_id, Team.status == TeamStatus.ACTIVE)
    # Calls of paused jobs wait without queue entries too, until the job resumes.
    not_paused = select(Job.id).where(Job.id == Call.job_id, Job.status != JobStatus.PAUSED)
    after: tuple[datetime, str] | None = None
    for _ in range(REQUEUE_PAGES):
        due_at = func.coalesce(Call.next_attempt_at, Call.created_at)
        stmt = (
            select(Call.id, Call.attempts, due_at)
            .where(
                Call.status == CallStatus.QUEUED,
                due_at < func.now() - grace,
                team_active.exists(),
                not_paused.exists(),
            )
            .order_by(due_at, Call.id)
            .limit(BATCH)
        )
        if after is not None:
            stmt = stmt.where(tuple_(due_at, Call.id) > after)
        async with transaction(sessionmaker) as session:
            page = (await session.execute(stmt)).all()
        if not page:
            break
        after = (page[-1][2], page[-1][0])
        for call_id, attempts in await missing_call_tasks(queue, [(r[0], r[1]) for r in page]):
            await enqueue_call(queue, call_id, attempts=attempts)
            report.requeued += 1

    # 3. Closed jobs whose calls have all ended but that were never ended themselves.
    async with transaction(sessionmaker) as session:
        active = select(Call.id).where(Call.job_id == Job.id, Call.status.in_(CALL_ACTIVE))
        orphans = (
            (
                await session.execute(
                    select(Job.id)
                    .where(Job.status.in_(JOB_CLOSED_ACTIVE), ~active.exists())
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
    # Each job in its own transaction, locking its calls before the job like the worker does.
    async with transaction(sessionmaker) as session:
        late = (
            (
                await session.execute(
                    select(Job.id)
                    .where(
                        Job.status.in_(JOB_LIVE),
                        Job.deadline_at < func.now(),
                    )
                    .limit(BATCH)
                )
            )
            .scalars()
            .all()
        )
    for job_id in late:
        async with transaction(sessionmaker) as session:
            if await end_unfinished(session, job_id, CallStatus.FAILED, DEADLINE, job_error=None):
                report.finished += 1

    # 5. Step-style jobs left open past their expiry.
    async with transaction(sessionmaker) as session:
        expired = (
            (
                await session.execute(
                    select(Job.id)
                    .where(Job.status == JobStatus.OPEN, Job.expires_at < func.now())
                    .limit(BATCH)
                )
            )
            .scalars()
            .all()
        )
    for job_id in expired:
        async with transaction(sessionmaker) as session:
            if await end_unfinished(session, job_id, CallStatus.CANCELLED, None, job_error=EXPIRED):
                report.expired += 1

    # 6. Money: expired grants, monthly allowances, paused jobs that fit again.
    money = await billing_pass(sessionmaker, queue)
    report.resumed = money["resumed_calls"]

    if report.requeued or report.released or report.finished or report.expired:
        log.info("reconciled", extra=report.__dict__)
    return report
