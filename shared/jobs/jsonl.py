"""Big batch jobs, as OpenAI's Batch API takes them: a JSONL body, one request per line.

`submit_jsonl` reads the body as it arrives (never all of it at once), validates each line, runs
admission on every chunk of `CHUNK` requests (so every request passes it, money checks included)
and inserts the chunk's calls with one multi-row INSERT, all in the request's one transaction: a
bad line anywhere refuses the whole job (400, `param` names the line) and nothing is stored. The
memory held is one chunk plus the call ids (enqueued once the transaction has committed).

A line is either a request (`{"custom_id", "model", "messages", ...}`, as in a JSON submission)
or an OpenAI Batch line (`{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body": {...}}`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.billing.periods import created_stamp
from shared.config import Settings
from shared.errors import AppError, BadRequest, LimitExceeded
from shared.ids import new_id
from shared.jobs.admission import Admission, Catalog, reject_nul
from shared.jobs.schemas import ChatRequest
from shared.models import Call, CallStatus, Job, JobStatus, JobStyle, Priority, Team
from shared.teams.limits import RequestLimiter

CHUNK = 1000
CALLS = cast(Table, Call.__table__)
BATCH_URLS = ("/v1/chat/completions", "/chat/completions")


@dataclass
class JsonlOptions:
    """Job-level fields of a JSONL submission (query parameters)."""

    job_type: str | None = None
    webhook_url: str | None = None
    timeout_seconds: float | None = None
    deadline_seconds: float | None = None
    priority: Priority = Priority.NORMAL


async def lines(chunks: AsyncIterator[bytes], *, max_line_bytes: int) -> AsyncIterator[bytes]:
    """The non-blank lines of a byte stream, each at most `max_line_bytes`."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        if len(pending) > max_line_bytes:
            raise LimitExceeded(f"a line is longer than {max_line_bytes} bytes")
        for line in complete:
            if line.strip():
                if len(line) > max_line_bytes:
                    raise LimitExceeded(f"a line is longer than {max_line_bytes} bytes")
                yield line
    if pending.strip():
        yield pending


def parse_line(raw: bytes, number: int) -> ChatRequest:
    where = f"line {number}"
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"{where} is not valid JSON", param=where) from exc
    if not isinstance(data, dict):
        raise BadRequest(f"{where} must be a JSON object", param=where)
    if "body" in data and ("url" in data or "method" in data):  # an OpenAI Batch line
        if data.get("method", "POST") != "POST" or data.get("url", BATCH_URLS[0]) not in BATCH_URLS:
            raise BadRequest(f"{where}: only POST {BATCH_URLS[0]} is supported", param=where)
        body = data["body"]
        if not isinstance(body, dict):
            raise BadRequest(f"{where}: body must be a JSON object", param=where)
        data = {**body, "custom_id": data.get("custom_id")}
    reject_nul(data, where)
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        param = f"{where}.{loc}" if loc else where
        raise BadRequest(f"{param}: {first.get('msg', 'invalid value')}", param=param) from exc


class JsonlSubmission:
    """One JSONL job being stored; `call_ids` are enqueued by the caller after commit."""

    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        catalog: Catalog,
        limiter: RequestLimiter,
    ) -> None:
        self.session = session
        self.settings = settings
        # Admission as for every submission, with the JSONL job size as the request limit.
        big = settings.model_copy(update={"jobs_max_requests": settings.jobs_max_jsonl_requests})
        self.admission = Admission(big, catalog, limiter, session)
        self.call_ids: list[str] = []
        self.paused = False

    async def submit(self, team: Team, body: AsyncIterator[bytes], opts: JsonlOptions) -> Job:
        job = Job(
            id=new_id("job"),
            **created_stamp(),
            team_id=team.id,
            style=JobStyle.BATCH,
            job_type=opts.job_type,
            metadata_={},
            status=JobStatus.QUEUED,
            priority=opts.priority,
            webhook_url=opts.webhook_url,
            total_calls=0,
            deadline_at=(
                datetime.now(UTC) + timedelta(seconds=opts.deadline_seconds)
                if opts.deadline_seconds
                else None
            ),
        )
        self.session.add(job)
        await self.session.flush()
        seen: set[str] = set()
        chunk: list[tuple[int, str, ChatRequest]] = []
        number = 0
        async for raw in lines(body, max_line_bytes=self.settings.jobs_max_body_bytes):
            number += 1
            request = parse_line(raw, number)
            custom_id = request.custom_id or f"request-{number - 1:06d}"
            if custom_id in seen:
                raise BadRequest(
                    f"line {number}: custom_id {custom_id!r} is used twice in this job",
                    param=f"line {number}",
                )
            seen.add(custom_id)
            chunk.append((number, custom_id, request))
            if len(chunk) >= CHUNK:
                await self._store(team, job, chunk, opts)
                chunk = []
        if chunk:
            await self._store(team, job, chunk, opts)
        if not self.call_ids:
            raise BadRequest("the JSONL body holds no request", param="body")
        job.total_calls = len(self.call_ids)
        await self.session.flush()
        await self.session.refresh(job)
        return job

    async def _store(
        self,
        team: Team,
        job: Job,
        chunk: list[tuple[int, str, ChatRequest]],
        opts: JsonlOptions,
    ) -> None:
        first = chunk[0][0]
        try:
            admitted = await self.admission.admit(
                team,
                [req for _, _, req in chunk],
                already=len(self.call_ids),
                timeout_seconds=opts.timeout_seconds,
            )
        except AppError as exc:
            # Admission names `requests[i]`: say which line that is.
            if exc.param and exc.param.startswith("requests["):
                index = int(exc.param[len("requests[") :].split("]", 1)[0])
                line = f"line {first + index}"
                exc.param = line + exc.param.split("]", 1)[1]
                exc.message = f"{line}: {exc.message}"
            raise
        money = admitted.money
        # The same money decision as a JSON submission: credits reserved on the job (the first
        # chunk holds a job-mode job's credit), each call's worst case, or the job waits paused.
        job.credits_reserved = (job.credits_reserved or 0) + money.credits_reserved
        if money.pause_reason and job.status != JobStatus.PAUSED:
            job.status, job.pause_reason, job.paused_from = (
                JobStatus.PAUSED,
                money.pause_reason,
                JobStatus.QUEUED,
            )
            self.paused = True
        rows: list[dict[str, Any]] = []
        for index, ((_, custom_id, _), request_body) in enumerate(
            zip(chunk, admitted.bodies, strict=True)
        ):
            worst = money.worst[index] if money.worst else None
            call_id = new_id("call")
            rows.append(
                {
                    "id": call_id,
                    "job_id": job.id,
                    "team_id": team.id,
                    "seq": len(self.call_ids),
                    "custom_id": custom_id,
                    "model_requested": request_body["model"],
                    "request": request_body,
                    "status": CallStatus.QUEUED,
                    "priority": opts.priority.rank,
                    "max_tokens": worst.tokens if worst else None,
                    "max_billed_usd": worst.billed_usd if worst else None,
                }
            )
            self.call_ids.append(call_id)
        await self.session.execute(insert(CALLS), rows)
