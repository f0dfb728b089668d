"""P3 alone, A/B: API submit latency at a fixed rate (open loop) for two database pool settings,
in alternating rounds against one database, with the Postgres sessions each round opened.

Two API processes run side by side (no worker: the jobs stay queued), one per pool setting,
each given as the query of `DATABASE_URL` (`pool_size=...&max_overflow=...`). Each round sends
`--rate` one-call submits per second for `--seconds` to one API, then the same to the other.
Printed per round: submit p50 / p99, the API's CPU per submit (/proc) and the Postgres
sessions the round opened (`pg_stat_database.sessions`: every connection a pool opens beyond
the ones it keeps is a backend start, an authentication and a prepare of every statement again).

    python -m bench.p3 [--rate 300] [--seconds 3] [--rounds 3] [--burst 0]
        [--a "pool_size=10&max_overflow=10"] [--b "pool_size=20&max_overflow=0"]

`--burst N` adds N concurrent submits at the start of each round (a client's burst), so that
the pool is asked for more connections than it keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

import aiohttp
import psycopg

from bench.throughput import body, cpu_seconds, fixed_rate, pct
from cli.stack import free_port, start_api, start_proxy
from tests.harness import (
    PG_ADMIN,
    create_database,
    drop_database,
    fake_proxy_config,
    new_team_key,
    platform_env,
    start_fake_provider,
)


def sessions(db: str) -> int:
    """Sessions ever established to this database (Postgres 14+)."""
    name = db.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


async def burst(api_url: str, key: str, n: int) -> None:
    tag = uuid.uuid4().hex[:6]
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=api_url, headers=headers) as session:

        async def one(i: int) -> None:
            async with session.post("/api/jobs", json={"requests": [body(tag, i, 0)]}) as r:
                await r.read()

        await asyncio.gather(*(one(i) for i in range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=0)
    parser.add_argument("--a", default="pool_size=10&max_overflow=10")
    parser.add_argument("--b", default="pool_size=20&max_overflow=0")
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="saas-llm-p3-"))
    db = create_database("saasllm_bench_")
    fake, fake_url = start_fake_provider(log_dir)
    procs = [fake]
    try:
        proxy_port = free_port()
        config = fake_proxy_config(log_dir, fake_url)
        procs.append(start_proxy(platform_env(db, "", ""), config, proxy_port, log_dir))
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        apis = {}
        queue = "saas-llm-bench-p3:" + uuid.uuid4().hex[:6]
        for name, query in (("a", args.a), ("b", args.b)):
            port = free_port()
            env = platform_env(f"{db}?{query}", queue, proxy_url)
            proc = start_api(env, port, log_dir, name=f"api-{name}")
            procs.append(proc)
            apis[name] = (f"http://127.0.0.1:{port}", proc, query)
        key = new_team_key(apis["a"][0], "bench-p3-")
        for url, _, _ in apis.values():
            # warm: imports, the key cache, each pool's first connections and statements
            asyncio.run(fixed_rate(url, key, 50, 1, wait_jobs=False))
        print(f"P3 A/B: {args.rate:.0f} one-call submits/s for {args.seconds:g} s a round")
        print(f"{'round':>5} {'pool':<30} | {'p50 ms':>7} {'p99 ms':>7} | CPU ms/submit | sessions")
        results: dict[str, list[tuple[float, float, float, int]]] = {"a": [], "b": []}
        for r in range(args.rounds):
            for name, (url, proc, query) in apis.items():
                opened = sessions(db)
                cpu = cpu_seconds(proc)
                if args.burst:
                    asyncio.run(burst(url, key, args.burst))
                p3 = asyncio.run(fixed_rate(url, key, args.rate, args.seconds, wait_jobs=False))
                cpu_ms = (cpu_seconds(proc) - cpu) / (p3["n"] + args.burst) * 1000
                opened = sessions(db) - opened
                results[name].append((p3["p50"] * 1000, p3["p99"] * 1000, cpu_ms, opened))
                print(
                    f"{r + 1:>5} {query:<30} | {p3['p50'] * 1000:7.1f} {p3['p99'] * 1000:7.1f} |"
                    f" {cpu_ms:13.2f} | {opened:8d}"
                )
        print()
        for name, (_, _, query) in apis.items():
            rows = results[name]
            print(
                f"{query:<30} p99 median {pct([x[1] for x in rows], 0.5):.1f} ms, "
                f"CPU median {pct([x[2] for x in rows], 0.5):.2f} ms/submit, "
                f"sessions opened {sum(x[3] for x in rows)} in {len(rows)} rounds"
            )
    finally:
        for proc in procs:
            proc.stop()
        drop_database(db)


if __name__ == "__main__":
    main()
