"""The retention cron: deletes call bodies past each team's `retention_days`, and erases
webhook signing secrets whose grace period after a rotation is over."""

from __future__ import annotations

import logging
from typing import Any

from shared.db import transaction
from shared.runtime import Runtime
from shared.teams.retention import enforce_retention
from shared.webhooks.runner import erase_expired_secrets

log = logging.getLogger("saas_llm.retention")


async def retention_task(ctx: dict[str, Any]) -> int:
    """One retention pass (idempotent; every worker may run it)."""
    rt: Runtime = ctx["deps"]
    cleared = await enforce_retention(rt.sessionmaker)
    if cleared:
        log.info("call bodies deleted by retention", extra={"calls": cleared})
    async with transaction(rt.sessionmaker) as session:
        erased = await erase_expired_secrets(session)
    if erased:
        log.info("expired webhook secrets erased", extra={"count": erased})
    return cleared
