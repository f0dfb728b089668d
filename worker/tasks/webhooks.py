"""Tasks for webhooks: thin wrappers that hand the id to the dispatcher."""

from __future__ import annotations

from typing import Any

from shared.llm.service import WorkerDeps
from shared.webhooks.dispatch import deliver


async def deliver_event(ctx: dict[str, Any], delivery_id: str) -> str:
    """Make the next attempt of one delivery (arq may run this twice; the row guards it)."""
    deps: WorkerDeps = ctx["deps"]
    return await deliver(deps, delivery_id)
