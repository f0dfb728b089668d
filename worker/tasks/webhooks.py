"""Tasks for webhooks: thin wrappers that hand the id to the webhook runner."""

from __future__ import annotations

from typing import Any

from shared.runtime import Runtime
from shared.webhooks.delivery import WebhookSender
from shared.webhooks.runner import deliver


async def deliver_event(ctx: dict[str, Any], delivery_id: str) -> str:
    """Make the next attempt of one delivery (arq may run this twice; the row guards it)."""
    rt: Runtime = ctx["deps"]
    sender: WebhookSender = ctx["webhook_sender"]
    return await deliver(rt, delivery_id, sender)
