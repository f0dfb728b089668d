"""Submitting, reading and cancelling jobs for a team."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from shared.billing.periods import created_stamp
from shared.db import after_commit, last_statement_alone
from shared.errors import BadRequest, Conflict, IdempotencyConflict, NotFound
from shared.ids import new_id
from shared.jobs.admission import Admission, reject_nul
from shared.jobs.lifecycle import (
    end_job,
    lock_active_calls,
    maybe_finish_job,
    stop_calls,
)
from shared.jobs.money import record_job_paused
from shared.jobs.repository import JobRepository, NewCalls, counts_of
from shared.jobs.schemas import ChatRequest, JobCreate, JobOut, StepJobCreate
from shared.jobs.views import job_out
from shared.models import (
    CALL_ACTIVE,
    JOB_TERMINAL,
    Call,
    CallStatus,
    Job,
    JobStatus,
    JobStyle,
    Priority,
    Team,
)
from shared.queue import enqueue_call, enqueue_new_calls, publish_cancel
from shared.runtime import Runtime


@dataclass
class Submitted:
    """A job as submitted: `created` is False when an idempotent repeat returned the original."""

    job: Job
    call_ids: list[str]
    created: bool


def request_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def dump_json(value: Any) -> str:
    """JSON text for a JSONB column (what the engine's serializer would send)."""
    return json.dumps(value, separators=(",", ":"))


def attach(session: AsyncSession, job: Job) -> Job:
    """A job built from a row just written (RETURNING), made part of `session` like a loaded
    one, without a query."""
    make_transient_to_detached(job)
    session.add(job)
    return job


async def release_credits(session: AsyncSession, team_id: str, amount: Decimal) -> None:
    """Hand back credits an admission reserved for a job that was not stored after all."""
    await session.execute(
        update(Team)
        .execution_options(synchronize_session=False)
        .where(Team.id == team_id)
        .values(credits_reserved=Team.credits_reserved - amount)
    )


class JobService:
    """A team's jobs: submit (through admission), add calls, complete, cancel, read.

    Services enqueue their own work after the commit (`shared.db.after_commit`)."""

    def __init__(self, session: AsyncSession, rt: Runtime) -> None:
        self.session = session
        self.rt = rt
        self.settings = rt.settings
        self.admission = Admission(rt.settings, rt.catalog, rt.limiter, session)
        self.repo = JobRepository(session)

    # -- submission -------------------------------------------------------------------------

    async def replay(self, team: Team, data: JobCreate, key: str | None) -> Job | None:
        """The job an earlier identical request with this Idempotency-Key created, if any."""
        if key is None:
            return None  # no key: nothing to replay, and no need to hash the payload
        return await self._idempotent(team, key, request_hash(data.model_dump(mode="json")))

    async def _idempotent(self, team: Team, key: str | None, digest: str | None) -> Job | None:
        if key is None:
            return None
        existing = await self.repo.by_idempotency_key(team.id, key)
        if existing is None:
            return None
        ttl = timedelta(seconds=self.settings.idempotency_ttl_seconds)
        if existing.created_at < datetime.now(UTC) - ttl:
            # The key has expired: free it for this new request.
            existing.idempotency_key = None
            await self.session.flush()
            return None
        if existing.request_hash != digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request", param="Idempotency-Key"
            )
        return existing

    async def submit_batch(
        self, team: Team, data: JobCreate, *, idempotency_key: str | None = None
    ) -> Submitted:
        """Create a job and all its calls, queued (enqueued once the transaction commits)."""
        payload = data.model_dump(mode="json")
        # The hash only ever answers a repeat under the same key: without one, none is stored.
        digest = request_hash(payload) if idempotency_key is not None else None
        if (existing := await self._idempotent(team, idempotency_key, digest)) is not None:
            return Submitted(existing, [], created=False)
        reject_nul(payload)
        custom_ids = [
            req.custom_id if req.custom_id is not None else f"request-{i:06d}"
            for i, req in enumerate(data.requests)
        ]
        if len(set(custom_ids)) != len(custom_ids):
            raise BadRequest("custom_id must be unique within a job", param="requests")
        admitted = await self.admission.admit(
            team, data.requests, timeout_seconds=data.timeout_seconds
        )
        money = admitted.money
        job_values: dict[str, Any] = {
            "id": new_id("job"),
            **created_stamp(),
            "team_id": team.id,
            "style": JobStyle.BATCH.value,
            "job_type": data.job_type,
            "metadata": data.metadata,
            "status": (JobStatus.PAUSED if money.pause_reason else JobStatus.QUEUED).value,
            "priority": data.priority.value,
            "pause_reason": money.pause_reason,
            "paused_from": JobStatus.QUEUED.value if money.pause_reason else None,
            "credits_reserved": money.credits_reserved,
            "webhook_url": str(data.webhook_url) if data.webhook_url else None,
            "idempotency_key": idempotency_key,
            "request_hash": digest,
            "total_calls": len(admitted.bodies),
            "deadline_at": (
                datetime.now(UTC) + timedelta(seconds=data.deadline_seconds)
                if data.deadline_seconds
                else None
            ),
        }
        call_ids = [new_id("call") for _ in admitted.bodies]
        calls = NewCalls(
            ids=call_ids,
            custom_ids=custom_ids,
            models=[body["model"] for body in admitted.bodies],
            requests=[dump_json(body) for body in admitted.bodies],
            max_tokens=[w.tokens for w in money.worst],
            max_billed_usd=[w.billed_usd for w in money.worst],
            priority=data.priority.rank,
        )
        if idempotency_key is None and not money.pause_reason:
            # Then the insert is the request's last statement (no conflict to settle, no pause
            # to record); if admission ran none (no credits held, no budget), it is the only one.
            await last_statement_alone(self.session)
        row = await self.repo.insert_batch(job_values, calls)
        if row is None:
            # A concurrent request with the same Idempotency-Key won the race (ON CONFLICT DO
            # NOTHING waited for it to commit): nothing was inserted; hand back what this
            # admission reserved, and answer with the original.
            if money.credits_reserved > 0:
                await release_credits(self.session, team.id, money.credits_reserved)
            again = await self._idempotent(team, idempotency_key, digest)
            if again is None:
                raise Conflict(
                    "a concurrent request with this Idempotency-Key did not finish; retry"
                )
            return Submitted(again, [], created=False)
        job = attach(self.session, Job(**row._asdict()))
        if money.pause_reason:
            await record_job_paused(self.session, job)
        else:
            queue = self.rt.queue
            after_commit(self.session, lambda: enqueue_new_calls(queue, call_ids))
        return Submitted(job, call_ids, created=True)

    async def create_step(self, team: Team, data: StepJobCreate) -> Job:
        if data.team_id is not None and data.team_id != team.id:
            raise BadRequest("team_id does not match the API key's team", param="team_id")
        reject_nul(data.model_dump(mode="json"))
        ttl = data.ttl_seconds or self.settings.jobs_open_ttl_seconds
        job = Job(
            id=new_id("job"),
            **created_stamp(),
            team_id=team.id,
            style=JobStyle.STEP,
            job_type=data.job_type,
            metadata_=data.metadata,
            status=JobStatus.OPEN,
            priority=data.priority,
            webhook_url=str(data.webhook_url) if data.webhook_url else None,
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
        )
        self.session.add(job)
        await self.session.flush()
        await self.session.refresh(job)
        return job

    async def add_call(self, team: Team, job_id: str, req: ChatRequest) -> Call:
        """Queue one call on an open job (through admission; enqueued after commit)."""
        reject_nul(req.model_dump(mode="json"))
        job = await self.repo.get(team.id, job_id, for_update=True)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job.status != JobStatus.OPEN:
            raise Conflict(f"job {job_id!r} is {job.status}; calls can be added only to open jobs")
        # A step job waits for its caller: at a money limit its calls answer 402, never pause.
        seq = await self.repo.next_seq(job.id)
        custom_id = req.custom_id if req.custom_id is not None else f"request-{seq:06d}"
        if await self.repo.has_custom_id(job.id, custom_id):
            raise BadRequest(
                f"custom_id {custom_id!r} is already used in this job", param="custom_id"
            )
        admitted = await self.admission.admit(team, [req], already=seq, param="", can_pause=False)
        body, worst = admitted.bodies[0], admitted.money.worst[0]
        job.credits_reserved = job.credits_reserved + admitted.money.credits_reserved
        call = Call(
            id=new_id("call"),
            job_id=job.id,
            team_id=team.id,
            seq=seq,
            custom_id=custom_id,
            model_requested=body["model"],
            request=body,
            status=CallStatus.QUEUED,
            priority=Priority(job.priority).rank,
            max_tokens=worst.tokens,
            max_billed_usd=worst.billed_usd,
        )
        self.session.add(call)
        job.total_calls = seq + 1
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError as exc:
            raise BadRequest("custom_id must be unique within a job", param="custom_id") from exc
        await self.session.refresh(call)
        queue, call_id = self.rt.queue, call.id
        after_commit(self.session, lambda: enqueue_call(queue, call_id))
        return call

    async def complete(self, team: Team, job_id: str) -> Job:
        """Close an open job: it ends when its last call ends (now, if none is left)."""
        job = await self.repo.get(team.id, job_id, for_update=True)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job.status == JobStatus.PAUSED and job.paused_from == JobStatus.OPEN:
            # Paused at a money limit while open: it resumes closed.
            job.paused_from = JobStatus.RUNNING if job.started_at is not None else JobStatus.QUEUED
            await self.session.flush()
            return job
        if job.status != JobStatus.OPEN:
            raise Conflict(f"job {job_id!r} is {job.status}, not open")
        job.status = JobStatus.RUNNING if job.started_at is not None else JobStatus.QUEUED
        job.expires_at = None
        await self.session.flush()
        await maybe_finish_job(self.session, job.id)
        await self.session.refresh(job)
        return job

    async def cancel(self, team: Team, job_id: str) -> Job:
        """Cancel the unfinished calls and the job; running calls are aborted after commit."""
        if await self.repo.get(team.id, job_id) is None:
            raise NotFound(f"no job {job_id!r}")
        # Calls first, then the job: the order workers take, so the two never deadlock.
        call_ids = await lock_active_calls(self.session, job_id)
        job = await self.repo.get(team.id, job_id, for_update=True)
        assert job is not None
        if job.status in JOB_TERMINAL:
            raise Conflict(f"job {job_id!r} has already ended ({job.status})")
        # Also calls added while we waited for the lock; one a worker is claiming right now is
        # skipped here, and its claim refuses it once this commits.
        late = (
            select(Call.id)
            .where(Call.job_id == job.id, Call.status.in_(CALL_ACTIVE), Call.id.not_in(call_ids))
            .with_for_update(skip_locked=True)
        )
        call_ids += list((await self.session.execute(late)).scalars().all())
        await stop_calls(self.session, call_ids, CallStatus.CANCELLED, None)
        await end_job(self.session, job, JobStatus.CANCELLED)
        if call_ids:
            queue, settings = self.rt.queue, self.settings
            after_commit(self.session, lambda: publish_cancel(queue, settings, call_ids))
        return job

    # -- reading ----------------------------------------------------------------------------

    async def get(self, team: Team, job_id: str) -> Job:
        job = await self.repo.get(team.id, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    async def get_out(self, team: Team, job_id: str, *, include_calls: bool = False) -> JobOut:
        """The job as the API shows it: one statement (two with its calls)."""
        row = await self.repo.get_with_counts(team.id, job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        calls = await self.repo.calls(team.id, job_id) if include_calls else None
        return job_out(row, counts_of(row), calls)

    async def list_out(
        self,
        team: Team,
        *,
        status: str | None,
        job_type: str | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[JobOut], bool]:
        rows = await self.repo.list_with_counts(
            team.id, status=status, job_type=job_type, after=after, limit=limit + 1
        )
        has_more = len(rows) > limit
        return [job_out(r, counts_of(r)) for r in rows[:limit]], has_more

    async def calls(self, team: Team, job_id: str) -> Sequence[Call]:
        await self.get(team, job_id)
        return await self.repo.calls(team.id, job_id)

    async def call(self, team: Team, job_id: str, call_id: str) -> Call:
        call = await self.repo.call(team.id, job_id, call_id)
        if call is None:
            raise NotFound(f"no call {call_id!r} in job {job_id!r}")
        return call
