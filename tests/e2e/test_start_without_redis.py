"""The API starts while Redis is down and accepts work durably; /ready says what is missing."""

from __future__ import annotations

from pathlib import Path

import httpx

from cli.stack import free_port, start_api
from tests.conftest import base_env, nonce
from tests.harness import MASTER_KEY, create_database, drop_database


def test_the_api_starts_and_accepts_jobs_with_redis_down(proxy: str, log_dir: Path) -> None:
    url = create_database("saasllm_noredis_")
    env = base_env(url, "saas-llm-noredis:" + nonce(), proxy)
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    port = free_port()
    api = start_api(env, port, log_dir, name="api-no-redis")
    try:
        base = f"http://127.0.0.1:{port}"
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        assert httpx.get(base + "/health", timeout=10).json()["status"] == "healthy"
        ready = httpx.get(base + "/ready", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"
        team = "t-" + nonce()
        r = httpx.post(
            base + "/api/admin/teams", json={"team_id": team, "name": team}, headers=admin
        )
        assert r.status_code == 201, r.text
        key = httpx.post(f"{base}/api/admin/teams/{team}/keys", json={}, headers=admin).json()[
            "key"
        ]
        auth = {"Authorization": f"Bearer {key}"}
        body = {
            "requests": [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}]
        }
        submitted = httpx.post(base + "/api/jobs", json=body, headers=auth, timeout=30)
        assert submitted.status_code == 202, submitted.text
        job = httpx.get(f"{base}/api/jobs/{submitted.json()['id']}", headers=auth).json()
        assert job["status"] == "queued" and job["request_counts"]["queued"] == 1
    finally:
        api.stop()
        drop_database(url)
