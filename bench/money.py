"""What the money checks cost, and how fast usage reports are with many calls stored.

Starts the stack on loopback (fake provider, real LiteLLM proxy, API, one worker) and runs rounds
of N one-call jobs at concurrency C for two teams, alternating: `plain` (no money settings) and
`money` (usd billing with markup, enforced credits, a budget with thresholds: every check on).
Prints submit latency p50/p99 for each and the difference, and the API and worker CPU per call.
Then stores `--usage-calls` calls (in jobs of 4 calls) for one team straight in Postgres, rolls
them up as migration 0010 does for jobs stored before it, and times `GET /api/usage` for each
grouping: from the rollup (a window of whole UTC days) and summed from the jobs and calls (a
window starting one second after midnight, which the rollup cannot answer). Usage:
    python -m bench.money [--jobs 300] [--concurrency 20] [--rounds 2] [--usage-calls 1000000]
    [--usage-only]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.throughput import body, cpu_seconds, pct
from cli.stack import Stack, free_port, start_api, start_proxy, start_worker
from tests.harness import (
    MASTER_KEY,
    create_database,
    drop_database,
    fake_proxy_config,
    platform_env,
    start_fake_provider,
)

MONEY = {
    "billing_mode": "usd",
    "credits_per_usd": "1000",
    "price_markup_pct": "20",
    "enforce_credits": True,
    "budget_usd": "1000000",
    "budget_period": "day",
    "budget_thresholds": [50, 80, 100],
    "low_credits_threshold": "1",
    "max_n": 4,
    "max_tokens_cap": 4096,
}


def team(api: str, fields: dict[str, Any]) -> str:
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    team_id = "bench-" + uuid.uuid4().hex[:6]
    httpx.post(
        api + "/api/admin/teams",
        json={"team_id": team_id, "name": team_id, **fields},
        headers=admin,
    ).raise_for_status()
    if fields.get("enforce_credits"):
        httpx.post(
            api + f"/api/admin/teams/{team_id}/credits", json={"amount": "1000000"}, headers=admin
        ).raise_for_status()
    key = httpx.post(api + f"/api/admin/teams/{team_id}/keys", json={}, headers=admin).json()
    return str(key["key"])


async def submit_round(api: str, key: str, n: int, concurrency: int) -> list[float]:
    """Submit n one-call jobs; returns each submit's latency (s). Waits until all ended."""
    tag = uuid.uuid4().hex[:6]
    latencies: list[float] = []
    counter = iter(range(n))
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=api, headers=headers, limits=limits, timeout=60) as c:

        async def loop() -> None:
            for i in counter:
                started = time.perf_counter()
                r = await c.post("/api/jobs", json={"requests": [body(tag, i, 0)], "job_type": tag})
                latencies.append(time.perf_counter() - started)
                r.raise_for_status()

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        while True:
            left = 0
            for status in ("queued", "running"):
                params = {"job_type": tag, "status": status, "limit": 1}
                left += len((await c.get("/api/jobs", params=params)).json()["data"])
            if not left:
                return latencies
            await asyncio.sleep(0.05)


def store_calls(db: str, team_id: str, calls: int) -> float:
    """Insert `calls` succeeded calls (4 per job) for `team_id`; returns seconds taken."""
    jobs = calls // 4
    started = time.perf_counter()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, team_id, style, job_type, status, total_calls, prompt_tokens,
                completion_tokens, total_tokens, cost_usd, billed_usd, credits_charged, created_at)
            SELECT 'job_bench' || g, %(t)s, 'batch', 'type' || (g %% 5), 'succeeded', 4, 40, 80,
                120, 0.0004, 0.00048, 0.48, now() - (g %% 30) * interval '1 day'
            FROM generate_series(1, %(jobs)s) g
            """,
            {"t": team_id, "jobs": jobs},
        )
        conn.execute(
            """
            INSERT INTO calls (id, job_id, team_id, seq, custom_id, model_requested, request,
                status, prompt_tokens, completion_tokens, total_tokens, cost_usd, billed_usd,
                credits_charged)
            SELECT 'call_bench' || g || '_' || s, 'job_bench' || g, %(t)s, s, 'c' || s,
                CASE WHEN s %% 2 = 0 THEN 'gpt-4o-mini' ELSE 'gpt-4o' END, '{}'::jsonb,
                'succeeded', 10, 20, 30, 0.0001, 0.00012, 0.12
            FROM generate_series(1, %(jobs)s) g, generate_series(0, 3) s
            """,
            {"t": team_id, "jobs": jobs},
        )
        conn.execute("ANALYZE jobs")
        conn.execute("ANALYZE calls")
    return time.perf_counter() - started


def roll_up(db: str, team_id: str) -> float:
    """Roll the team's stored jobs up as migration 0010 does; returns seconds taken."""
    migration = importlib.import_module("shared.migrations.versions.20261202_0009_usage_rollup")
    sql = migration.BACKFILL.replace("FROM jobs WHERE", "FROM jobs WHERE team_id = %(t)s AND")
    started = time.perf_counter()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql, {"t": team_id})
        conn.execute("ANALYZE usage_rollup")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--usage-calls", type=int, default=1_000_000)
    parser.add_argument("--usage-only", action="store_true", help="only the usage timings")
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="saas-llm-bench-money-"))
    db = create_database("saasllm_bench_")
    fake, fake_url = start_fake_provider(log_dir)
    procs = [fake]
    stack: Stack | None = None
    try:
        proxy_port = free_port()
        procs.append(
            start_proxy(
                platform_env(db, "", ""), fake_proxy_config(log_dir, fake_url), proxy_port, log_dir
            )
        )
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        env = platform_env(db, "saas-llm-bench:" + uuid.uuid4().hex[:6], proxy_url)
        api_port = free_port()
        stack = Stack(
            env=env, api_url=f"http://127.0.0.1:{api_port}", proxy_url=proxy_url, log_dir=log_dir
        )
        stack.procs["api"] = start_api(env, api_port, log_dir)
        stack.procs["worker"] = start_worker(env, log_dir)
        keys = {"plain": team(stack.api_url, {}), "money": team(stack.api_url, MONEY)}
        if args.usage_only:
            args.rounds, keys = 0, {}
        for key in keys.values():  # warm up
            asyncio.run(submit_round(stack.api_url, key, 20, 5))
        lat: dict[str, list[float]] = {"plain": [], "money": []}
        cpu: dict[str, dict[str, float]] = {k: {"api": 0.0, "worker": 0.0} for k in keys}
        for _ in range(args.rounds):
            for name, key in keys.items():
                before = {p: cpu_seconds(stack.procs[p]) for p in ("api", "worker")}
                lat[name] += asyncio.run(
                    submit_round(stack.api_url, key, args.jobs, args.concurrency)
                )
                for p in ("api", "worker"):
                    cpu[name][p] += cpu_seconds(stack.procs[p]) - before[p]
        n = args.jobs * args.rounds
        if keys:
            report_checks(n, args.concurrency, keys, lat, cpu)
        if args.usage_calls:
            usage_timings(db, stack.api_url, args.usage_calls)
    finally:
        if stack is not None:
            stack.stop()
        for proc in procs:
            proc.stop()
        drop_database(db)


