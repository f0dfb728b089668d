"""Drain with flat memory: `--calls` queued calls (100,000) drained by one worker.

Starts a private Redis (Valkey, as `saas-llm up` does: so that `INFO memory` counts this run
only), the fake provider (0 ms), one LiteLLM proxy and one API on loopback, and submits the
calls through the platform's own JSONL path (`POST /api/jobs`, `application/x-ndjson`, at most
`--per-job` lines per job, the JSONL limit), with no worker running, so that every call is
queued (a row in Postgres and an arq entry in Redis) before the drain starts. Then one worker
(WORKER_MAX_JOBS `--slots`) drains them; every `--every` seconds the worker's RSS (VmRSS from
/proc), Redis `used_memory`, the queue's length and the calls done are sampled. Prints the
samples, first / peak / last of each, and the worker's RSS growth per 10,000 calls (least
squares over the samples), which is ~0 when memory does not grow with the calls done.
`--max-seconds` stops the drain early (the calls left are printed). Usage:
    python -m bench.drain [--calls 100000] [--per-job 50000] [--slots 32] [--every 10]
        [--max-seconds 0]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

from cli.embedded import EmbeddedRedis
from cli.stack import Proc, free_port, start_api, start_proxy, start_worker
from tests.harness import (
    create_database,
    drop_database,
    fake_proxy_config,
    new_team_key,
    platform_env,
    start_fake_provider,
    wait_until,
)


def rss_mb(proc: Proc) -> float:
    for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def jsonl(tag: str, first: int, n: int) -> Iterator[bytes]:
    """The JSONL body, streamed a thousand lines at a time."""
    for lo in range(first, first + n, 1000):
        hi = min(first + n, lo + 1000)
        yield b"".join(
            json.dumps(
                {
                    "custom_id": f"r{i:07d}",
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"drain {tag} {i}"}],
                }
            ).encode()
            + b"\n"
            for i in range(lo, hi)
        )


def slope_per_10k(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs, per 10,000 of x."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 10_000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=100_000, help="calls queued, then drained")
    parser.add_argument("--per-job", type=int, default=50_000, help="lines per JSONL job")
    parser.add_argument("--slots", type=int, default=32, help="the worker's WORKER_MAX_JOBS")
    parser.add_argument("--every", type=float, default=10, help="seconds between samples")
    parser.add_argument(
        "--max-seconds", type=float, default=0, help="stop the drain after this long (0: never)"
    )
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="saas-llm-drain-"))
    db = create_database("saasllm_drain_")
    store = EmbeddedRedis(log_dir / "redis", free_port(), secrets.token_hex(8), log_dir)
    procs: list[Proc] = [store.start()]
    worker: Proc | None = None
    r = redis.Redis.from_url(store.url())
    try:
        fake, fake_url = start_fake_provider(log_dir)
        procs.append(fake)
        queue = "saas-llm-bench-drain:" + uuid.uuid4().hex[:6]
        base_env = platform_env(db, "", "")
        base_env["REDIS_URL"] = store.url()
        proxy_port = free_port()
        proxy = start_proxy(base_env, fake_proxy_config(log_dir, fake_url), proxy_port, log_dir)
        procs.append(proxy)
        # Small pools: the Postgres server is shared (100 connections).
        env = platform_env(
            db + "?pool_size=8&max_overflow=4", queue, f"http://127.0.0.1:{proxy_port}"
        )
        env.update(REDIS_URL=store.url(), WORKER_MAX_JOBS=str(args.slots))
        api_port = free_port()
        api = start_api(env, api_port, log_dir, name="api-drain")
        procs.append(api)
        api_url = f"http://127.0.0.1:{api_port}"
        key = new_team_key(api_url, "drain-")

        def used() -> float:
            info: dict[str, Any] = r.info("memory")  # type: ignore[assignment]
            return int(info["used_memory"]) / 2**20

        def queued() -> int:
            return int(r.zcard(queue))  # type: ignore[arg-type]

        redis_empty = used()
        print(
            f"queueing {args.calls:,} calls in jobs of up to {args.per_job:,} (JSONL), no worker "
            f"running; Redis used_memory empty {redis_empty:.1f} MB; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
            flush=True,
        )
        tag = uuid.uuid4().hex[:6]
        job_ids: list[str] = []
        started = time.perf_counter()
        with httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=1800
        ) as client:
            for first in range(0, args.calls, args.per_job):
                n = min(args.per_job, args.calls - first)
                resp = client.post(
                    "/api/jobs",
                    params={"job_type": "drain-" + tag},
                    content=jsonl(tag, first, n),
                    headers={"Content-Type": "application/x-ndjson"},
                )
                resp.raise_for_status()
                job_ids.append(resp.json()["id"])
                print(
                    f"  {first + n:,} calls stored and queued ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
            # The API enqueues after its commit, in the background: wait until all are queued.
            wait_until(lambda: queued() >= args.calls, timeout=1800, what="every call queued")
            print(f"  every call queued ({time.perf_counter() - started:.0f} s)", flush=True)
            in_queue = queued()
            redis_full = used()
            print(
                f"queue holds {in_queue:,} entries; Redis used_memory {redis_full:.1f} MB "
                f"({(redis_full - redis_empty) * 2**20 / max(1, in_queue):.0f} bytes per queued call)",
                flush=True,
            )

            def done() -> int:
                total = 0
                for job_id in job_ids:
                    counts = client.get(f"/api/jobs/{job_id}").json()["request_counts"]
                    total += counts["succeeded"] + counts["failed"] + counts["cancelled"]
                return total

            worker = start_worker(env, log_dir, name="worker-drain")
            worker.wait_log("token counter ready", timeout=300)
            t0 = time.perf_counter()
            samples: list[tuple[float, int, float, float, int]] = []
            print(
                f"\n{'s':>6} {'calls done':>11} {'calls/s':>8} {'worker RSS MB':>14} "
                f"{'Redis MB':>9} {'queued':>8} {'load':>5}"
            )
            while True:
                d = done()
                sample = (time.perf_counter() - t0, d, rss_mb(worker), used(), queued())
                samples.append(sample)
                rate = (d - samples[0][1]) / sample[0] if sample[0] else 0.0
                print(
                    f"{sample[0]:>6.0f} {d:>11,} {rate:>8.1f} {sample[2]:>14.1f} {sample[3]:>9.1f} "
                    f"{sample[4]:>8,} {os.getloadavg()[0]:>5.1f}",
                    flush=True,
                )
                if d >= args.calls:
                    break
                if args.max_seconds and sample[0] >= args.max_seconds:
                    print(f"stopped after {sample[0]:.0f} s (--max-seconds)")
                    break
                time.sleep(args.every)
            statuses: dict[str, int] = {}
            for job_id in job_ids:
                job = client.get(f"/api/jobs/{job_id}").json()
                statuses[job["status"]] = statuses.get(job["status"], 0) + 1

        wall = samples[-1][0]
        done_calls = samples[-1][1] - samples[0][1]
        rss = [s[2] for s in samples]
        mem = [s[3] for s in samples]
        xs = [float(s[1]) for s in samples]
        print(
            f"\n{samples[-1][1]:,} of {args.calls:,} calls done ({done_calls:,} in {wall:.0f} s "
            f"of sampling, {done_calls / max(wall, 1e-9):.1f} calls/s); jobs {statuses}; "
            f"load average now {os.getloadavg()[0]:.1f}"
        )
        print("\n| figure | first | peak | last | growth per 10,000 calls done |")
        print("|---|---:|---:|---:|---:|")
        print(
            f"| worker RSS MB | {rss[0]:.1f} | {max(rss):.1f} | {rss[-1]:.1f} | "
            f"{slope_per_10k(xs, rss):+.2f} MB |"
        )
        print(
            f"| Redis used_memory MB (empty {redis_empty:.1f}, all queued {redis_full:.1f}) | "
            f"{mem[0]:.1f} | {max(mem):.1f} | {mem[-1]:.1f} | {slope_per_10k(xs, mem):+.2f} MB |"
        )
        print(
            f"| queue entries | {samples[0][4]:,} | {max(s[4] for s in samples):,} | "
            f"{samples[-1][4]:,} | - |"
        )
    finally:
        if worker is not None:
            worker.stop()
        for proc in reversed(procs[1:]):
            proc.stop()
        r.close()
        store.stop()
        drop_database(db)


if __name__ == "__main__":
    main()
