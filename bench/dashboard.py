"""Time to first byte of the dashboard's job pages with many jobs stored, and every page's weight.

Makes a throwaway database, fills it with `--jobs` jobs (one call each) spread over 30 days and
100 teams using generate_series, starts the API (uvicorn, no worker or proxy needed to read), signs
in as an owner, then times `--requests` GETs of each page (sequentially; TTFB = until the first
body byte) and prints p50/p99 and the bytes of HTML plus the static files each page loads.
    python -m bench.dashboard [--jobs 1000000] [--requests 200] [--ledger 100000]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from cli.stack import free_port, start_api
from tests.harness import create_database, drop_database, platform_env

# ULID-shaped ids from SQL: 10 Crockford base32 characters of the millisecond, then 16 hex ones
# (hex digits are Crockford characters too), so the ids sort by time as the platform's do.
_B32 = "'0123456789ABCDEFGHJKMNPQRSTVWXYZ'"
_MS_CHARS = " || ".join(
    f"substr({_B32}, ((ms >> {5 * i}) & 31)::int + 1, 1)" for i in range(9, -1, -1)
)

FILL = f"""
INSERT INTO teams (id, name) SELECT 'bench-' || t, 'Bench team ' || t FROM generate_series(0, 99) t;
CREATE TEMP TABLE seq AS
  SELECT n,
         (extract(epoch FROM now()) * 1000)::bigint - ((JOBS - n)::bigint * 2592000000 / JOBS) AS ms
  FROM generate_series(1, JOBS) n;
INSERT INTO jobs (id, team_id, style, job_type, status, total_calls, prompt_tokens,
                  completion_tokens, total_tokens, cost_usd, created_at, started_at, finished_at)
SELECT 'job_' || {_MS_CHARS} || upper(substr(md5(n::text), 1, 16)),
       'bench-' || (n % 100), 'batch', CASE WHEN n % 3 = 0 THEN 'summarise' ELSE 'classify' END,
       CASE WHEN n % 50 = 0 THEN 'failed' WHEN n % 97 = 0 THEN 'cancelled' ELSE 'succeeded' END,
       1, 40, 12, 52, 0.0000132, to_timestamp(ms / 1000.0), to_timestamp(ms / 1000.0),
       to_timestamp(ms / 1000.0 + 1)
FROM seq;
INSERT INTO calls (id, job_id, team_id, seq, custom_id, model_requested, model_used, request,
                   status, response, prompt_tokens, completion_tokens, total_tokens, cost_usd,
                   latency_ms, attempts, created_at, started_at, finished_at)
SELECT 'call_' || {_MS_CHARS} || upper(substr(md5(n::text), 1, 16)),
       'job_' || {_MS_CHARS} || upper(substr(md5(n::text), 1, 16)),
       'bench-' || (n % 100), 0, 'c' || n, 'gpt-4o-mini', 'openai/gpt-4o-mini',
       '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "hello"}}]}}'::jsonb,
       CASE WHEN n % 50 = 0 THEN 'failed' WHEN n % 97 = 0 THEN 'cancelled' ELSE 'succeeded' END,
       '{{"choices": [{{"message": {{"role": "assistant", "content": "hi"}}}}]}}'::jsonb,
       40, 12, 52, 0.0000132, 120, 1, to_timestamp(ms / 1000.0), to_timestamp(ms / 1000.0),
       to_timestamp(ms / 1000.0 + 1)
FROM seq;
"""


# Money: every team has a daily budget with this period's row; bench-7 has a long ledger.
FILL_MONEY = """
UPDATE teams SET budget_usd = 5, budget_period = 'day';
INSERT INTO budget_periods (team_id, period_start, period, spent_usd, reserved_usd)
SELECT id, date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', 'day',
       (row_number() OVER (ORDER BY id)) * 0.04, 0
