"""The retention cron: deletes call bodies past each team's `retention_days`."""

from __future__ import annotations

import logging
from typing import Any

from shared.runtime import Runtime
from shared.teams.retention import enforce_retention

log = logging.getLogger("saas_llm.retention")


async def retention_task(ctx: dict[str, Any]) -> int:
    """One retention pass (idempotent; every worker may run it)."""
    rt: Runtime = ctx["deps"]
    cleared = await enforce_retention(rt.sessionmaker)
    if cleared:
        log.info("call bodies deleted by retention", extra={"calls": cleared})
    return cleared
