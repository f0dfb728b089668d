"""Throughput and latency of the platform against the LiteLLM proxy driven directly.

Starts the whole stack on loopback (fake provider, real LiteLLM proxy, and an API plus one worker
in each gateway mode: `proxy` and `inprocess`), then for each provider latency (0 ms and 100 ms by
default) and each client concurrency (32 and 128):
  * proxy: N chat completions straight to the proxy;
  * platform in each mode: N one-call jobs, each timed from submit to done (the job's own
    created_at -> finished_at), and each submit timed by the client.
Prints rates, p50/p99, each mode's ratio to the proxy alone, job-end -> webhook-arrival lag and
CPU milliseconds per job of the API, the worker and the proxy (from /proc); then a light-load run
(one job at a time) for the submit-to-done latency against the proxy's own (P2); API submit
latency at a fixed rate of one-call submissions, open loop (P3); and fairness: the queue wait
(call started_at - created_at) of another team's one-call jobs while one team's flood keeps
every slot of a worker busy. Ends with the whole run as one Markdown table. Usage:
    python -m bench.throughput [--jobs 300] [--concurrency 32,128] [--latencies 0,100]
        [--light 30] [--p3-rate 300] [--p3-seconds 3] [--flood 2000] [--fair-slots 8]
        [--fair-delay 1500] [--fair-probes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.box import Box, pid_cpu
from bench.profile import Profiler, summarise
from bench.sink import start_sink
from cli.stack import Proc, free_port, start_api, start_proxy, start_worker
from tests.harness import (
    MASTER_KEY,
    create_database,
    drop_database,
    fake_proxy_config,
    new_team_key,
    platform_env,
    start_fake_provider,
)


def cpu_seconds(proc: Proc) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    return pid_cpu(proc.popen.pid)


def tree_cpu_seconds(proc: Proc) -> float:
    """`cpu_seconds` of a process and its live children (uvicorn's worker processes)."""
    total, todo = 0.0, [proc.popen.pid]
    while todo:
        pid = todo.pop()
        try:
            total += pid_cpu(pid)
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
    return total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def body(tag: str, i: int, delay_ms: int) -> dict[str, Any]:
    marker = f" [[delay:{delay_ms}]]" if delay_ms else ""
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"bench {tag} {i}{marker} summarise this"}],
    }


TRANSPORT_RETRIES: list[int] = [0]


async def run_pool(n: int, concurrency: int, work: Any) -> float:
    """Run work(i) for i < n with `concurrency` workers; returns wall seconds. A request cut off
    by the loaded machine (connection reset) is sent again, up to 3 times, and counted."""
    counter = iter(range(n))

    async def loop() -> None:
        for i in counter:
            for attempt in range(4):
                try:
                    await work(i)
                    break
                except (httpx.TransportError, aiohttp.ClientConnectionError):
                    TRANSPORT_RETRIES[0] += 1
                    if attempt == 3:
                        raise

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return time.perf_counter() - started


