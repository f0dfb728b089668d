"""Throughput and latency of the platform against the LiteLLM proxy driven directly.

Starts the whole stack on loopback (fake provider, real LiteLLM proxy, API, one worker), then for
each provider latency (0 ms and 100 ms by default):
  * baseline: N chat completions straight to the proxy at concurrency C;
  * platform: N one-call jobs submitted at concurrency C, each timed from submit to done
    (the job's own created_at -> finished_at).
Prints jobs/s, p50/p99, the ratio of the two, and job-end -> webhook-arrival p50/p99. Usage:
    python -m bench.throughput [--jobs 300] [--concurrency 50] [--latencies 0,100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.profile import Profiler, summarise
from cli.stack import Proc, Stack, free_port, spawn, start_api, start_proxy, start_worker
from tests.harness import (
    MASTER_KEY,
    create_database,
    drop_database,
    fake_proxy_config,
    platform_env,
    start_fake_provider,
)


def cpu_seconds(proc: Proc) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{proc.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def body(tag: str, i: int, delay_ms: int) -> dict[str, Any]:
    marker = f" [[delay:{delay_ms}]]" if delay_ms else ""
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"bench {tag} {i}{marker} summarise this"}],
    }


async def run_pool(n: int, concurrency: int, work: Any) -> float:
    """Run work(i) for i < n with `concurrency` workers; returns wall seconds."""
    counter = iter(range(n))

    async def loop() -> None:
        for i in counter:
            await work(i)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return time.perf_counter() - started


async def baseline(proxy_url: str, n: int, concurrency: int, delay_ms: int) -> dict[str, float]:
    latencies: list[float] = []
    tag = uuid.uuid4().hex[:6]
    limits = httpx.Limits(max_connections=concurrency + 5)
    async with httpx.AsyncClient(base_url=proxy_url, limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            t = time.perf_counter()
            r = await client.post(
                "/v1/chat/completions",
                json=body(tag, i, delay_ms),
                headers={"Authorization": f"Bearer {MASTER_KEY}"},
            )
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

        wall = await run_pool(n, concurrency, one)
    return {"rate": n / wall, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


def webhook_lag(sink_url: str, tag: str, finished: dict[str, datetime], n: int) -> list[float]:
    """Seconds from each job's end to its webhook's arrival at the sink."""
    deadline = time.monotonic() + 120
    while True:
        arrived: dict[str, float] = {}
        for job_id, job_type, at in httpx.get(sink_url + "/arrivals", timeout=10).json():
            if job_type == tag:
                arrived.setdefault(job_id, at)
        if len(arrived) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(arrived) == n, f"{len(arrived)} of {n} webhooks arrived"
    return [arrived[j] - finished[j].timestamp() for j in arrived]


async def platform(
    api_url: str,
    key: str,
    n: int,
    concurrency: int,
    delay_ms: int,
    sink_url: str | None = None,
) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    job_ids: list[str] = []
    limits = httpx.Limits(max_connections=concurrency + 5)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=api_url, limits=limits, timeout=60, headers=headers
    ) as client:
        started = time.perf_counter()

        async def submit(i: int) -> None:
            r = await client.post(
                "/api/jobs", json={"requests": [body(tag, i, delay_ms)], "job_type": tag}
            )
            r.raise_for_status()
            job_ids.append(r.json()["id"])

        submit_wall = await run_pool(n, concurrency, submit)
        # Wait for all: poll the list of unfinished jobs of this run, not each job.
        while True:
            r = await client.get(
                "/api/jobs", params={"job_type": tag, "status": "queued", "limit": 1}
            )
            r2 = await client.get(
                "/api/jobs", params={"job_type": tag, "status": "running", "limit": 1}
            )
            if not r.json()["data"] and not r2.json()["data"]:
                break
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - started
        latencies: list[float] = []
        finished_at: dict[str, datetime] = {}
        statuses: dict[str, int] = {}
        cursor = None
        while True:
            params: dict[str, Any] = {"job_type": tag, "limit": 100}
            if cursor:
                params["after"] = cursor
            page = (await client.get("/api/jobs", params=params)).json()
            for job in page["data"]:
                statuses[job["status"]] = statuses.get(job["status"], 0) + 1
                created = datetime.fromisoformat(job["created_at"])
                finished = datetime.fromisoformat(job["finished_at"])
                finished_at[job["id"]] = finished
                latencies.append((finished - created).total_seconds())
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
    assert statuses == {"succeeded": n}, statuses
    lag = webhook_lag(sink_url, tag, finished_at, n) if sink_url else [0.0]
    return {
        "hook_p50": pct(lag, 0.5),
        "hook_p99": pct(lag, 0.99),
        "rate": n / wall,
        "submit_rate": n / submit_wall,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latencies", default="0,100", help="provider latencies in ms")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record py-spy profiles of the API and worker during the first platform run into DIR",
    )
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="saas-llm-bench-"))
    db = create_database("saasllm_bench_")
    fake, fake_url = start_fake_provider(log_dir)
    procs = [fake]
    try:
        proxy_port = free_port()
        procs.append(
            start_proxy(
                platform_env(db, "", ""), fake_proxy_config(log_dir, fake_url), proxy_port, log_dir
            )
        )
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        # Small pools: the Postgres server may be shared, and four processes run at once; a call
        # holds a connection only while it is claimed or finished.
        env = platform_env(db + "?pool_size=12&max_overflow=3", "unused", proxy_url)
        env["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = "true"
        sink_port = free_port()
        sink = spawn(
            "sink",
            [sys.executable, "-m", "bench.sink", "--port", str(sink_port)],
            dict(os.environ),
            log_dir,
        )
        procs.append(sink)
        sink_url = f"http://127.0.0.1:{sink_port}"
        sink.wait_http(sink_url + "/arrivals")
        api_port = free_port()
        stack = Stack(
            env=env, api_url=f"http://127.0.0.1:{api_port}", proxy_url=proxy_url, log_dir=log_dir
        )
        stack.procs["api"] = start_api(env, api_port, log_dir)
        stack.procs["worker"] = start_worker(env, log_dir)
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        team = "bench-" + uuid.uuid4().hex[:6]
        httpx.post(
            stack.api_url + "/api/admin/teams", json={"team_id": team, "name": team}, headers=admin
        ).raise_for_status()
        key = httpx.post(
            stack.api_url + f"/api/admin/teams/{team}/keys", json={}, headers=admin
        ).json()["key"]
        httpx.post(
            stack.api_url + "/api/webhooks/endpoints",
            json={"url": sink_url + "/"},
            headers={"Authorization": f"Bearer {key}"},
        ).raise_for_status()
        # warm both paths (imports, pools, model list cache)
        asyncio.run(baseline(proxy_url, 20, 5, 0))
        asyncio.run(platform(stack.api_url, key, 20, 5, 0))

        print(
            f"jobs={args.jobs} concurrency={args.concurrency} (1 call per job, 1 worker, 1 API process)"
        )
        print(
            f"{'latency':>8} | {'proxy req/s':>11} {'p50 ms':>7} {'p99 ms':>7} | {'jobs/s':>7} {'submit/s':>8} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>5} | {'hook p50':>8} {'p99 ms':>7}"
        )
        latencies = [int(x) for x in args.latencies.split(",")]
        for delay in latencies:
            b = asyncio.run(baseline(proxy_url, args.jobs, args.concurrency, delay))
            profilers = []
            if args.profile is not None and delay == latencies[0]:
                args.profile.mkdir(parents=True, exist_ok=True)
                profilers = [
                    Profiler(proc.popen.pid, args.profile / f"{name}-{delay}ms.txt")
                    for name, proc in stack.procs.items()
                ]
            cpu_before = {name: cpu_seconds(proc) for name, proc in stack.procs.items()}
            p = asyncio.run(
                platform(stack.api_url, key, args.jobs, args.concurrency, delay, sink_url)
            )
            profiles = [profiler.stop() for profiler in profilers]
            cpu = {
                name: (cpu_seconds(proc) - cpu_before[name]) * 1000 / args.jobs
                for name, proc in stack.procs.items()
            }
            print(
                f"{delay:>6}ms | {b['rate']:>11.1f} {b['p50'] * 1000:>7.0f} {b['p99'] * 1000:>7.0f} | "
                f"{p['rate']:>7.1f} {p['submit_rate']:>8.1f} {p['p50'] * 1000:>7.0f} {p['p99'] * 1000:>7.0f} | "
                f"{p['rate'] / b['rate']:>5.2f} | {p['hook_p50'] * 1000:>8.0f} {p['hook_p99'] * 1000:>7.0f}"
            )
            print(
                "          CPU per job: "
                + ", ".join(f"{name} {ms:.1f} ms" for name, ms in sorted(cpu.items()))
            )
            for path in profiles:
                print(summarise(path))
        stack.stop()
    finally:
        for proc in reversed(procs):
            proc.stop()
        drop_database(db)


if __name__ == "__main__":
    main()
