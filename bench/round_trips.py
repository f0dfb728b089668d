"""Database round trips per one-call job, counted on the wire: a figure that does not depend on
how loaded the machine is.

The API and the worker each reach Postgres through a small counting relay of their own (a TCP
proxy on loopback that reads the client side of the PostgreSQL protocol). A round trip is a
message after which the client waits for the server: a simple query (`Q`: asyncpg's BEGIN,
COMMIT, ROLLBACK) or a `Sync` closing an extended-protocol statement. The relay also names each
statement (from its `Parse` message) so the figures come with the statements that make them.

Runs, on loopback, the fake provider, the LiteLLM proxy, one API, one worker (proxy mode) and a
webhook sink; the team has a webhook endpoint, so delivery is counted too. Then:
  * N one-call jobs, one at a time, each waited for by its webhook's arrival at the sink (no
    polling through the API, which would count);
  * the same wall time with nothing submitted (the worker's and API's background loops), which
    is subtracted;
  * N `GET /api/jobs/{id}` and N list pages.

    python -m bench.round_trips [-n 50] [--top 12]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from bench.sink import start_sink
from cli.embedded import EmbeddedRedis
from cli.stack import Proc, free_port, start_api, start_proxy, start_worker
from tests.harness import (
    create_database,
    drop_database,
    fake_proxy_config,
    new_team_key,
    platform_env,
    start_fake_provider,
)
from tests.pgwire import WireCounter


def _wait_arrival(sink_url: str, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(a[0] == job_id for a in httpx.get(sink_url + "/arrivals", timeout=10).json()):
            return
        time.sleep(0.01)
    raise AssertionError(f"the webhook of job {job_id} did not arrive")


def _wait_arrivals(sink_url: str, job_ids: set[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arrived = {a[0] for a in httpx.get(sink_url + "/arrivals", timeout=10).json()}
        if job_ids <= arrived:
            return
        time.sleep(0.05)
    raise AssertionError(f"{len(job_ids - arrived)} webhooks did not arrive")


def _job(client: httpx.Client, i: int) -> str:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"round trip {i}"}],
        "max_tokens": 16,
    }
    r = client.post("/api/jobs", json={"requests": [body]})
    r.raise_for_status()
    return str(r.json()["id"])


def _redis_commands(client: redis.Redis) -> Counter[str]:
    """Commands the server has run since it started, by name, less this bench's INFO calls."""
    stats = cast(dict[str, dict[str, Any]], client.info("commandstats"))
    return Counter(
        {
            k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in stats.items()
            if k != "cmdstat_info"
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=50, help="jobs (and GETs) measured")
    parser.add_argument("--top", type=int, default=14, help="statements listed per process")
    parser.add_argument(
        "--concurrent",
        type=int,
        default=0,
        help="then this many jobs submitted 16 at a time: Redis commands and worker round "
        "trips per job with many calls running at once",
    )
    args = parser.parse_args()
    n = args.n

    log_dir = Path(tempfile.mkdtemp(prefix="saas-llm-rt-"))
    db = create_database("saasllm_rt_")
    api_wire, worker_wire = WireCounter(), WireCounter()
    api_wire.start()
    worker_wire.start()
    procs: list[Proc] = []
    try:
        fake, fake_url = start_fake_provider(log_dir)
        procs.append(fake)
        config = fake_proxy_config(log_dir, fake_url)
        proxy_port = free_port()
        procs.append(start_proxy(platform_env(db, "", ""), config, proxy_port, log_dir))
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        queue = "saas-llm-rt:" + uuid.uuid4().hex[:6]
        # A private Redis, so that its command counts are this platform's alone.
        own_redis = EmbeddedRedis(log_dir / "redis", free_port(), uuid.uuid4().hex, log_dir)
        procs.append(own_redis.start())
        redis_client = redis.Redis.from_url(own_redis.url())

        env_api = platform_env(api_wire.route(db), queue, proxy_url)
        env_worker = platform_env(worker_wire.route(db), queue, proxy_url)
        for env in (env_api, env_worker):
            env["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = "true"
            env["REDIS_URL"] = own_redis.url()
        sink, sink_url = start_sink(log_dir)
        procs.append(sink)
        api_port_http = free_port()
        procs.append(start_api(env_api, api_port_http, log_dir))
        procs.append(start_worker(env_worker, log_dir))
        api_url = f"http://127.0.0.1:{api_port_http}"
        key = new_team_key(api_url, "rt-")
        with httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            client.post("/api/webhooks/endpoints", json={"url": sink_url + "/"}).raise_for_status()
            for i in range(5):  # warm: imports, pools, prepared statements, the model list
                _wait_arrival(sink_url, _job(client, i))
            api_wire.reset()
            worker_wire.reset()
            redis_before = _redis_commands(redis_client)
            started = time.monotonic()
            ids = []
            for i in range(n):
                job_id = _job(client, i)
                _wait_arrival(sink_url, job_id)
                ids.append(job_id)
            wall = time.monotonic() - started
            redis_jobs = _redis_commands(redis_client) - redis_before
            api_jobs = (api_wire.round_trips, Counter(api_wire.statements))
            worker_jobs = (worker_wire.round_trips, Counter(worker_wire.statements))
            # The background loops over the same wall time, with nothing to do.
            api_wire.reset()
            worker_wire.reset()
            redis_before = _redis_commands(redis_client)
            time.sleep(wall)
            api_idle, worker_idle = api_wire.round_trips, worker_wire.round_trips
            redis_idle = _redis_commands(redis_client) - redis_before
            api_wire.reset()
            for job_id in ids:
                client.get(f"/api/jobs/{job_id}").raise_for_status()
            get_wire = (api_wire.round_trips, Counter(api_wire.statements))
            api_wire.reset()
            for _ in ids:
                client.get("/api/jobs", params={"limit": 20}).raise_for_status()
            list_wire = (api_wire.round_trips, Counter(api_wire.statements))
            if args.concurrent:
                worker_wire.reset()
                redis_before = _redis_commands(redis_client)
                with concurrent.futures.ThreadPoolExecutor(16) as pool:
                    many = list(pool.map(lambda i: _job(client, i), range(args.concurrent)))
                _wait_arrivals(sink_url, set(many))
                busy = (
                    _redis_commands(redis_client) - redis_before,
                    worker_wire.round_trips,
                    Counter(worker_wire.statements),
                )

        print(f"\ndatabase round trips, {n} one-call jobs one at a time ({wall:.1f} s), webhook on")
        rows = []
        for title, (total, stmts), idle in (
            ("API, per job submitted", api_jobs, api_idle),
            ("worker, per job run (claim, call, finish, webhook)", worker_jobs, worker_idle),
            ("API, per GET /api/jobs/{id}", get_wire, 0),
            ("API, per list page (limit 20)", list_wire, 0),
        ):
            per = (total - idle) / n
            rows.append((title, per, idle))
            print(
                f"  {title}: {per:.1f} round trips "
                f"({total} in all, {idle} of them background loops over the same time)"
            )
            for sql, count in stmts.most_common(args.top):
                print(f"    {count / n:5.2f}  {sql}")
        redis_per = (redis_jobs.total() - redis_idle.total()) / n
        print(
            f"  Redis commands per job, all processes: {redis_per:.1f} ({redis_jobs.total()} in "
            f"all, {redis_idle.total()} of them over the same time idle)"
        )
        for command, count in (redis_jobs - redis_idle).most_common(args.top):
            print(f"    {count / n:5.2f}  {command}")
        print("\n| path | round trips |\n|---|---:|")
        for title, per, _ in rows:
            print(f"| {title} | {per:.1f} |")
        print(f"| Redis commands per job (API and worker) | {redis_per:.1f} |")
        if args.concurrent:
            m = args.concurrent
            redis_busy, worker_busy, worker_stmts = busy
            print(
                f"\n{m} one-call jobs submitted 16 at a time, webhook on (background loops "
                "included):"
            )
            print(f"  worker round trips per job: {worker_busy / m:.1f}")
            for sql, count in worker_stmts.most_common(args.top):
                print(f"    {count / m:5.2f}  {sql}")
            print(f"  Redis commands per job, all processes: {redis_busy.total() / m:.1f}")
            for command, count in redis_busy.most_common(args.top):
                print(f"    {count / m:5.2f}  {command}")
    finally:
        for proc in reversed(procs):
            proc.stop()
        api_wire.stop()
        worker_wire.stop()
        drop_database(db)


if __name__ == "__main__":
    main()
