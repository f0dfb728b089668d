"""Jobs and calls as the API shows them (also the `data` of job webhooks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row

from shared.jobs.schemas import CallOut, JobOut, RequestCounts, Usage
from shared.models import Call, Job


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
        billed_usd=call.billed_usd,
        budget_reserved_usd=call.budget_reserved_usd,
        credits_charged=call.credits_charged,
        latency_ms=call.latency_ms,
        attempts=call.attempts,
        litellm_call_id=call.litellm_call_id,
        cached=call.cached,
        error=call.error,
        created_at=call.created_at,
        started_at=call.started_at,
        finished_at=call.finished_at,
    )


def job_out(
    job: Job | Row[Any], counts: dict[str, int], calls: Sequence[Call] | None = None
) -> JobOut:
    """`job` is a `Job` or a row with its attributes (`shared.jobs.repository.JOB_COLUMNS`)."""
    rc = RequestCounts(total=sum(counts.values()), **{k: v for k, v in counts.items()})
    return JobOut(
        id=job.id,
        job_id=job.id,
        team_id=job.team_id,
        style=job.style,
        job_type=job.job_type,
        status=job.status,
        priority=job.priority,
        metadata=job.metadata_,
        webhook_url=job.webhook_url,
        request_counts=rc,
        usage=Usage(
            prompt_tokens=job.prompt_tokens,
            completion_tokens=job.completion_tokens,
            total_tokens=job.total_tokens,
        ),
        cost_usd=job.cost_usd,
        billed_usd=job.billed_usd,
        credits_reserved=job.credits_reserved,
        credits_charged=job.credits_charged,
        credits_refunded=job.credits_refunded,
        pause_reason=job.pause_reason,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        expires_at=job.expires_at,
        calls=[call_out(c) for c in calls] if calls is not None else None,
    )