def report_checks(
    n: int,
    concurrency: int,
    keys: dict[str, str],
    lat: dict[str, list[float]],
    cpu: dict[str, dict[str, float]],
) -> None:
    print(f"jobs={n} per team, concurrency={concurrency}, 1 call per job, 1 API, 1 worker")
    print(
        f"{'team':>6} | {'submit p50 ms':>13} {'p99 ms':>7} | {'API CPU ms/call':>15} {'worker CPU ms/call':>18}"
    )
    for name in keys:
        print(
            f"{name:>6} | {pct(lat[name], 0.5) * 1000:13.1f} {pct(lat[name], 0.99) * 1000:7.1f}"
            f" | {cpu[name]['api'] / n * 1000:15.2f} {cpu[name]['worker'] / n * 1000:18.2f}"
        )
    print(
        f" added | {(pct(lat['money'], 0.5) - pct(lat['plain'], 0.5)) * 1000:13.1f}"
        f" {(pct(lat['money'], 0.99) - pct(lat['plain'], 0.99)) * 1000:7.1f}"
        f" | {(cpu['money']['api'] - cpu['plain']['api']) / n * 1000:15.2f}"
        f" {(cpu['money']['worker'] - cpu['plain']['worker']) / n * 1000:18.2f}"
    )


def usage_timings(db: str, api_url: str, usage_calls: int) -> None:
    team_id = "usage-" + uuid.uuid4().hex[:6]
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    httpx.post(
        api_url + "/api/admin/teams", json={"team_id": team_id, "name": team_id}, headers=admin
    ).raise_for_status()
    key = httpx.post(api_url + f"/api/admin/teams/{team_id}/keys", json={}, headers=admin).json()[
        "key"
    ]
    took = store_calls(db, team_id, usage_calls)
    print(f"stored {usage_calls} calls in {usage_calls // 4} jobs ({took:.0f} s)")
    print(f"rolled them up as migration 0010 does ({roll_up(db, team_id):.1f} s)")
    headers = {"Authorization": f"Bearer {key}"}
    windows = {
        "rollup": {"from": "2000-01-01", "to": "2100-01-01"},
        "raw": {"from": "2000-01-01T00:00:01", "to": "2100-01-01"},
    }
    floor = []
    for _ in range(5):
        started = time.perf_counter()
        httpx.get(api_url + "/api/credits", headers=headers, timeout=60).raise_for_status()
        floor.append(time.perf_counter() - started)
    print(
        f"GET /api/credits (the floor: auth, one small read) best of 5: {min(floor) * 1000:.1f} ms"
    )
    answers: dict[str, dict[str, Any]] = {}
    for group_by in ("day", "job_type", "model"):
        for source, window in windows.items():
            times = []
            for _ in range(3):
                started = time.perf_counter()
                r = httpx.get(
                    api_url + "/api/usage",
                    params={**window, "group_by": group_by},
                    headers=headers,
                    timeout=300,
                )
                times.append(time.perf_counter() - started)
                r.raise_for_status()
            answers[source] = r.json()
            calls = sum(row["calls"] for row in r.json()["data"])
            assert calls == usage_calls, calls
            print(
                f"usage group_by={group_by:<8} {source:<6} best of 3: {min(times) * 1000:8.1f} ms"
            )
        assert answers["rollup"]["data"] == answers["raw"]["data"], group_by


if __name__ == "__main__":
    main()