def _session(base_url: str, concurrency: int, headers: dict[str, str]) -> aiohttp.ClientSession:
    """The client of the measured runs, the same for the proxy alone and the platform: aiohttp,
    whose CPU per request stays flat with the number of connections. httpx's pool walks its
    connections on every request: at 128 connections it cost this process 9-12 ms of CPU per
    request, a core of the two the proxy and the platform run on."""
    return aiohttp.ClientSession(
        base_url=base_url,
        connector=aiohttp.TCPConnector(limit=concurrency + 5),
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def baseline(proxy_url: str, n: int, concurrency: int, delay_ms: int) -> dict[str, float]:
    latencies: list[float] = []
    tag = uuid.uuid4().hex[:6]
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with _session(proxy_url, concurrency, headers) as client:

        async def one(i: int) -> None:
            t = time.perf_counter()
            async with client.post("/v1/chat/completions", json=body(tag, i, delay_ms)) as r:
                await r.read()
                r.raise_for_status()
            latencies.append(time.perf_counter() - t)

        wall = await run_pool(n, concurrency, one)
    return {"rate": n / wall, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}


def wait_arrivals(sink_url: str, tag: str, n: int, timeout: float = 300) -> dict[str, float]:
    """The first arrival time of each webhook of this run's n jobs, once all have arrived: one
    request that the sink answers when they have (`/wait-count`), not a poll."""
    waited = httpx.get(
        f"{sink_url}/wait-count/{tag}", params={"n": n, "timeout": timeout}, timeout=timeout + 10
    )
    arrived: dict[str, float] = {}
    for job_id, _, at in httpx.get(
        sink_url + "/arrivals", params={"job_type": tag}, timeout=30
    ).json():
        arrived.setdefault(job_id, at)
    assert waited.status_code == 204 and len(arrived) == n, f"{len(arrived)} of {n} webhooks"
    return arrived


def webhook_lag(sink_url: str, tag: str, finished: dict[str, datetime], n: int) -> list[float]:
    """Seconds from each job's end to its webhook's arrival at the sink."""
    arrived = wait_arrivals(sink_url, tag, n)
    return [arrived[j] - finished[j].timestamp() for j in arrived]


async def wait_done(client: httpx.AsyncClient, tag: str) -> None:
    """Wait for every job of this run: poll the list of its unfinished jobs, not each job."""
    while True:
        r = await client.get("/api/jobs", params={"job_type": tag, "status": "queued", "limit": 1})
        r2 = await client.get(
            "/api/jobs", params={"job_type": tag, "status": "running", "limit": 1}
        )
        if not r.json()["data"] and not r2.json()["data"]:
            return
        await asyncio.sleep(0.05)


async def drain(api_url: str, key: str) -> None:
    """Wait until none of the team's jobs is queued or running."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as client:
        while True:
            busy = [
                (await client.get("/api/jobs", params={"status": status, "limit": 1})).json()
                for status in ("queued", "running")
            ]
            if not any(page["data"] for page in busy):
                return
            await asyncio.sleep(0.1)


async def fixed_rate(
    api_url: str, key: str, rate: float, seconds: float, *, wait_jobs: bool = True
) -> dict[str, float]:
    """P3: one-call submissions sent at `rate` per second for `seconds`, open loop (each at its
    scheduled moment, whether or not earlier ones were answered); submit latency from the send."""
    tag = uuid.uuid4().hex[:6]
    n = max(1, int(rate * seconds))
    latencies: list[float] = []
    late: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    # aiohttp: at 300/s httpx alone took ~0.75 of a core in this process (2.5 ms of CPU per
    # request, `python -m bench.http_client`), on the same 2 cores as the API it measures.
    connector = aiohttp.TCPConnector(limit=1000)
    async with aiohttp.ClientSession(
        base_url=api_url, connector=connector, headers=headers
    ) as session:
        start = time.perf_counter()

        async def one(i: int) -> None:
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            sent = time.perf_counter()
            late.append(sent - scheduled)  # the client itself falling behind its schedule
            payload = {"requests": [body(tag, i, 0)], "job_type": tag}
            async with session.post("/api/jobs", json=payload) as r:
                await r.read()
                r.raise_for_status()
            latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - start
    if wait_jobs:
        async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as client:
            await wait_done(client, tag)  # let the worker drain them before the next measurement
    return {
        "n": n,
        "rate": rate,
        "achieved": n / wall,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "late_p99": pct(late, 0.99),
    }


async def fairness(
    api_url: str, flood_key: str, other_key: str, flood: int, delay_ms: int, probes: int
) -> dict[str, float]:
    """One team submits a `flood`-call job (JSONL); once every slot runs it, another team
    submits `probes` one-call jobs, one after the other; each one's queue wait is its call's
    started_at - created_at (both Postgres clocks). The flood is cancelled at the end."""
    tag = uuid.uuid4().hex[:6]
    lines = "\n".join(json.dumps(body(tag + "-flood", i, delay_ms)) for i in range(flood))
    waits: list[float] = []
    async with httpx.AsyncClient(base_url=api_url, timeout=120) as client:
        a = {"Authorization": f"Bearer {flood_key}"}
        b = {"Authorization": f"Bearer {other_key}"}
        r = await client.post(
            "/api/jobs",
            params={"job_type": tag + "-flood"},
            content=lines.encode(),
            headers={**a, "Content-Type": "application/x-ndjson"},
        )
        r.raise_for_status()
        flood_id = r.json()["id"]
        while True:  # every slot busy with the flood, some of it done
            counts = (await client.get(f"/api/jobs/{flood_id}", headers=a)).json()
            if counts["request_counts"]["succeeded"] >= 1 and counts["request_counts"]["running"]:
                break
            await asyncio.sleep(0.05)
        running = []
        for i in range(probes):
            flood_now = (await client.get(f"/api/jobs/{flood_id}", headers=a)).json()
            running.append(flood_now["request_counts"]["running"])  # as this job is submitted
            r = await client.post(
                "/api/jobs", json={"requests": [body(tag + "-b", i, delay_ms)]}, headers=b
            )
            r.raise_for_status()
            job_id = r.json()["id"]
            while True:
                job = (
                    await client.get(
                        f"/api/jobs/{job_id}", params={"include_calls": "true"}, headers=b
                    )
                ).json()
                if job["status"] in ("succeeded", "failed", "cancelled", "expired"):
                    break
                await asyncio.sleep(0.02)
            call = job["calls"][0]
            waits.append(
                (
                    datetime.fromisoformat(call["started_at"])
                    - datetime.fromisoformat(call["created_at"])
                ).total_seconds()
            )
        flood_now = (await client.get(f"/api/jobs/{flood_id}", headers=a)).json()
        left = flood_now["request_counts"]["queued"]
        cancelled = await client.post(f"/api/jobs/{flood_id}/cancel", headers=a)
        if cancelled.status_code != 409:  # 409: the flood had already ended
            cancelled.raise_for_status()
    return {
        "p50": pct(waits, 0.5),
        "p99": pct(waits, 0.99),
        "max": max(waits),
        "left": left,
        "flood_running": pct([float(x) for x in running], 0.5),
    }


async def platform(
    api_url: str,
    key: str,
    n: int,
    concurrency: int,
    delay_ms: int,
    sink_url: str | None = None,
    on_done: Callable[[], None] | None = None,
) -> dict[str, float]:
    """n one-call jobs at `concurrency`; done when all have ended (with `sink_url`: when all
    their webhooks have arrived), then `on_done()` (the caller reads CPU there), then the
    jobs are listed for their timings."""
    tag = uuid.uuid4().hex[:6]
    job_ids: list[str] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        _session(api_url, concurrency, headers) as session,
        httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as client,
    ):
        started = time.perf_counter()

        submit_latencies: list[float] = []

        async def submit(i: int) -> None:
            t = time.perf_counter()
            payload = {"requests": [body(tag, i, delay_ms)], "job_type": tag}
            async with session.post("/api/jobs", json=payload) as r:
                created = await r.json()
                r.raise_for_status()
            submit_latencies.append(time.perf_counter() - t)
            job_ids.append(created["id"])

        submit_wall = await run_pool(n, concurrency, submit)
        if sink_url:
            # Done when every job's webhook has arrived: the client polls nothing, so the API's
            # CPU per job is its submit, as it is for a customer who listens for webhooks.
            await asyncio.to_thread(wait_arrivals, sink_url, tag, n)
        else:
            await wait_done(client, tag)
        wall = time.perf_counter() - started
        if on_done is not None:
            on_done()
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
        "submit_p50": pct(submit_latencies, 0.5),
        "submit_p99": pct(submit_latencies, 0.99),
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
    }


async def one_at_a_time(api_url: str, key: str, n: int, sink_url: str) -> dict[str, float]:
    """P2 at light load: n one-call jobs, each submitted only when the one before it is done
    (its webhook arrived at the sink); each timed from its creation to its end by the
    platform's own timestamps."""
    tag = uuid.uuid4().hex[:6]
    latencies: list[float] = []
    submit_latencies: list[float] = []
    waits: list[float] = []  # the job's creation to its call's start: the queue's part
    async with httpx.AsyncClient(
        base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        for i in range(n):
            t = time.perf_counter()
            r = await client.post(
                "/api/jobs", json={"requests": [body(tag, i, 0)], "job_type": tag}
            )
            submit_latencies.append(time.perf_counter() - t)
            r.raise_for_status()
            job_id = r.json()["id"]
            # Waited for on its webhook, which is sent after the job's end, so nothing runs
            # beside the job being timed: polling the job every 5 ms (as before) made the API,
            # Postgres and this process compete with the worker and the proxy for the 2 cores,
            # and so did opening its event stream at the moment the worker claimed it.
            arrival = await client.get(f"{sink_url}/wait/{job_id}", params={"timeout": 60})
            assert arrival.status_code == 204, f"the webhook of job {job_id} did not arrive"
            job = (await client.get(f"/api/jobs/{job_id}", params={"include_calls": "true"})).json()
            assert job["status"] == "succeeded", job
            created = datetime.fromisoformat(job["created_at"])
            latencies.append((datetime.fromisoformat(job["finished_at"]) - created).total_seconds())
            started = datetime.fromisoformat(job["calls"][0]["started_at"])
            waits.append((started - created).total_seconds())
    return {
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "submit_p99": pct(submit_latencies, 0.99),
        "wait_p50": pct(waits, 0.5),
        "wait_p99": pct(waits, 0.99),
    }


def _cpu_per_job(before: dict[str, float], procs: dict[str, Proc], n: int) -> dict[str, float]:
    return {name: (cpu_seconds(proc) - before[name]) * 1000 / n for name, proc in procs.items()}


def _read_cpu_into(
    out: dict[str, float],
    before: dict[str, float],
    procs: dict[str, Proc],
    n: int,
    box_before: Box,
    sink: Proc,
) -> None:
    out.update(_cpu_per_job(before, procs, n))
    out.update(Box.read(sink.popen.pid).per_job(box_before, n))


BOX_PARTS = ("proxy", "api", "worker", "postgres", "redis", "provider", "client")


def _box_row(label: str, cpu: dict[str, float], rate: float) -> str:
    """A row of the whole-machine table: each share's CPU per job, their sum, the rate the
    machine's cores could reach at that sum, the rate reached and the steal."""
    total = sum(cpu.get(part, 0.0) for part in BOX_PARTS)
    ceiling = os.cpu_count() or 1
    return (
        f"| {label} | "
        + " | ".join(f"{cpu.get(part, 0.0):.1f}" for part in BOX_PARTS)
        + f" | {total:.1f} | {ceiling * 1000 / max(total, 1e-9):.0f} | {rate:.1f} | "
        f"{cpu.get('steal_pct', 0.0):.0f} % |"
    )


# Each stack's environment, by name (`_start_mode`): another API process of a stack uses it.
STACK_ENVS: dict[str, dict[str, str]] = {}


def _start_mode(
    env: dict[str, str], mode: str, config: Path, log_dir: Path, name: str = "", **extra: str
) -> tuple[str, dict[str, Proc]]:
    """An API and a worker in `mode` (proxy | inprocess), on their own queue."""
    name = name or mode
    env = dict(env, WORKER_QUEUE_NAME=f"saas-llm-bench-{name}:" + uuid.uuid4().hex[:6], **extra)
    STACK_ENVS[name] = env
    if mode == "inprocess":
        env.update(
            LLM_GATEWAY="inprocess",
            LITELLM_CONFIG_PATH=str(config),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
        )
    port = free_port()
    procs = {
        "api": start_api(env, port, log_dir, name=f"api-{name}"),
        "worker": start_worker(env, log_dir, name=f"worker-{name}"),
    }
    return f"http://127.0.0.1:{port}", procs


MODES = ("proxy", "inprocess")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", default="32,128", help="client concurrencies")
    parser.add_argument("--latencies", default="0,100", help="provider latencies in ms")
    parser.add_argument("--light", type=int, default=30, help="jobs for the light-load P2 run")
    parser.add_argument("--p3-rate", type=float, default=300, help="P3 submits per second")
    parser.add_argument("--p3-seconds", type=float, default=3, help="P3 duration")
    parser.add_argument("--flood", type=int, default=2000, help="calls of the fairness flood")
    # Slots x (1 / provider latency) must stay below what the worker can do, or the slots are
    # not all busy: on a loaded 2-core box that is a few calls per second.
    parser.add_argument("--fair-slots", type=int, default=8, help="the fairness worker's slots")
    parser.add_argument("--fair-delay", type=int, default=1500, help="fairness provider ms")
    parser.add_argument("--fair-probes", type=int, default=20, help="the other team's jobs")
    parser.add_argument(
        "--p3-api-processes",
        type=int,
        default=2,
        help="P3 again with the worker paused and an API of this many processes (uvicorn's "
        "WEB_CONCURRENCY); 1: not run",
    )
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
    stacks: dict[str, tuple[str, dict[str, Proc]]] = {}
    try:
        proxy_port = free_port()
        config = fake_proxy_config(log_dir, fake_url)
        proxy = start_proxy(platform_env(db, "", ""), config, proxy_port, log_dir)
        procs.append(proxy)
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        # Small pools: the Postgres server may be shared, and four processes run at once; a call
        # holds a connection only while it is claimed or finished.
        env = platform_env(db + "?pool_size=12&max_overflow=3", "unused", proxy_url)
        env["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = "true"
        sink, sink_url = start_sink(log_dir)
        procs.append(sink)
        for mode in MODES:
            stacks[mode] = _start_mode(env, mode, config, log_dir)
        api_url = stacks["proxy"][0]

        def new_team() -> str:
            return new_team_key(api_url, "bench-")

        key = new_team()
        httpx.post(
            api_url + "/api/webhooks/endpoints",
            json={"url": sink_url + "/"},
            headers={"Authorization": f"Bearer {key}"},
        ).raise_for_status()
        # warm every path (imports, pools, model list cache, the in-process Router)
        asyncio.run(baseline(proxy_url, 20, 5, 0))
        for url, _ in stacks.values():
            asyncio.run(platform(url, key, 20, 5, 0))

        print(f"jobs={args.jobs} per run (1 call per job, 1 worker, 1 API process per mode)")
        print(
            f"{'latency':>7} {'conc':>4} {'mode':<9} | {'rate/s':>7} {'p50 ms':>7} {'p99 ms':>7} | "
            f"{'submit p50':>10} {'p99 ms':>6} | {'ratio':>5} | {'hook p50':>8} {'p99':>6} | CPU ms per job"
        )
        latencies = [int(x) for x in args.latencies.split(",")]
        profiled = False
        table: list[str] = []
        box_rows: list[str] = []
        for delay in latencies:
            for conc in [int(x) for x in args.concurrency.split(",")]:
                before = {"proxy": cpu_seconds(proxy), "provider": cpu_seconds(fake)}
                box_before = Box.read(sink.popen.pid)
                b = asyncio.run(baseline(proxy_url, args.jobs, conc, delay))
                proxy_cpu = (cpu_seconds(proxy) - before["proxy"]) * 1000 / args.jobs
                box_rows.append(
                    _box_row(
                        f"{delay} ms | {conc} | proxy alone",
                        {
                            "proxy": proxy_cpu,
                            "provider": (cpu_seconds(fake) - before["provider"]) * 1000 / args.jobs,
                            **Box.read(sink.popen.pid).per_job(box_before, args.jobs),
                        },
                        b["rate"],
                    )
                )
                print(
                    f"{delay:>5}ms {conc:>4} {'proxy':<9} | {b['rate']:>7.1f} {b['p50'] * 1000:>7.0f} "
                    f"{b['p99'] * 1000:>7.0f} | {'':>10} {'':>6} | {1:>5.2f} | {'':>8} {'':>6} | "
                    f"proxy {proxy_cpu:.1f}"
                )
                table.append(
                    f"| {delay} ms | {conc} | proxy alone | {b['rate']:.1f} | 1.00 | "
                    f"{b['p50'] * 1000:,.0f} / {b['p99'] * 1000:,.0f} | - | - | "
                    f"proxy {proxy_cpu:.1f} | - |"
                )
                for mode, (url, mode_procs) in stacks.items():
                    measured = {**mode_procs, "proxy": proxy, "provider": fake}
                    profilers = []
                    if args.profile is not None and not profiled:
                        args.profile.mkdir(parents=True, exist_ok=True)
                        profilers = [
                            Profiler(proc.popen.pid, args.profile / f"{name}-{mode}-{delay}ms.txt")
                            for name, proc in mode_procs.items()
                        ]
                    cpu_before = {name: cpu_seconds(proc) for name, proc in measured.items()}
                    cpu: dict[str, float] = {}
                    box_before = Box.read(sink.popen.pid)
                    read_cpu = functools.partial(
                        _read_cpu_into, cpu, cpu_before, measured, args.jobs, box_before, sink
                    )
                    p = asyncio.run(
                        platform(url, key, args.jobs, conc, delay, sink_url, on_done=read_cpu)
                    )
                    profiles = [profiler.stop() for profiler in profilers]
                    print(
                        f"{'':>7} {'':>4} {mode:<9} | {p['rate']:>7.1f} {p['p50'] * 1000:>7.0f} "
                        f"{p['p99'] * 1000:>7.0f} | {p['submit_p50'] * 1000:>10.1f} "
                        f"{p['submit_p99'] * 1000:>6.1f} | {p['rate'] / b['rate']:>5.2f} | "
                        f"{p['hook_p50'] * 1000:>8.0f} {p['hook_p99'] * 1000:>6.0f} | "
                        + ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(cpu.items()))
                        + f" (platform/proxy {(cpu['api'] + cpu['worker']) / max(proxy_cpu, 1e-9):.2f})"
                    )
                    for path in profiles:
                        print(summarise(path))
                    ratio_cpu = (cpu["api"] + cpu["worker"]) / max(proxy_cpu, 1e-9)
                    table.append(
                        f"| {delay} ms | {conc} | platform, {mode} | {p['rate']:.1f} | "
                        f"{p['rate'] / b['rate']:.2f} | {p['p50'] * 1000:,.0f} / "
                        f"{p['p99'] * 1000:,.0f} | {p['submit_p50'] * 1000:,.1f} / "
                        f"{p['submit_p99'] * 1000:,.1f} | {p['hook_p50'] * 1000:,.0f} / "
                        f"{p['hook_p99'] * 1000:,.0f} | api {cpu['api']:.1f}, worker "
                        f"{cpu['worker']:.1f}, proxy {cpu['proxy']:.1f} | {ratio_cpu:.2f} |"
                    )
                    box_rows.append(
                        _box_row(f"{delay} ms | {conc} | platform, {mode}", cpu, p["rate"])
                    )
                if args.profile is not None:
                    profiled = True
        print(f"requests sent again after a connection error: {TRANSPORT_RETRIES[0]}")
        # P2: submit-to-done at light load (one job at a time) against the proxy's own latency.
        print(f"\nlight load ({args.light} jobs one at a time, 0 ms provider): P2")
        b = asyncio.run(baseline(proxy_url, args.light, 1, 0))
        print(f"  proxy alone       p50 {b['p50'] * 1000:7.1f} ms  p99 {b['p99'] * 1000:7.1f} ms")
        light = [f"| proxy alone | {b['p50'] * 1000:,.1f} | {b['p99'] * 1000:,.1f} | - | - | - |"]
        for mode, (url, _) in stacks.items():
            p = asyncio.run(one_at_a_time(url, key, args.light, sink_url))
            print(
                f"  platform {mode:<9} p50 {p['p50'] * 1000:7.1f} ms  p99 {p['p99'] * 1000:7.1f} ms"
                f"  (p50 {(p['p50'] - b['p50']) * 1000:+.1f} ms, p99 {(p['p99'] - b['p99']) * 1000:+.1f} ms"
                f" over the proxy; submit p99 {p['submit_p99'] * 1000:.1f} ms; created to"
                f" started p50 {p['wait_p50'] * 1000:.1f} ms, p99 {p['wait_p99'] * 1000:.1f} ms)"
            )
            light.append(
                f"| platform, {mode} | {p['p50'] * 1000:,.1f} | {p['p99'] * 1000:,.1f} | "
                f"{(p['p50'] - b['p50']) * 1000:+,.1f} / {(p['p99'] - b['p99']) * 1000:+,.1f} | "
                f"{p['wait_p50'] * 1000:,.1f} / {p['wait_p99'] * 1000:,.1f} | "
                f"{p['submit_p99'] * 1000:,.1f} |"
            )
        # P3: API submit latency at a fixed rate (proxy mode's API), with its worker running the
        # jobs meanwhile on the same cores, then with that worker paused (SIGSTOP: the API alone;
        # the jobs wait in the queue and run once it continues).
        p3 = asyncio.run(fixed_rate(api_url, key, args.p3_rate, args.p3_seconds))
        print(
            f"\nP3: {p3['n']} one-call submits at {p3['rate']:.0f}/s (open loop; achieved "
            f"{p3['achieved']:.0f}/s): submit p50 {p3['p50'] * 1000:.1f} ms, p99 "
            f"{p3['p99'] * 1000:.1f} ms (client behind schedule p99 {p3['late_p99'] * 1000:.1f} ms)"
        )
        worker_pid = stacks["proxy"][1]["worker"].popen.pid
        api_proc = stacks["proxy"][1]["api"]
        os.kill(worker_pid, signal.SIGSTOP)
        try:
            api_cpu = cpu_seconds(api_proc)
            p3_api = asyncio.run(
                fixed_rate(api_url, key, args.p3_rate, args.p3_seconds, wait_jobs=False)
            )
            # The API's CPU per submit: one API process is one core at most, so it saturates
            # at 1000 / this many submits per second, whatever else the machine runs.
            p3_api["api_cpu_ms"] = (cpu_seconds(api_proc) - api_cpu) / p3_api["n"] * 1000
        finally:
            os.kill(worker_pid, signal.SIGCONT)
        asyncio.run(drain(api_url, key))
        print(
            f"P3, worker paused: submit p50 {p3_api['p50'] * 1000:.1f} ms, p99 "
            f"{p3_api['p99'] * 1000:.1f} ms (achieved {p3_api['achieved']:.0f}/s; client behind "
            f"schedule p99 {p3_api['late_p99'] * 1000:.1f} ms; API CPU {p3_api['api_cpu_ms']:.2f} "
            f"ms per submit: one API process saturates at "
            f"{1000 / max(p3_api['api_cpu_ms'], 1e-9):.0f}/s)"
        )
        p3_multi: dict[str, Any] | None = None
        if args.p3_api_processes > 1:
            # The same, the API as `WEB_CONCURRENCY=N` runs it (one port, N uvicorn processes).
            n_api = args.p3_api_processes
            multi_port = free_port()
            multi_env = dict(STACK_ENVS["proxy"], WEB_CONCURRENCY=str(n_api))
            multi = start_api(multi_env, multi_port, log_dir, name="api-proxy-multi")
            procs.append(multi)
            multi_url = f"http://127.0.0.1:{multi_port}"
            os.kill(worker_pid, signal.SIGSTOP)
            try:
                # Warm at the rate itself: each process opens its pool's connections and
                # prepares its statements on them, as the single API did in the runs before.
                asyncio.run(fixed_rate(multi_url, key, args.p3_rate, 1, wait_jobs=False))
                multi_cpu = tree_cpu_seconds(multi)
                p3_multi = asyncio.run(
                    fixed_rate(multi_url, key, args.p3_rate, args.p3_seconds, wait_jobs=False)
                )
                p3_multi["api_cpu_ms"] = (
                    (tree_cpu_seconds(multi) - multi_cpu) / p3_multi["n"] * 1000
                )
            finally:
                os.kill(worker_pid, signal.SIGCONT)
            asyncio.run(drain(api_url, key))
            multi.stop()
            print(
                f"P3, worker paused, {n_api} API processes: submit p50 "
                f"{p3_multi['p50'] * 1000:.1f} ms, p99 {p3_multi['p99'] * 1000:.1f} ms (achieved "
                f"{p3_multi['achieved']:.0f}/s; client behind schedule p99 "
                f"{p3_multi['late_p99'] * 1000:.1f} ms; API CPU {p3_multi['api_cpu_ms']:.2f} ms "
                "per submit, all its processes)"
            )
        # Fairness: a worker with few slots, one team's flood, another team's one-call jobs.
        for mode_procs in (m for _, m in stacks.values()):
            mode_procs["worker"].stop()  # the other workers stay idle: give the box to this one
        fair_url, fair_procs = _start_mode(
            env, "proxy", config, log_dir, name="fair", WORKER_MAX_JOBS=str(args.fair_slots)
        )
        stacks["fair"] = (fair_url, fair_procs)
        fair = asyncio.run(
            fairness(
                fair_url,
                new_team(),
                new_team(),
                args.flood,
                args.fair_delay,
                args.fair_probes,
            )
        )
        print(
            f"\nfairness: {args.flood}-call flood, {args.fair_slots} worker slots, provider "
            f"{args.fair_delay} ms; another team's {args.fair_probes} one-call jobs queue wait p50 "
            f"{fair['p50'] * 1000:.0f} ms, p99 {fair['p99'] * 1000:.0f} ms, max "
            f"{fair['max'] * 1000:.0f} ms ({fair['p99'] * 1000 / args.fair_delay:.1f} call "
            f"latencies); flood calls running as each was submitted (median) "
            f"{fair['flood_running']:.0f}, "
            f"still queued after the last job {fair['left']:.0f}"
        )
        print("\n## The run as one table\n")
        print(
            "| provider | conc | mode | rate/s | ratio to proxy | submit-to-done p50 / p99 ms"
            " | API submit p50 / p99 ms | webhook lag p50 / p99 ms | CPU ms per job per process"
            " | platform CPU / proxy CPU |"
        )
        print("|---|---:|---|---:|---:|---:|---:|---:|---|---:|")
        print("\n".join(table))
        print(
            f"\nThe whole machine's CPU per job ({os.cpu_count()} cores; ms; the ceiling is the "
            "rate at which that sum would fill every core; steal: the share of the machine's time "
            "the hypervisor gave to others meanwhile):\n"
        )
        print(
            "| provider | conc | run | "
            + " | ".join(BOX_PARTS)
            + " | all | ceiling jobs/s | rate/s | steal |"
        )
        print("|---|---:|---|" + "---:|" * (len(BOX_PARTS) + 4))
        print("\n".join(box_rows))
        print(f"\nP2, light load (one job at a time, {args.light} jobs, 0 ms provider):\n")
        print(
            "| | p50 ms | p99 ms | over the proxy p50 / p99 ms | created to started p50 / p99 ms"
            " | API submit p99 ms |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        print("\n".join(light))
        print("\n| figure | value |\n|---|---|")
        print(
            f"| P3: API submit p50 / p99 at {p3['rate']:.0f} one-call submits/s for "
            f"{args.p3_seconds:g} s (achieved {p3['achieved']:.0f}/s) | {p3['p50'] * 1000:,.1f} / "
            f"{p3['p99'] * 1000:,.1f} ms |"
        )
        print(
            f"| P3 with the worker paused (the API alone): submit p50 / p99 (achieved "
            f"{p3_api['achieved']:.0f}/s; API CPU {p3_api['api_cpu_ms']:.2f} ms per submit) | "
            f"{p3_api['p50'] * 1000:,.1f} / {p3_api['p99'] * 1000:,.1f} ms |"
        )
        if p3_multi is not None:
            print(
                f"| P3 with the worker paused, an API of {args.p3_api_processes} processes "
                f"(WEB_CONCURRENCY): submit p50 / p99 (achieved {p3_multi['achieved']:.0f}/s; "
                f"API CPU {p3_multi['api_cpu_ms']:.2f} ms per submit) | "
                f"{p3_multi['p50'] * 1000:,.1f} / {p3_multi['p99'] * 1000:,.1f} ms |"
            )
        print(
            f"| fairness: another team's queue wait p50 / p99 / max during a {args.flood}-call "
            f"flood on {args.fair_slots} slots ({args.fair_delay} ms provider, "
            f"{args.fair_probes} jobs) | {fair['p50'] * 1000:,.0f} / {fair['p99'] * 1000:,.0f} / "
            f"{fair['max'] * 1000:,.0f} ms = {fair['p99'] * 1000 / args.fair_delay:.1f} call "
            f"latencies at p99; flood calls running meanwhile (median) "
            f"{fair['flood_running']:.0f}, still queued at the end {fair['left']:.0f} |"
        )
    finally:
        for _, mode_procs in stacks.values():
            for proc in reversed(list(mode_procs.values())):
                proc.stop()
        for proc in reversed(procs):
            proc.stop()
        drop_database(db)


if __name__ == "__main__":
    main()
