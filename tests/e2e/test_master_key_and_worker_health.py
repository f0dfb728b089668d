"""The guide's "same key for both services", checked: `/ready` answers 503 naming the setting
when the proxy rejects the API's LITELLM_MASTER_KEY, and a worker with such a key refuses to
start. The worker's health port reports its event loop, last task and queue, and turns 503
while the loop is really blocked."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx

from cli.stack import free_port, start_api, start_worker
from shared.config import Settings
from tests.conftest import OwnPlatform, base_env, nonce
from tests.harness import wait_until

WRONG_KEY = "sk-test-wrong-" + uuid.uuid4().hex


def test_ready_is_503_with_the_reason_when_the_proxy_rejects_the_key(
    database_url: str, proxy: str, log_dir: Path
) -> None:
    env = base_env(database_url, "saas-llm-key:" + nonce(), proxy)
    env["LITELLM_MASTER_KEY"] = WRONG_KEY  # ADMIN_API_KEY stays the test key
    port = free_port()
    api = start_api(env, port, log_dir, name="api-wrong-key")
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=30)
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["proxy"] == "ok"  # the proxy is up: only the key is wrong
        reason = body["checks"]["master_key"]
        assert "LITELLM_MASTER_KEY is not accepted by the proxy" in reason and "HTTP 4" in reason
        assert WRONG_KEY not in r.text
    finally:
        api.stop()


def test_worker_refuses_to_start_with_a_key_the_proxy_rejects(
    database_url: str, proxy: str, log_dir: Path
) -> None:
    env = base_env(database_url, "saas-llm-key:" + nonce(), proxy)
    env["LITELLM_MASTER_KEY"] = WRONG_KEY
    worker = start_worker(env, log_dir, name="worker-wrong-key", wait=False)
    try:
        assert worker.popen.wait(90) != 0
        log = worker.log_path.read_text()
        assert "refusing to start: LITELLM_MASTER_KEY is not accepted by the proxy" in log
        assert "worker started" not in log and WRONG_KEY not in log
    finally:
        worker.kill()


def test_health_port_is_off_by_default() -> None:
    assert Settings(_env_file=None).worker_health_port is None  # type: ignore[call-arg]


def test_worker_health_port_reports_the_loop_and_goes_503_while_it_is_blocked(
    own_platform: OwnPlatform,
) -> None:
    port = free_port()
    overrides = {
        "WORKER_HEALTH_PORT": str(port),
        "WORKER_HEALTH_MAX_LAG_SECONDS": "1",
        "WORKER_HEALTH_BLOCK_SECONDS": "6",
    }
    url = f"http://127.0.0.1:{port}/health"

    def health() -> httpx.Response:
        return httpx.get(url, timeout=10)

    with own_platform(**overrides) as (team, _env, procs):
        first = health()
        assert first.status_code == 200, first.text
        body: dict[str, Any] = first.json()
        assert body["status"] == "healthy" and body["queue"] == "ok"
        assert body["loop"]["alive"] is True

        job = team.submit(
            [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": nonce()}]}]
        )
        assert team.wait(job["id"])["status"] == "succeeded"
        picked = wait_until(lambda: health().json()["last_task"], what="a task to be picked")
        assert picked["id"] and health().json()["tasks_started"] >= 1

        # Block the worker's event loop for real (development-only SIGUSR1 handler).
        os.kill(procs["worker"].popen.pid, signal.SIGUSR1)
        blocked = wait_until(
            lambda: (r := health()).status_code == 503 and r, what="503 while the loop is blocked"
        )
        assert blocked.json()["loop"]["alive"] is False
        assert blocked.json()["status"] == "unhealthy"
        wait_until(lambda: health().status_code == 200, timeout=60, what="healthy again")
        assert procs["worker"].alive()
