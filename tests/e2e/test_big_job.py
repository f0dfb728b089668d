"""A 50,000-request JSONL job end to end, in constant memory in the API (slow: `-m bigjob`).

Its own API and worker (in-process gateway, so the proxy is not the bottleneck on a small
machine) on the session's database and fake provider. The API's peak RSS (VmHWM, which covers
its whole life) must stay under 200 MB while it takes the body, and while it streams and pages
out every result.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.stack import Proc, Stack, free_port, start_api, start_worker
from tests.conftest import base_env, nonce
from tests.harness import MASTER_KEY, fake_proxy_config

pytestmark = pytest.mark.bigjob
REQUESTS = int(os.environ.get("BIGJOB_REQUESTS", "50000"))
MAX_RSS_MB = 200


def peak_rss_mb(proc: Proc) -> float:
    for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture(scope="module")
def big_stack(database_url: str, fake_provider: str, log_dir: Path) -> Iterator[Stack]:
    env = base_env(database_url, "saas-llm-big:" + uuid.uuid4().hex[:8], "http://127.0.0.1:9")
    env.update(
        LLM_GATEWAY="inprocess",
        LITELLM_CONFIG_PATH=str(fake_proxy_config(log_dir, fake_provider)),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        WORKER_RECONCILE_SECONDS="30",
        # The Postgres server is shared (100 connections): a small pool per process is plenty,
        # since a call holds a connection only while it is claimed or finished.
        DATABASE_URL=database_url + "?pool_size=15&max_overflow=0",
    )
    port = free_port()
    s = Stack(env=env, api_url=f"http://127.0.0.1:{port}", proxy_url="", log_dir=log_dir)
    s.procs["api"] = start_api(env, port, log_dir, name="api-big")
    s.procs["worker"] = start_worker(env, log_dir, name="worker-big")
    yield s
    s.stop()


def _body(tag: str) -> Iterator[bytes]:
    """The JSONL body, produced as it is sent (never whole in the test's memory either)."""
    for start in range(0, REQUESTS, 1000):
        yield b"".join(
            json.dumps(
                {
                    "custom_id": f"req-{i:06d}",
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"{tag} item {i} summarise"}],
                }
            ).encode()
            + b"\n"
            for i in range(start, min(start + 1000, REQUESTS))
        )


def test_a_50000_request_jsonl_job_completes_with_the_api_under_200_mb(big_stack: Stack) -> None:
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    team_id = "big-" + uuid.uuid4().hex[:8]
    with httpx.Client(base_url=big_stack.api_url, timeout=600) as http:
        assert (
            http.post(
                "/api/admin/teams", json={"team_id": team_id, "name": team_id}, headers=admin
            ).status_code
            == 201
        )
        key = http.post(f"/api/admin/teams/{team_id}/keys", json={}, headers=admin).json()["key"]
        http.headers["Authorization"] = f"Bearer {key}"
        tag = nonce()
        r = http.post(
            "/api/jobs",
            content=_body(tag),
            headers={"Content-Type": "application/x-ndjson"},
            params={"job_type": "big"},
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["request_counts"]["total"] == REQUESTS
        after_submit = peak_rss_mb(big_stack.procs["api"])
        print(
            f"\nBIGJOB {REQUESTS} requests stored; API peak RSS so far {after_submit:.0f} MB",
            flush=True,
        )

        deadline = time.monotonic() + 4 * 3600
        while True:
            current = http.get(f"/api/jobs/{job['id']}").json()
            if current["status"] in ("succeeded", "failed", "cancelled", "expired"):
                break
            assert time.monotonic() < deadline, current
            time.sleep(2)
        assert current["status"] == "succeeded", current
        assert current["request_counts"]["succeeded"] == REQUESTS

        seen = 0
        previous = ""
        with http.stream(
            "GET", f"/api/jobs/{job['id']}/results", headers={"Accept": "application/x-ndjson"}
        ) as stream:
            for line in stream.iter_lines():
                if not line:
                    continue
                result = json.loads(line)
                assert result["status"] == "succeeded" and result["custom_id"] > previous
                previous = result["custom_id"]
                seen += 1
        assert seen == REQUESTS
        paged, cursor = 0, None
        while True:
            page = http.get(
                f"/api/jobs/{job['id']}/results",
                params={"limit": 1000, **({"after": cursor} if cursor else {})},
            ).json()
            paged += len(page["data"])
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
        assert paged == REQUESTS
    peak = peak_rss_mb(big_stack.procs["api"])
    print(
        f"\nBIGJOB {REQUESTS} requests: API peak RSS {after_submit:.0f} MB after submit, {peak:.0f} MB at the end"
    )
    assert peak < MAX_RSS_MB, f"API peak RSS {peak:.0f} MB"
