"""Per-team request rate limit (`requests_per_minute`), counted in Redis per calendar minute;
the failed-authentication throttle; per-minute budgets (webhook redeliveries)."""

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


def _window(now: float, seconds: int) -> tuple[int, int]:
    """The fixed window `now` falls in, and the seconds until it ends (at least 1)."""
    index = int(now // seconds)
    return index, max(1, int((index + 1) * seconds - now))


class AuthThrottle:
    """Failed authentications per client address and per key prefix, per window, in Redis.

    Only keys that were presented and refused count (unknown, revoked, expired, or not the admin
    key); a missing or malformed header does not. Once a window has `limit` failures, every
    request from that address or with that key prefix gets 429 until the window ends, before the
    key is even looked up. If Redis is unreachable the throttle is skipped (logged): the key is
    still checked against Postgres, so authentication itself never fails open.
    """

    TIMEOUT = 0.5

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        per_address: int,
        per_key_prefix: int,
        window_seconds: int = 60,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.per_address = per_address
        self.per_key_prefix = per_key_prefix
        self.window = max(1, window_seconds)

    def _keys(self, address: str, key_prefix: str, index: int) -> list[tuple[str, int]]:
        keys = []
        if self.per_address > 0:
            keys.append((f"{self.prefix}:authfail:addr:{address}:{index}", self.per_address))
        if self.per_key_prefix > 0 and key_prefix:
            keys.append((f"{self.prefix}:authfail:key:{key_prefix}:{index}", self.per_key_prefix))
        return keys

    async def check(self, address: str, key_prefix: str) -> None:
        """429 if this address or key prefix has failed too often in the current window."""
        index, retry_after = _window(time.time(), self.window)
        keys = self._keys(address, key_prefix, index)
        if not keys:
            return
        try:
            counts = await asyncio.wait_for(
                self.redis.mget([k for k, _ in keys]), timeout=self.TIMEOUT
            )
        except (RedisError, OSError, TimeoutError):
            log.warning("authentication throttle not checked: Redis unavailable")
            return
        for (_, limit), count in zip(keys, counts, strict=True):
            if count is not None and int(count) >= limit:
                raise RateLimited(
                    "too many failed authentication attempts; retry after the window ends",
                    retry_after=retry_after,
                )

    async def failed(self, address: str, key_prefix: str) -> None:
        """Count one refused key."""
        index, _ = _window(time.time(), self.window)
        keys = self._keys(address, key_prefix, index)
        if not keys:
            return

        async def count() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, _ in keys:
                    pipe.incr(key)
                    pipe.expire(key, self.window * 2)
                await pipe.execute()

        try:
            await asyncio.wait_for(count(), timeout=self.TIMEOUT)
        except (RedisError, OSError, TimeoutError):
            log.warning("failed authentication not counted: Redis unavailable")


async def consume_per_minute(
    redis: Redis, key: str, n: int, limit: int, what: str, *, fail_open: bool = True
) -> None:
    """Count `n` uses of a per-minute budget of `limit`, or refuse all `n` with 429.

    A request for more than the whole budget is refused at once (it could never pass). When Redis
    is unreachable the budget is not enforced (logged).
    """
    if limit <= 0:
        return
    index, retry_after = _window(time.time(), 60)
    if n > limit:
        raise RateLimited(
            f"{what}: {n} at once is more than the {limit} allowed per minute; narrow the request",
            retry_after=retry_after,
            limit=limit,
        )
    window_key = f"{key}:{index}"

    async def count() -> int:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incrby(window_key, n)
            pipe.expire(window_key, 120)
            total, _ = await pipe.execute()
        if total > limit:
            await redis.decrby(window_key, n)
        return int(total)

    try:
        used = await asyncio.wait_for(count(), timeout=2.0)
    except (RedisError, OSError, TimeoutError):
        if not fail_open:
            raise
        log.warning("%s not limited: Redis unavailable", what)
        return
    if used > limit:
        raise RateLimited(
            f"{what}: at most {limit} per minute; retry after the minute",
            retry_after=retry_after,
            limit=limit,
        )
