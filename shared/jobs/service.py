"""Submitting, reading and cancelling jobs for a team."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.errors import (
    BadRequest,
    Conflict,
    IdempotencyConflict,
    LimitExceeded,
    ModelNotAllowed,
    ModelNotFound,
    NotFound,
)
from shared.ids import new_id
from shared.jobs.lifecycle import ACTIVE_CALL, lock_active_calls, maybe_finish_job
from shared.jobs.repository import JobRepository
from shared.jobs.schemas import (
    CallOut,
    ChatRequest,
    JobCreate,
    JobOut,
    RequestCounts,
    StepJobCreate,
    Usage,
)
from shared.models import JOB_TERMINAL, Call, Job, Team
from shared.webhooks.events import record_job_event


@dataclass
class Submitted:
    """A job as submitted: `created` is False when an idempotent repeat returned the original."""

    job: Job
    call_ids: list[str]
    created: bool


def reject_nul(value: Any, param: str = "") -> None:
    """Refuse NUL characters anywhere in a payload: Postgres cannot store them in text or JSONB."""
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRequest("text must not contain NUL (\\u0000) characters", param=param or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_nul(key, param)
            reject_nul(item, f"{param}.{key}" if param else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            reject_nul(item, f"{param}[{index}]")


def request_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def call_out(call: Call, *, include_request: bool = False) -> CallOut:
    usage = None
    if call.total_tokens is not None:
        usage = Usage(
            prompt_tokens=call.prompt_tokens or 0,
            completion_tokens=call.completion_tokens or 0,
            total_tokens=call.total_tokens,
        )
    return CallOut(
        id=call.id,
        job_id=call.job_id,
        custom_id=call.custom_id,
        status=call.status,
        model=call.model_requested,
        model_used=call.model_used,
        request=call.request if include_request else None,
        response=call.response,
        usage=usage,
        cost_usd=call.cost_usd,
        latency_ms=call.latency_ms,
        attempts=call.attempts,
        litellm_call_id=call.litellm_call_id,
        error=call.error,
        created_at=call.created_at,
        started_at=call.started_at,
        finished_at=call.finished_at,
    )


def job_out(job: Job, counts: dict[str, int], calls: Sequence[Call] | None = None) -> JobOut:
    rc = RequestCounts(total=sum(counts.values()), **{k: v for k, v in counts.items()})
    return JobOut(
        id=job.id,
        job_id=job.id,
        team_id=job.team_id,
        style=job.style,
        job_type=job.job_type,
        status=job.status,
        metadata=job.metadata_,
        webhook_url=job.webhook_url,
        request_counts=rc,
        usage=Usage(
            prompt_tokens=job.prompt_tokens,
            completion_tokens=job.completion_tokens,
            total_tokens=job.total_tokens,
        ),
        cost_usd=job.cost_usd,
        credits_charged=job.credits_charged,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        expires_at=job.expires_at,
        calls=[call_out(c) for c in calls] if calls is not None else None,
    )


class JobService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.repo = JobRepository(session)

    # -- validation -------------------------------------------------------------------------

    def check_models(
        self, team: Team, requests: Sequence[ChatRequest], available: list[str]
    ) -> None:
        """Every model must be served by the proxy and allowed for the team."""
        allowed = set(team.allowed_models or [])
        for index, req in enumerate(requests):
            if req.model not in available:
                raise ModelNotFound(
                    f"unknown model {req.model!r}; available: {', '.join(available) or 'none'}",
                    param=f"requests[{index}].model",
                )
            if allowed and req.model not in allowed:
                raise ModelNotAllowed(
                    f"model {req.model!r} is not allowed for team {team.id!r}",
                    param=f"requests[{index}].model",
                )

    def _bodies(self, requests: Sequence[ChatRequest]) -> list[dict[str, Any]]:
        bodies = []
        for index, req in enumerate(requests):
            if len(req.messages) > self.settings.jobs_max_messages:
                raise LimitExceeded(
                    f"at most {self.settings.jobs_max_messages} messages per request",
                    param=f"requests[{index}].messages",
                )
            try:
                bodies.append(req.body())
            except ValueError as exc:
                raise BadRequest(str(exc), param=f"requests[{index}]") from exc
        return bodies

    def _max_requests(self, team: Team) -> int:
        limit = self.settings.jobs_max_requests
        if team.max_requests_per_job:
            limit = min(limit, team.max_requests_per_job)
        return limit

    # -- submission -------------------------------------------------------------------------

    async def replay(self, team: Team, data: JobCreate, key: str | None) -> Job | None:
        """The job an earlier identical request with this Idempotency-Key created, if any."""
        if key is None:
            return None  # no key: nothing to replay, and no need to hash the payload
        return await self._idempotent(team, key, request_hash(data.model_dump(mode="json")))

    async def _idempotent(self, team: Team, key: str | None, digest: str) -> Job | None:
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
        self,
        team: Team,
        data: JobCreate,
        available: list[str],
        *,
        idempotency_key: str | None = None,
    ) -> Submitted:
        """Create a job and all its calls, queued; the caller enqueues them after commit."""
        payload = data.model_dump(mode="json")
        digest = request_hash(payload)
        if (existing := await self._idempotent(team, idempotency_key, digest)) is not None:
            return Submitted(existing, [], created=False)
        reject_nul(payload)
        limit = self._max_requests(team)
        if len(data.requests) > limit:
            raise LimitExceeded(f"at most {limit} requests per job", param="requests")
        self.check_models(team, data.requests, available)
        bodies = self._bodies(data.requests)
        if data.timeout_seconds is not None:
            for body in bodies:
                body.setdefault("timeout", data.timeout_seconds)
        custom_ids = [
            req.custom_id if req.custom_id is not None else f"request-{i:06d}"
            for i, req in enumerate(data.requests)
        ]
        if len(set(custom_ids)) != len(custom_ids):
            raise BadRequest("custom_id must be unique within a job", param="requests")
        job = Job(
            id=new_id("job"),
            team_id=team.id,
            style="batch",
            job_type=data.job_type,
            metadata_=data.metadata,
            status="queued",
            webhook_url=str(data.webhook_url) if data.webhook_url else None,
            idempotency_key=idempotency_key,
            request_hash=digest,
            total_calls=len(bodies),
            deadline_at=(
                datetime.now(UTC) + timedelta(seconds=data.deadline_seconds)
                if data.deadline_seconds
                else None
            ),
        )
        calls = [
            Call(
                id=new_id("call"),
                job_id=job.id,
                team_id=team.id,
                seq=i,
                custom_id=custom_ids[i],
                model_requested=body["model"],
                request=body,
                status="queued",
            )
            for i, body in enumerate(bodies)
        ]
        try:
            async with self.session.begin_nested():
                self.session.add(job)
                await self.session.flush()
                self.session.add_all(calls)
                await self.session.flush()
        except IntegrityError:
            # A concurrent request with the same Idempotency-Key won the race.
            if idempotency_key and (again := await self._idempotent(team, idempotency_key, digest)):
                return Submitted(again, [], created=False)
            raise
        await self.session.refresh(job)
        return Submitted(job, [c.id for c in calls], created=True)

    async def create_step(self, team: Team, data: StepJobCreate) -> Job:
        if data.team_id is not None and data.team_id != team.id:
            raise BadRequest("team_id does not match the API key's team", param="team_id")
        reject_nul(data.model_dump(mode="json"))
        ttl = data.ttl_seconds or self.settings.jobs_open_ttl_seconds
        job = Job(
            id=new_id("job"),
            team_id=team.id,
            style="step",
            job_type=data.job_type,
            metadata_=data.metadata,
            status="open",
            webhook_url=str(data.webhook_url) if data.webhook_url else None,
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
        )
        self.session.add(job)
        await self.session.flush()
        await self.session.refresh(job)
        return job

    async def add_call(
        self, team: Team, job_id: str, req: ChatRequest, available: list[str]
    ) -> Call:
        reject_nul(req.model_dump(mode="json"))
        job = await self.repo.get(team.id, job_id, for_update=True)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job.status != "open":
            raise Conflict(f"job {job_id!r} is {job.status}; calls can be added only to open jobs")
        seq = await self.repo.next_seq(job.id)
        if seq >= self._max_requests(team):
            raise LimitExceeded(f"at most {self._max_requests(team)} calls per job")
        self.check_models(team, [req], available)
        body = self._bodies([req])[0]
        custom_id = req.custom_id if req.custom_id is not None else f"request-{seq:06d}"
        if await self.repo.has_custom_id(job.id, custom_id):
            raise BadRequest(
                f"custom_id {custom_id!r} is already used in this job", param="custom_id"
            )
        call = Call(
            id=new_id("call"),
            job_id=job.id,
            team_id=team.id,
            seq=seq,
            custom_id=custom_id,
            model_requested=body["model"],
            request=body,
            status="queued",
        )
        self.session.add(call)
        job.total_calls = seq + 1
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError as exc:
            raise BadRequest("custom_id must be unique within a job", param="custom_id") from exc
        await self.session.refresh(call)
        return call

    async def complete(self, team: Team, job_id: str) -> Job:
        """Close an open job: it ends when its last call ends (now, if none is left)."""
        job = await self.repo.get(team.id, job_id, for_update=True)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        if job.status != "open":
            raise Conflict(f"job {job_id!r} is {job.status}, not open")
        job.status = "running" if job.started_at is not None else "queued"
        job.expires_at = None
        await self.session.flush()
        await maybe_finish_job(self.session, job.id)
        await self.session.refresh(job)
        return job

    async def cancel(self, team: Team, job_id: str) -> tuple[Job, list[str]]:
        """Cancel the unfinished calls and the job; returns the ids of the calls it stopped."""
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
            .where(Call.job_id == job.id, Call.status.in_(ACTIVE_CALL), Call.id.not_in(call_ids))
            .with_for_update(skip_locked=True)
        )
        call_ids += list((await self.session.execute(late)).scalars().all())
        if call_ids:
            await self.session.execute(
                update(Call)
                .where(Call.id.in_(call_ids), Call.status.in_(ACTIVE_CALL))
                .values(status="cancelled", finished_at=func.now(), lease_until=None)
            )
        job.status = "cancelled"
        job.finished_at = datetime.now(UTC)
        job.expires_at = None
        await self.session.flush()
        await self.session.refresh(job)
        await record_job_event(self.session, job)
        return job, call_ids

    # -- reading ----------------------------------------------------------------------------

    async def get(self, team: Team, job_id: str) -> Job:
        job = await self.repo.get(team.id, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    async def get_out(self, team: Team, job_id: str, *, include_calls: bool = False) -> JobOut:
        job = await self.get(team, job_id)
        counts = (await self.repo.counts([job.id]))[job.id]
        calls = await self.repo.calls(team.id, job.id) if include_calls else None
        return job_out(job, counts, calls)

    async def list_out(
        self,
        team: Team,
        *,
        status: str | None,
        job_type: str | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[JobOut], bool]:
        jobs = list(
            await self.repo.list(
                team.id, status=status, job_type=job_type, after=after, limit=limit + 1
            )
        )
        has_more = len(jobs) > limit
        jobs = jobs[:limit]
        counts = await self.repo.counts([j.id for j in jobs])
        return [job_out(j, counts[j.id]) for j in jobs], has_more

    async def calls(self, team: Team, job_id: str) -> Sequence[Call]:
        await self.get(team, job_id)
        return await self.repo.calls(team.id, job_id)

    async def call(self, team: Team, job_id: str, call_id: str) -> Call:
        call = await self.repo.call(team.id, job_id, call_id)
        if call is None:
            raise NotFound(f"no call {call_id!r} in job {job_id!r}")
        return call
