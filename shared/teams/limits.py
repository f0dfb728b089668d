"""Per-team request rate limit (`requests_per_minute`), counted in Redis per calendar minute."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.errors import LimitExceeded, RateLimited
from shared.models import Team

log = logging.getLogger("saas_llm.limits")
Clock = Callable[[], float]


class RequestLimiter(Protocol):
    """Counts a team's LLM requests at admission, or refuses them."""

    async def consume(self, team: Team, n: int) -> None: ...


class RedisRequestLimiter:
    """Fixed calendar-minute windows in Redis; `clock` (epoch seconds) is injectable for tests."""

    def __init__(self, redis: Redis, prefix: str, *, clock: Clock = time.time) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clock = clock

    async def consume(self, team: Team, n: int) -> None:
        """Count `n` LLM requests against the team's per-minute limit, or refuse them all.

        Fails open when Redis is unreachable: the job is durable in Postgres either way, and
        money limits (credits, budgets) are enforced in Postgres, not here."""
        limit = team.requests_per_minute
        if not limit:
            return
        if n > limit:
            raise LimitExceeded(
                f"this job has {n} requests but team {team.id!r} may submit {limit} per minute",
                param="requests",
            )
        now = self.clock()
        key = f"{self.prefix}:rpm:{team.id}:{int(now // 60)}"

        async def count() -> int:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrby(key, n)
                pipe.expire(key, 120)
                total, _ = await pipe.execute()
            if total > limit:
                await self.redis.decrby(key, n)
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
