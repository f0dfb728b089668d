"""Scale-out, shown: throughput of one job's calls with 1, 2 and 4 worker processes.

Starts the fake provider, one LiteLLM proxy and one API on loopback, then for each worker count
starts that many workers (each with the same `--slots`, WORKER_MAX_JOBS) on the API's queue,
waits until each one is warm (its token counter loaded), submits one JSONL job of `--calls`
calls that the fake provider answers after `--delay` ms, and times it from the job's first
claim to its end (Postgres clocks: `started_at` -> `finished_at`). While it runs, the calls in
flight (the job's `running` count) are sampled, and the CPU of the proxy, the API and the
workers is read from /proc, with the whole machine's (/proc/stat) and its load average.

Prints calls/s per worker count with the ratio to 1 worker, against the ideal (slots / delay:
every slot busy with a provider call all the time), and for each run what held it back, in
figures: slots idle (calls in flight against slots, and the time a slot spends per call beside
the provider's own), the proxy's CPU (one process: one core at most), the workers' CPU, and
the machine's (this box has 2 cores, shared). Usage:
    python -m bench.scaleout [--workers 1,2,4] [--calls 200] [--delay 1000] [--slots 4]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.throughput import cpu_seconds
from cli.stack import Proc, free_port, start_api, start_proxy, start_worker
from tests.harness import (
    create_database,
    drop_database,
    fake_proxy_config,
    new_team_key,
    platform_env,
    start_fake_provider,
)

TERMINAL = ("succeeded", "failed", "cancelled", "expired")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of every core so far (the first line of /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return float(total - idle), float(total)


def runqueue_seconds(proc: Proc) -> float:
    """Time the process's threads have spent runnable but waiting for a core (schedstat)."""
    total = 0
    for task in Path(f"/proc/{proc.popen.pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def call_times(dsn: str, job_id: str) -> tuple[float, float]:
    """Mean ms of the calls' proxy requests (latency_ms) and of claim -> finish."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT avg(latency_ms), avg(extract(epoch FROM finished_at - started_at)) * 1000"
            " FROM calls WHERE job_id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def jsonl(tag: str, calls: int, delay_ms: int) -> bytes:
    marker = f" [[delay:{delay_ms}]]" if delay_ms else ""
    lines = (
        json.dumps(
            {
                "custom_id": f"r{i:06d}",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"scale {tag} {i}{marker}"}],
            }
        )
        for i in range(calls)
    )
    return "\n".join(lines).encode()


class Sampler:
    """The job's `running` count every `every` seconds, in a thread, until stopped."""

    def __init__(self, client: httpx.Client, job_id: str, every: float = 0.25) -> None:
        self.client, self.job_id, self.every = client, job_id, every
        self.samples: list[int] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.wait(self.every):
            counts = self.client.get(f"/api/jobs/{self.job_id}").json()["request_counts"]
            if counts["running"] or counts["queued"]:
                self.samples.append(int(counts["running"]))

    def stop(self) -> list[int]:
        self.done.set()
        self.thread.join()
        return self.samples


def run_once(
    client: httpx.Client,
    procs: dict[str, Proc],
    workers: list[Proc],
    calls: int,
    delay_ms: int,
    dsn: str,
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    measured = {**procs, **{f"worker{i}": w for i, w in enumerate(workers)}}
    cpu_before = {name: cpu_seconds(p) for name, p in measured.items()}
    wait_before = {name: runqueue_seconds(p) for name, p in measured.items()}
    box_before = machine_cpu()
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = client.post(
        "/api/jobs",
        params={"job_type": "scale-" + tag},
        content=jsonl(tag, calls, delay_ms),
        headers={"Content-Type": "application/x-ndjson"},
    )
    r.raise_for_status()
    job_id = r.json()["id"]
    sampler = Sampler(client, job_id)
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            break
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    in_flight = sampler.stop()
    box_after = machine_cpu()
    cpu = {name: cpu_seconds(p) - cpu_before[name] for name, p in measured.items()}
    waited = {name: runqueue_seconds(p) - wait_before[name] for name, p in measured.items()}
    proxy_ms, held_ms = call_times(dsn, job_id)
    assert job["status"] == "succeeded", job["status"]
    assert job["request_counts"]["succeeded"] == calls, job["request_counts"]
    span = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    busy = box_after[0] - box_before[0]
    total = box_after[1] - box_before[1]
    return {
        "span": span,
        "wall": wall,
        "rate": calls / max(span, 1e-3),
        "in_flight_mean": sum(in_flight) / max(1, len(in_flight)),
        "in_flight_max": max(in_flight, default=0),
        # cores used over the job's wall time, per process
        "cores": {name: seconds / wall for name, seconds in cpu.items()},
        "cpu_ms_per_call": {name: seconds * 1000 / calls for name, seconds in cpu.items()},
        "runq_ms_per_call": {name: seconds * 1000 / calls for name, seconds in waited.items()},
        "proxy_ms": proxy_ms,
        "held_ms": held_ms,
        "box_busy": busy / total if total else 0.0,
        "load": (load_before + os.getloadavg()[0]) / 2,
    }


def explain(n: int, slots: int, delay_ms: int, res: dict[str, Any], ncpu: int) -> list[str]:
    """Why this run fell short of slots / delay, with its figures."""
    ideal = slots * 1000 / delay_ms
    turnover_ms = slots / res["rate"] * 1000  # the time a slot takes per call
    cores = res["cores"]
    worker_cores = sum(v for k, v in cores.items() if k.startswith("worker"))
    each = ", ".join(f"{cores['worker' + str(i)]:.2f}" for i in range(n))
    lines = [
        f"ideal {ideal:.1f} calls/s ({slots} slots / {delay_ms} ms); achieved {res['rate']:.2f} "
        f"= {res['rate'] / ideal:.0%} of it",
        f"calls in flight: mean {res['in_flight_mean']:.1f}, max {res['in_flight_max']} of "
        f"{slots} slots; a slot takes {turnover_ms:,.0f} ms per call, {turnover_ms - delay_ms:,.0f} "
        f"ms of it beside the provider's {delay_ms} ms: the request through the proxy "
        f"{res['proxy_ms']:,.0f} ms (+{res['proxy_ms'] - delay_ms:,.0f}), the rest of the call "
        f"claimed -> finished {res['held_ms'] - res['proxy_ms']:,.0f} ms, between calls "
        f"{turnover_ms - res['held_ms']:,.0f} ms",
        "waiting for a core (runnable, schedstat) per call: "
        + ", ".join(
            f"{name} {ms:.0f} ms"
            for name, ms in (
                ("proxy", res["runq_ms_per_call"]["proxy"]),
                ("API", res["runq_ms_per_call"]["api"]),
                (
                    "workers",
                    sum(v for k, v in res["runq_ms_per_call"].items() if k.startswith("worker")),
                ),
            )
        )
        + " (a call runs on one worker: its share is the workers' figure)",
        f"CPU (cores busy over the run): proxy {cores['proxy']:.2f} of 1 (one process), "
        f"API {cores['api']:.2f}, fake provider {cores['provider']:.2f}, workers "
        f"{worker_cores:.2f} in all "
        f"({each}); the machine "
        f"{res['box_busy']:.0%} busy of {ncpu} cores (load average {res['load']:.1f}, other "
        "sessions included)",
    ]
    limits = []
    if res["rate"] >= 0.8 * ideal:
        limits.append("none: within 80 % of the ideal, the slots are the limit")
    if cores["proxy"] >= 0.8:
        limits.append(f"the proxy: {cores['proxy']:.2f} of its one core")
    ours = sum(cores.values())
    others = max(0.0, res["box_busy"] * ncpu - ours)
    if res["box_busy"] >= 0.85:
        limits.append(
            f"the machine: {res['box_busy']:.0%} of {ncpu} cores busy, {ours:.2f} cores of it "
            f"this bench's processes, {others:.2f} other processes"
        )
    if res["rate"] < 0.8 * ideal:
        parts = {
            "the request through the proxy": res["proxy_ms"] - delay_ms,
            "the worker's own work inside the call (claim to send, answer to finish)": res[
                "held_ms"
            ]
            - res["proxy_ms"],
            "the slot idle between calls (arq pickup, claim)": turnover_ms - res["held_ms"],
        }
        worst = max(parts, key=lambda k: parts[k])
        runq = sum(res["runq_ms_per_call"].values())
        limits.append(
            f"most of the {turnover_ms - delay_ms:,.0f} ms a slot spends beside the provider is "
            f"{worst} ({parts[worst]:,.0f} ms); the processes of a call waited {runq:,.0f} ms "
            "per call in all for a core"
        )
    if res["in_flight_mean"] < 0.8 * slots:
        limits.append(
            f"slots idle: {res['in_flight_mean']:.1f} of {slots} in flight on average "
            "(claim and finish, the workers' own CPU, waiting for a core)"
        )
    lines.append("limit: " + "; ".join(limits or ["not identified by these figures"]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--calls", type=int, default=200, help="calls of each run's job")
    parser.add_argument("--delay", type=int, default=1000, help="provider latency in ms")
    parser.add_argument("--slots", type=int, default=4, help="WORKER_MAX_JOBS of each worker")
    parser.add_argument(
        "--gateway",
        choices=("proxy", "inprocess"),
        default="proxy",
        help="LLM_GATEWAY of the API and workers (inprocess: each worker runs LiteLLM's Router, "
        "the single proxy process is out of the path; its column is then idle)",
    )
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    ncpu = os.cpu_count() or 1

    log_dir = Path(tempfile.mkdtemp(prefix="saas-llm-scaleout-"))
    db = create_database("saasllm_scaleout_")
    fake, fake_url = start_fake_provider(log_dir)
    procs: list[Proc] = [fake]
    workers: list[Proc] = []
    try:
        proxy_port = free_port()
        config = fake_proxy_config(log_dir, fake_url)
        proxy = start_proxy(platform_env(db, "", ""), config, proxy_port, log_dir)
        procs.append(proxy)
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        # Small pools: Postgres is shared (100 connections) and up to 4 workers run at once; a
        # call holds a connection only while it is claimed or finished.
        dsn = db.replace("postgresql+asyncpg://", "postgresql://")
        queue = "saas-llm-bench-scaleout:" + uuid.uuid4().hex[:6]
        env = platform_env(db + "?pool_size=4&max_overflow=2", queue, proxy_url)
        env["WORKER_MAX_JOBS"] = str(args.slots)
        if args.gateway == "inprocess":
            env.update(
                LLM_GATEWAY="inprocess",
                LITELLM_CONFIG_PATH=str(config),
                LITELLM_LOCAL_MODEL_COST_MAP="True",
            )
        api_port = free_port()
        api = start_api(env, api_port, log_dir, name="api-scaleout")
        procs.append(api)
        api_url = f"http://127.0.0.1:{api_port}"
        key = new_team_key(api_url, "scale-")

        print(
            f"{args.calls} calls per run, provider {args.delay} ms, {args.slots} slots per "
            f"worker, gateway {args.gateway}, one proxy process, one API process; {ncpu} cores; "
            "load average at start "
            f"{os.getloadavg()[0]:.1f}"
        )
        results: dict[int, dict[str, Any]] = {}
        with httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as client:
            for n in counts:
                workers = [
                    start_worker(env, log_dir, name=f"worker-{n}-{i}", wait=False) for i in range(n)
                ]
                for w in workers:
                    w.wait_log("token counter ready", timeout=300)
                measured = {"proxy": proxy, "api": api, "provider": fake}
                run_once(client, measured, workers, 2 * n, 0, dsn)  # warm up
                res = run_once(client, measured, workers, args.calls, args.delay, dsn)
                results[n] = res
                base = results[counts[0]]["rate"] / counts[0]
                print(
                    f"\n{n} worker(s), {n * args.slots} slots: {res['rate']:.2f} calls/s "
                    f"(job {res['span']:.1f} s), {res['rate'] / base:.2f}x of 1 worker "
                    f"(ideal {n:.0f}x)"
                )
                for line in explain(n, n * args.slots, args.delay, res, ncpu):
                    print("  " + line)
                for w in workers:
                    w.stop()
                workers = []

        base = results[counts[0]]["rate"] / counts[0]
        print(
            "\n| workers | slots | calls/s | ratio to 1 worker (ideal) | % of slots/delay "
            "| calls in flight mean / max | slot ms per call: proxy request / rest of call / "
            "between calls | CPU cores: proxy, API, workers | waiting for a core ms per call: "
            "proxy, API, workers | machine busy | load avg |"
        )
        print("|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|")
        for n, res in results.items():
            slots = n * args.slots
            cores = res["cores"]
            wc = sum(v for k, v in cores.items() if k.startswith("worker"))
            rq = res["runq_ms_per_call"]
            wq = sum(v for k, v in rq.items() if k.startswith("worker"))
            print(
                f"| {n} | {slots} | {res['rate']:.2f} | {res['rate'] / base:.2f} ({n}) | "
                f"{res['rate'] / (slots * 1000 / args.delay):.0%} | "
                f"{res['in_flight_mean']:.1f} / {res['in_flight_max']} | "
                f"{res['proxy_ms']:,.0f} / {res['held_ms'] - res['proxy_ms']:,.0f} / "
                f"{slots * 1000 / res['rate'] - res['held_ms']:,.0f} | "
                f"{cores['proxy']:.2f}, {cores['api']:.2f}, {wc:.2f} | "
                f"{rq['proxy']:.0f}, {rq['api']:.0f}, {wq:.0f} | "
                f"{res['box_busy']:.0%} of {ncpu} | {res['load']:.1f} |"
            )
        print("\nCPU ms per call (proxy, API, workers in all):")
        for n, res in results.items():
            ms = res["cpu_ms_per_call"]
            wms = sum(v for k, v in ms.items() if k.startswith("worker"))
            print(f"  {n} worker(s): {ms['proxy']:.1f}, {ms['api']:.1f}, {wms:.1f}")
    finally:
        for w in workers:
            w.stop()
        for proc in reversed(procs):
            proc.stop()
        drop_database(db)


if __name__ == "__main__":
    main()
