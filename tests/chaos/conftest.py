"""A private platform for chaos tests: its own PostgreSQL, Redis and fake provider, which the
tests kill and restart, plus a proxy, the API and workers tuned to recover within seconds."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cli.embedded import EmbeddedPostgres, EmbeddedRedis
from cli.stack import Proc, free_port, start_api, start_proxy, start_worker
from shared.migrations import upgrade
from shared.models import JOB_TERMINAL
from tests.harness import MASTER_KEY, fake_proxy_config, platform_env, start_fake_provider

T = TypeVar("T")

TERMINAL = set(JOB_TERMINAL)


@dataclass
class Chaos:
    """Handles on every process of the private platform."""

    root: Path
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    provider_port: int
    provider: Proc
    env: dict[str, str]
    api_url: str
    api: Proc | None = None
    key: str = ""
    workers: list[Proc] = field(default_factory=list)
    started_workers: int = 0
    restarts: int = 0

    def ensure_healthy(self) -> None:
        """Bring the platform back to its normal shape: PostgreSQL, Redis, the provider and the
        API up, exactly one worker running, and nothing of an earlier test still in flight."""
        if self.pg.proc is None or not self.pg.proc.alive():
            self.restart_postgres()
        if self.redis.proc is None or not self.redis.proc.alive():
            self.redis.start()
        if not self.provider.alive():
            self.restart_provider()
        # Answer whatever an earlier test left held open (the proxy would keep those
        # connections busy) and forget the requests seen: each test counts its own tag.
        url = f"http://127.0.0.1:{self.provider_port}/_control/reset"
        httpx.post(url, timeout=30).raise_for_status()
        if self.api is None or not self.api.alive():
            self.api = start_api(self.env, int(self.api_url.rsplit(":", 1)[1]), self.root / "logs")
        self.workers = [w for w in self.workers if w.alive()]
        while len(self.workers) > 1:
            self.workers.pop().stop()
        if not self.workers:
            self.new_worker()
        self.cancel_unfinished()
        self.restarts = 0

    def cancel_unfinished(self) -> None:
        """Cancel the team's jobs that are still running (left by a test that failed)."""
        with self.client() as client:
            for status in ("queued", "running", "open"):
                page = client.get("/api/jobs", params={"status": status, "limit": 100}).json()
                for job in page["data"]:
                    client.post(f"/api/jobs/{job['id']}/cancel")

    def release(self, name: str) -> None:
        """Answer the provider requests held under `name` (and later ones)."""
        url = f"http://127.0.0.1:{self.provider_port}/_control/release"
        httpx.post(url, params={"name": name}, timeout=10).raise_for_status()

    def held(self, marker: str) -> int:
        """Provider requests with `marker` that are open right now."""
        return sum(1 for r in self.seen(marker) if "done" not in r)

    def restart_provider(self) -> None:
        self.provider.stop()
        self.provider, _ = start_fake_provider(self.root / "logs", self.provider_port)

    def restart_postgres(self) -> None:
        self.pg.init()  # re-opens the path for the unprivileged server account if needed
        self.pg.start()

    def stop_provider(self) -> None:
        self.provider.stop()

    def redis_restart_empty(self) -> None:
        assert self.redis.proc is not None
        self.redis.proc.kill()
        for path in self.redis.data_dir.iterdir():
            if path.name != "valkey.conf":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.redis.start()

    def new_worker(self) -> Proc:
        """Start a worker and wait until it takes tasks."""
        self.started_workers += 1
        worker = start_worker(self.env, self.root / "logs", name=f"worker-{self.started_workers}")
        worker.wait_log("worker started", timeout=120)
        self.workers.append(worker)
        return worker

    def replace_dead_workers(self) -> int:
        """Start a new worker for each one that exited, as a supervisor would; returns how many."""
        dead = [w for w in self.workers if not w.alive()]
        for worker in dead:
            self.workers.remove(worker)
            self.new_worker()
        return len(dead)

    def supervised(self, condition: Callable[[], T]) -> Callable[[], T]:
        """`condition`, checked as a supervisor would: workers that exited are replaced first.
        A worker that an earlier test's Redis restart stopped (arq stops when a connection
        breaks under a WATCH) may still be draining its tasks, and so look alive, when the
        next test begins."""

        def check() -> T:
            self.restarts += self.replace_dead_workers()
            return condition()

        return check

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=120
        )

    def seen(self, marker: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.provider_port}/_control/requests"
        return list(httpx.get(url, params={"contains": marker}, timeout=10).json())


