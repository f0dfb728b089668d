"""Per-team request rate limit (`requests_per_minute`), counted in Redis per calendar minute."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.errors import LimitExceeded, RateLimited
from shared.models import Team

log = logging.getLogger("saas_llm.limits")


async def consume_requests(redis: Redis, prefix: str, team: Team, n: int) -> None:
    """Count `n` LLM requests against the team's per-minute limit, or refuse them all.

    Fails open when Redis is unreachable: the job is durable in Postgres either way.
    """
    limit = team.requests_per_minute
    if not limit:
        return
    if n > limit:
        raise LimitExceeded(
            f"this job has {n} requests but team {team.id!r} may submit {limit} per minute",
            param="requests",
        )
    now = time.time()
    key = f"{prefix}:rpm:{team.id}:{int(now // 60)}"

    async def count() -> int:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, n)
            pipe.expire(key, 120)
            total, _ = await pipe.execute()
        if total > limit:
            await redis.decrby(key, n)
        return int(total)

    try:
        used = await asyncio.wait_for(count(), timeout=2.0)
    except (RedisError, OSError, TimeoutError):
        log.warning("rate limit not checked: Redis unavailable", extra={"team_id": team.id})
        return
    if used > limit:
        raise RateLimited(
            f"team {team.id!r} may submit {limit} requests per minute; retry after the minute",
            retry_after=max(1, 60 - int(now) % 60),
        )
