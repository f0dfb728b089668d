"""P5 scale: read latency with a big database. Builds a fresh migrated database holding `--jobs`
jobs (1 M) and `--calls-per-job` calls each (3 M) with INSERT ... SELECT over generate_series
(spread over `--teams` teams, all ended), runs VACUUM (ANALYZE), starts one API process on it and times,
one request at a time from the client:
  * `GET /api/jobs/{id}` of random jobs of one team (the job and its per-status counts);
  * `GET /api/jobs?limit=20` list pages of that team, from random cursors (`after`).
Prints p50 / p99 of each and the database's size; drops the database at the end. Usage:
    python -m bench.scale [--jobs 1000000] [--calls-per-job 3] [--teams 10] [--requests 500]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from bench.throughput import pct
from cli.stack import free_port, start_api
from tests.harness import MASTER_KEY, create_database, drop_database, platform_env

REQUEST = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "summarise this"}]}'
RESPONSE = '{"object": "chat.completion", "choices": [{"message": {"content": "ok"}}]}'


def job_id(g: int) -> str:
    return "job_00" + str(g).rjust(24, "0")


def build(url: str, jobs: int, per_job: int, teams: int) -> float:
    """Fill the database; returns the seconds it took."""
    started = time.perf_counter()
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO teams (id, name) SELECT 'scale-' || t, 'scale ' || t"
            " FROM generate_series(0, %s) t",
            (teams - 1,),
        )
        step = 100_000
        for lo in range(1, jobs + 1, step):
            hi = min(jobs, lo + step - 1)
            conn.execute(
                """
                INSERT INTO jobs (id, team_id, style, status, total_calls, created_at, started_at,
                                  finished_at, prompt_tokens, completion_tokens, total_tokens,
                                  cost_usd, billed_usd)
                SELECT 'job_00' || lpad(g::text, 24, '0'), 'scale-' || (g %% %(teams)s), 'batch',
                       'succeeded', %(per)s::int, now() - (%(jobs)s::int - g) * interval '1 second',
                       now() - (%(jobs)s - g) * interval '1 second',
                       now() - (%(jobs)s - g) * interval '1 second' + interval '2 seconds',
                       30 * %(per)s, 10 * %(per)s, 40 * %(per)s, 0.0001 * %(per)s, 0.0001 * %(per)s
                FROM generate_series(%(lo)s::int, %(hi)s::int) g
                """,
                {"teams": teams, "per": per_job, "jobs": jobs, "lo": lo, "hi": hi},
            )
            conn.execute(
                """
                INSERT INTO calls (id, job_id, team_id, seq, custom_id, model_requested,
                                   model_used, request, response, status, prompt_tokens,
                                   completion_tokens, total_tokens, cost_usd, billed_usd,
                                   latency_ms, attempts, created_at, started_at, finished_at)
                SELECT 'call_00' || lpad((g * %(per)s + s)::text, 24, '0'),
                       'job_00' || lpad(g::text, 24, '0'), 'scale-' || (g %% %(teams)s), s,
                       'request-' || lpad(s::text, 6, '0'), 'gpt-4o-mini', 'gpt-4o-mini',
                       %(req)s::jsonb, %(resp)s::jsonb, 'succeeded', 30, 10, 40, 0.0001, 0.0001,
                       500, 1, now() - (%(jobs)s - g) * interval '1 second',
                       now() - (%(jobs)s - g) * interval '1 second',
                       now() - (%(jobs)s - g) * interval '1 second' + interval '1 second'
                FROM generate_series(%(lo)s::int, %(hi)s::int) g,
                     generate_series(0, %(per)s::int - 1) s
                """,
                {
                    "teams": teams,
                    "per": per_job,
                    "jobs": jobs,
                    "lo": lo,
                    "hi": hi,
                    "req": REQUEST,
                    "resp": RESPONSE,
                },
            )
            print(f"  {hi:,} jobs stored ({time.perf_counter() - started:.0f} s)", flush=True)
        # As a long-lived database is: vacuumed (so autovacuum does not run through the timed
        # reads, and the visibility map lets counts read the index alone) and analysed.
        conn.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - started


def db_size(url: str) -> str:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        return str(row.fetchone()[0])  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--calls-per-job", type=int, default=3)
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (its URL is printed) for --reuse"
    )
    parser.add_argument("--reuse", metavar="URL", help="time a database an earlier --keep built")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="saas-llm-scale-"))
    url = args.reuse or create_database("saasllm_scale_")
    api = None
    try:
        if not args.reuse:
            print(f"building {args.jobs:,} jobs, {args.jobs * args.calls_per_job:,} calls ...")
            seconds = build(url, args.jobs, args.calls_per_job, args.teams)
            print(f"built in {seconds:.0f} s; database {db_size(url)}")
        env = platform_env(url, "saas-llm-scale:" + uuid.uuid4().hex[:6], "")
        port = free_port()
        api = start_api(env, port, log_dir, name="api-scale")
        base = f"http://127.0.0.1:{port}"
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        made = httpx.post(base + "/api/admin/teams/scale-0/keys", json={}, headers=admin)
        made.raise_for_status()
        key = made.json()["key"]
        mine = [g for g in range(args.teams, args.jobs + 1, args.teams)]  # team scale-0's jobs
        rng = random.Random(7)
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            for _ in range(20):  # warm up
                client.get(f"/api/jobs/{job_id(rng.choice(mine))}").raise_for_status()
            gets: list[float] = []
            for _ in range(args.requests):
                t = time.perf_counter()
                r = client.get(f"/api/jobs/{job_id(rng.choice(mine))}")
                gets.append(time.perf_counter() - t)
                r.raise_for_status()
                assert r.json()["request_counts"]["total"] == args.calls_per_job
            pages: list[float] = []
            for i in range(args.requests):
                params: dict[str, str | int] = {"limit": 20}
                if i % 10:  # one in ten the first page, the others from a random cursor
                    params["after"] = job_id(rng.choice(mine))
                t = time.perf_counter()
                r = client.get("/api/jobs", params=params)
                pages.append(time.perf_counter() - t)
                r.raise_for_status()
                assert len(r.json()["data"]) > 0
        print(
            f"\n| figure ({args.jobs:,} jobs, {args.jobs * args.calls_per_job:,} calls, "
            f"{args.teams} teams, {args.requests} requests each, one at a time) | p50 ms | p99 ms |"
        )
        print("|---|---:|---:|")
        print(
            f"| GET /api/jobs/{{id}} | {pct(gets, 0.5) * 1000:.1f} | {pct(gets, 0.99) * 1000:.1f} |"
        )
        print(
            f"| GET /api/jobs?limit=20 (list page) | {pct(pages, 0.5) * 1000:.1f} | "
            f"{pct(pages, 0.99) * 1000:.1f} |"
        )
    finally:
        if api is not None:
            api.stop()
        if args.keep or args.reuse:
            print(f"database kept: --reuse {url}")
        else:
            drop_database(url)


if __name__ == "__main__":
    main()