@pytest.fixture(scope="module")
def chaos() -> Iterator[Chaos]:
    # Outside pytest's own temporary root, which pytest keeps at mode 0700 (and resets when
    # another pytest session starts): the embedded PostgreSQL runs as another user and must
    # reach its data folder all along.
    root = Path(tempfile.mkdtemp(prefix="saas-llm-chaos-"))
    logs = root / "logs"
    pg = EmbeddedPostgres(root / "pg", free_port(), secrets.token_hex(8), logs)
    pg.init()
    pg.start()
    pg.ensure_database("saas_llm")
    redis = EmbeddedRedis(root / "redis", free_port(), secrets.token_hex(8), logs)
    redis.start()
    provider_port = free_port()
    provider, provider_url = start_fake_provider(logs, provider_port)
    db_url = pg.url("saas_llm")
    upgrade(db_url)
    proxy_port = free_port()
    proxy = start_proxy(
        dict(os.environ, LITELLM_MASTER_KEY=MASTER_KEY),
        fake_proxy_config(logs, provider_url),
        proxy_port,
        logs,
    )
    env = platform_env(db_url, "chaos:" + uuid.uuid4().hex[:6], f"http://127.0.0.1:{proxy_port}")
    env.update(
        {
            "REDIS_URL": redis.url(),
            "WORKER_MAX_JOBS": "250",
            # Calls held at the provider never time out, however slow the machine; a killed
            # worker's calls come back when their lease (renewed while alive) runs out.
            "WORKER_CALL_TIMEOUT_SECONDS": "600",
            "WORKER_LEASE_SECONDS": "6",
            "WORKER_REQUEUE_GRACE_SECONDS": "2",
            "WORKER_RECONCILE_SECONDS": "1",
            "WORKER_DRAIN_SECONDS": "6",
            "WORKER_RETRY_BASE_SECONDS": "0.2",
            "WORKER_RETRY_MAX_SECONDS": "1",
            "WORKER_MAX_ATTEMPTS": "4",
            "DATABASE_POOL_SIZE": "20",
        }
    )
    api_port = free_port()
    api = start_api(env, api_port, logs)
    c = Chaos(root, pg, redis, provider_port, provider, env, f"http://127.0.0.1:{api_port}", api)
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    httpx.post(
        c.api_url + "/api/admin/teams", json={"team_id": "chaos", "name": "chaos"}, headers=admin
    ).raise_for_status()
    c.key = httpx.post(c.api_url + "/api/admin/teams/chaos/keys", json={}, headers=admin).json()[
        "key"
    ]
    c.new_worker()
    yield c
    for w in c.workers:
        w.kill()
    if c.api is not None:
        c.api.stop()
    proxy.stop()
    c.provider.stop()
    redis.stop()
    pg.stop()
    for data in ("pg", "redis"):  # the logs stay, for a failed run's post-mortem
        shutil.rmtree(root / data, ignore_errors=True)


@pytest.fixture
def healthy(chaos: Chaos) -> Iterator[Chaos]:
    """Each test starts from a healthy platform and leaves one behind, whatever it broke."""
    chaos.ensure_healthy()
    try:
        yield chaos
    finally:
        chaos.ensure_healthy()


def wait_all_terminal(
    client: httpx.Client, job_ids: list[str], timeout: float = 180.0, chaos: Chaos | None = None
) -> list[dict[str, Any]]:
    """Poll until every job has ended (tolerating 503s while a dependency comes back); with
    `chaos`, act as the workers' supervisor meanwhile (restart those that exited). Returns the
    jobs that ended by the timeout; those that did not are the lost ones, which `report` counts."""
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    jobs: dict[str, dict[str, Any]] = {}
    while pending:
        if chaos is not None:
            chaos.restarts += chaos.replace_dead_workers()
        for job_id in list(pending):
            try:
                r = client.get(f"/api/jobs/{job_id}", params={"include_calls": True})
            except httpx.HTTPError:
                continue
            assert r.status_code in (200, 503), r.text
            if r.status_code == 200 and r.json()["status"] in TERMINAL:
                jobs[job_id] = r.json()
                pending.discard(job_id)
        if pending and time.monotonic() > deadline:
            print(f"\n{len(pending)} job(s) never ended, e.g. {sorted(pending)[:3]}")
            break
        if pending:
            time.sleep(0.2)
    return [jobs[j] for j in job_ids if j in jobs]


def report(name: str, submitted: int, jobs: list[dict[str, Any]], repeated: int) -> tuple[int, int]:
    """Print the chaos line; return (lost, counted_twice)."""
    by_status: dict[str, int] = {}
    counted_twice = 0
    for job in jobs:
        by_status[job["status"]] = by_status.get(job["status"], 0) + 1
        calls = job["calls"]
        tokens = sum((c["usage"] or {}).get("total_tokens", 0) for c in calls)
        if job["usage"]["total_tokens"] != tokens:
            counted_twice += 1
    lost = submitted - len(jobs)
    print(
        f"\nCHAOS {name}: submitted={submitted} ended={dict(sorted(by_status.items()))} "
        f"lost={lost} counted_twice={counted_twice} repeated_provider_calls={repeated}"
    )
    return lost, counted_twice
