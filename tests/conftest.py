"""Session fixtures: a private database and queue, the fake provider, a real LiteLLM proxy, the
API (uvicorn) and a worker (arq), all real processes on free loopback ports."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Proc, Stack, free_port, start_api, start_proxy, start_worker
from shared.models import JOB_TERMINAL
from tests.harness import (
    MASTER_KEY,
    create_database,
    drop_database,
    fake_proxy_config,
    platform_env,
    start_fake_provider,
)

TERMINAL = set(JOB_TERMINAL)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def fake_provider(log_dir: Path) -> Iterator[str]:
    proc, url = start_fake_provider(log_dir)
    yield url
    proc.stop()


def base_env(database_url: str, queue: str, proxy_url: str = "") -> dict[str, str]:
    """The platform's environment in tests: short retries, private webhook targets allowed."""
    env = platform_env(database_url, queue, proxy_url)
    env.update(
        {
            "WORKER_RETRY_BASE_SECONDS": "0.2",
            "WORKER_RETRY_MAX_SECONDS": "2",
            "WORKER_MAX_ATTEMPTS": "4",
            "WORKER_RECONCILE_SECONDS": "5",
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "WEBHOOK_RETRY_SCHEDULE": "0,0.5,0.5,0.5",
            "WEBHOOK_SWEEP_SECONDS": "1",
            "JOBS_MAX_REQUESTS": "50",
            "JOBS_MAX_BODY_BYTES": "262144",
            # Tests send many refused keys from 127.0.0.1; the throttle has its own tests.
            "AUTH_MAX_FAILURES_PER_ADDRESS": "0",
            "AUTH_MAX_FAILURES_PER_KEY_PREFIX": "0",
        }
    )
    return env


@pytest.fixture(scope="session")
def proxy(fake_provider: str, log_dir: Path) -> Iterator[str]:
    config = fake_proxy_config(log_dir, fake_provider)
    port = free_port()
    proc = start_proxy(dict(os.environ, LITELLM_MASTER_KEY=MASTER_KEY), config, port, log_dir)
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture(scope="session")
def stack(database_url: str, proxy: str, log_dir: Path) -> Iterator[Stack]:
    env = base_env(database_url, "saas-llm-test:" + uuid.uuid4().hex[:8], proxy)
    port = free_port()
    s = Stack(env=env, api_url=f"http://127.0.0.1:{port}", proxy_url=proxy, log_dir=log_dir)
    s.procs["api"] = start_api(env, port, log_dir)
    s.procs["worker"] = start_worker(env, log_dir)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def admin(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30
    ) as client:
        yield client


class TeamClient(httpx.Client):
    """An API client holding one team's key."""

    team_id: str
    key: str
    key_id: str

    def submit(self, requests: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        response = self.post("/api/jobs", json={"requests": requests, **extra})
        assert response.status_code == 202, response.text
        return dict(response.json())

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll until the job reaches a terminal state."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(f"/api/jobs/{job_id}").json()
            if job["status"] in TERMINAL:
                return dict(job)
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def make_team(admin: httpx.Client, stack: Stack) -> Iterator[Callable[..., TeamClient]]:
    clients: list[TeamClient] = []

    def make(**fields: Any) -> TeamClient:
        team_id = "t-" + uuid.uuid4().hex[:10]
        r = admin.post("/api/admin/teams", json={"team_id": team_id, "name": team_id, **fields})
        assert r.status_code == 201, r.text
        k = admin.post(f"/api/admin/teams/{team_id}/keys", json={"name": "test"})
        assert k.status_code == 201, k.text
        client = TeamClient(
            base_url=stack.api_url,
            headers={"Authorization": f"Bearer {k.json()['key']}"},
            timeout=30,
        )
        client.team_id, client.key, client.key_id = team_id, k.json()["key"], k.json()["id"]
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def team(make_team: Callable[..., TeamClient]) -> TeamClient:
    return make_team()


@pytest.fixture(scope="session")
def provider(fake_provider: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_provider, timeout=10) as client:
        yield client


def nonce() -> str:
    return uuid.uuid4().hex[:12]


Platform = tuple[TeamClient, dict[str, str], dict[str, Proc]]
OwnPlatform = Callable[..., AbstractContextManager[Platform]]


@contextmanager
def private_platform(proxy: str, log_dir: Path, **overrides: str) -> Iterator[Platform]:
    """API and worker on a private database and queue, with `overrides` in their environment.

    For tests that need other worker settings than the session stack's, or a worker they can
    kill; the shared worker cannot interfere. Yields a team's client, the environment and the
    processes (a test may add to them; all are stopped at the end)."""
    url = create_database("saasllm_wh_")
    tag = nonce()
    env = base_env(url, f"saas-llm-wh:{tag}", proxy)
    env.update(overrides)
    port = free_port()
    procs: dict[str, Proc] = {}
    client: TeamClient | None = None
    try:
        procs["api"] = start_api(env, port, log_dir, name=f"api-wh-{tag}")
        procs["worker"] = start_worker(env, log_dir, name=f"worker-wh-{tag}")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30
        ) as admin:
            team_id = "t-" + tag
            r = admin.post("/api/admin/teams", json={"team_id": team_id, "name": tag})
            assert r.status_code == 201, r.text
            k = admin.post(f"/api/admin/teams/{team_id}/keys", json={"name": "t"})
            assert k.status_code == 201, k.text
        client = TeamClient(
            base_url=base, headers={"Authorization": f"Bearer {k.json()['key']}"}, timeout=30
        )
        client.team_id, client.key, client.key_id = team_id, k.json()["key"], k.json()["id"]
        yield client, env, procs
    finally:
        if client is not None:
            client.close()
        for proc in procs.values():
            proc.stop()
        drop_database(url)


@pytest.fixture
def own_platform(proxy: str, log_dir: Path) -> OwnPlatform:
    """`with own_platform(WEBHOOK_X="1") as (team, env, procs):` a private API and worker."""
    return partial(private_platform, proxy, log_dir)


__all__ = ["Proc", "TeamClient", "nonce"]
