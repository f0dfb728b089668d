"""Cost of the key lookup path of every team request, in µs: the SHA-256 of the key, the
authentication query (key joined with its team) on a real PostgreSQL, and the failed-auth
throttle's Redis check (one MGET), each alone and together, as medians over N runs; then the
same path with the key in the in-process cache (shared/teams/keycache.py): the hash, the cache
entry and the team attached to the session without a query, and the throttle check.

    .venv/bin/python -m bench.key_lookup [-n 2000]

Uses a fresh migrated database (dropped at the end) and the local Redis, like the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from shared.config import Settings
from shared.db import create_engine, create_sessionmaker
from shared.teams.keycache import KeyCache
from shared.teams.limits import AuthThrottle
from shared.teams.schemas import KeyCreate, TeamCreate
from shared.teams.service import TeamService, hash_key
from tests.harness import REDIS_URL, create_database, drop_database


async def _median_us(n: int, step: Callable[[], Awaitable[object]]) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        await step()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(samples)


async def main(n: int, url: str) -> None:
    try:
        settings = Settings(environment="test", database_url=url)
        engine = create_engine(settings)
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            service = TeamService(session)
            await service.create(TeamCreate(team_id="bench", name="bench"))
            raw = (await service.create_key("bench", KeyCreate(name="b"))).key
            await session.commit()
        redis = Redis.from_url(REDIS_URL)
        throttle = AuthThrottle(redis, "bench", per_address=30, per_key_prefix=30)

        async def digest() -> object:
            return hash_key(raw)

        async with sessionmaker() as session:
            service = TeamService(session)

            async def lookup() -> object:
                return await service.authenticate_key(raw)

            async def check() -> object:
                await throttle.check("127.0.0.1", raw[:10])
                return None

            async def path() -> object:
                await throttle.check("127.0.0.1", raw[:10])
                return await service.authenticate_key(raw)

            cache = KeyCache(5.0)
            cache.connected = True
            key, team = await service.authenticate_key(raw)
            cache.put(hash_key(raw), key, team)

            async def cached() -> object:
                entry = cache.get(hash_key(raw))
                assert entry is not None
                return await cache.team_of(session, entry)

            async def cached_path() -> object:
                await throttle.check("127.0.0.1", raw[:10])
                return await cached()

            for step in (lookup, check, cached):  # warm up connections and statement caches
                await _median_us(50, step)
            results = {
                "sha256 of the key": await _median_us(n, digest),
                "key + team query (PostgreSQL)": await _median_us(n, lookup),
                "throttle check (Redis MGET)": await _median_us(n, check),
                "whole lookup path": await _median_us(n, path),
                "cached: hash + entry + team": await _median_us(n, cached),
                "cached: whole path (+ throttle)": await _median_us(n, cached_path),
            }
        await redis.aclose()
        await engine.dispose()
    finally:
        drop_database(url)
    for name, value in results.items():
        print(f"{name:32s} {value:8.1f} µs (median of {n})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    # Migrations run their own event loop: make the database before this one starts.
    asyncio.run(main(parser.parse_args().n, create_database("saasllm_bench_")))
