"""Tasks for calls: thin wrappers that hand the id to the call runner."""

from __future__ import annotations

from typing import Any

from shared.jobs.reconciler import reconcile
from shared.llm.runner import run_call as run_call_service
from shared.queue import retry_later, retry_now
from shared.runtime import Runtime


def _deps(ctx: dict[str, Any]) -> Runtime:
    rt: Runtime = ctx["deps"]
    return rt


async def run_call(ctx: dict[str, Any], call_id: str) -> str:
    """Run the fair choice for this call's queue entry (arq may deliver it more than once; the
    rows guard it). When another call ran and its own could not be queued afresh at once, the
    entry goes back to the queue for it."""
    outcome, swapped = await run_call_service(_deps(ctx), call_id)
    if outcome == "busy":
        retry_later(int(ctx.get("job_try", 1)))
    if swapped:
        retry_now()
    return outcome


async def reconcile_task(ctx: dict[str, Any]) -> None:
    """Periodic pass that re-queues lost work and ends stuck work."""
    deps = _deps(ctx)
    await reconcile(
        deps.sessionmaker,
        deps.queue,
        queued_grace_seconds=deps.settings.worker_requeue_grace_seconds,
        max_attempts=deps.settings.worker_max_attempts,
    )