FROM teams;
INSERT INTO credit_entries (team_id, kind, amount, balance_after, note, created_at)
SELECT 'bench-7', 'grant', 1, n, 'bench', now() - (ENTRIES - n) * interval '1 minute'
FROM generate_series(1, ENTRIES) n;
UPDATE teams SET credits_balance = ENTRIES WHERE id = 'bench-7';
"""


def fill(url: str, jobs: int, entries: int) -> float:
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL.replace("JOBS", str(int(jobs))).encode())
        conn.execute(FILL_MONEY.replace("ENTRIES", str(int(entries))).encode())
        conn.execute("VACUUM ANALYZE jobs")
        conn.execute("VACUUM ANALYZE calls")
        conn.execute("VACUUM ANALYZE credit_entries")
    return time.monotonic() - started


def sign_in(client: httpx.Client, email: str, password: str) -> None:
    page = client.get("/admin/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    r = client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": token.group(1), "next": "/admin"},
    )
    assert r.status_code == 303, r.text


def ttfb(client: httpx.Client, path: str, n: int) -> tuple[list[float], int, str]:
    times: list[float] = []
    body = b""
    for _ in range(n):
        started = time.perf_counter()
        with client.stream("GET", path) as response:
            chunks = response.iter_raw()
            first = next(chunks, b"")
            times.append(time.perf_counter() - started)
            body = first + b"".join(chunks)
            assert response.status_code == 200, (path, response.status_code)
    return times, len(body), body.decode(errors="replace")


def assets(client: httpx.Client, html: str) -> int:
    total = 0
    for ref in set(re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', html)):
        total += len(client.get(ref).content)
    return total


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--ledger", type=int, default=100_000, help="ledger entries of bench-7")
    args = parser.parse_args()
    url = create_database("saasllm_benchui_")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    api = None
    try:
        print(f"filling {args.jobs} jobs and calls, {args.ledger} ledger entries ...", flush=True)
        print(f"  filled in {fill(url, args.jobs, args.ledger):.1f}s", flush=True)
        env = platform_env(url, "bench-ui:q", "http://127.0.0.1:9")
        env.update(SAAS_LLM_ADMIN_PASSWORD="bench-password-123")
        import subprocess

        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli.main",
                "admin",
                "create",
                "--email",
                "bench@example.com",
                "--role",
                "owner",
                "--password-env",
                "--database-url",
                url,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        port = free_port()
        api = start_api(env, port, log_dir)
        with psycopg.connect(url) as conn:
            newest = conn.execute("SELECT id FROM jobs ORDER BY id DESC LIMIT 1").fetchone()
            middle = conn.execute(
                "SELECT id FROM jobs WHERE team_id = 'bench-7' ORDER BY id LIMIT 1 OFFSET %s",
                (args.jobs // 400,),
            ).fetchone()
        assert newest and middle
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            sign_in(client, "bench@example.com", "bench-password-123")
            pages = {
                "jobs (newest 50)": "/admin/jobs",
                "jobs, page 2 (keyset)": None,
                "jobs ?status=failed": "/admin/jobs?status=failed",
                "jobs ?team_id=bench-7&status=succeeded": "/admin/jobs?team_id=bench-7&status=succeeded",
                "jobs ?since= (a day, 10 days ago)": None,
                "job detail (newest)": f"/admin/jobs/{newest[0]}",
                "job detail (old, one team)": f"/admin/jobs/{middle[0]}",
                "team detail with ledger (bench-7)": "/admin/teams/bench-7",
                "team detail, ledger page 2 (keyset)": None,
                "overview/live (100 budgets)": "/admin/overview/live",
            }
            team_page = client.get("/admin/teams/bench-7").text
            older = re.search(r"ledger_after=(\d+)", team_page)
            assert older
            pages["team detail, ledger page 2 (keyset)"] = (
                f"/admin/teams/bench-7?ledger_after={older.group(1)}"
            )
            first = client.get("/admin/jobs").text
            before = re.search(r"before=(job_[0-9A-Z]+)", first)
            assert before
            pages["jobs, page 2 (keyset)"] = f"/admin/jobs?before={before.group(1)}"
            from datetime import UTC, datetime, timedelta

            day = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
            until = (datetime.now(UTC) - timedelta(days=9)).strftime("%Y-%m-%dT%H:%M")
            pages["jobs ?since= (a day, 10 days ago)"] = f"/admin/jobs?since={day}&until={until}"
            print(
                f"\nTTFB over {args.requests} sequential requests each ({args.jobs} jobs, "
                f"{args.ledger} ledger entries of bench-7 stored):"
            )
            print(f"{'page':45} {'p50 ms':>8} {'p99 ms':>8} {'HTML KB':>8}")
            for name, path in pages.items():
                assert path
                client.get(path)  # warm
                times, size, _ = ttfb(client, path, args.requests)
                print(f"{name:45} {pct(times, 50):8.1f} {pct(times, 99):8.1f} {size / 1024:8.1f}")
            print("\nPage weight (HTML + the static files it loads, uncompressed):")
            weights = {
                "/admin": "/admin",
                "/admin/overview/live (polled)": "/admin/overview/live",
                "/admin/teams": "/admin/teams",
                "/admin/teams/bench-7": "/admin/teams/bench-7",
                "/admin/jobs": "/admin/jobs",
                "/admin/jobs/{id}": f"/admin/jobs/{newest[0]}",
                "/admin/usage (14 days)": "/admin/usage",
                "/admin/webhooks": "/admin/webhooks",
                "/admin/audit": "/admin/audit",
                "/admin/admins": "/admin/admins",
            }
            for name, path in weights.items():
                started = time.perf_counter()
                r = client.get(path)
                took = (time.perf_counter() - started) * 1000
                assert r.status_code == 200, (path, r.status_code)
                static = assets(client, r.text)
                print(
                    f"{name:45} HTML {len(r.content) / 1024:7.1f} KB + static {static / 1024:6.1f} KB = {(len(r.content) + static) / 1024:7.1f} KB  ({took:.0f} ms)"
                )
    finally:
        if api is not None:
            api.stop()
        drop_database(url)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sys.exit(main())
