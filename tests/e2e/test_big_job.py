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
import psycopg
import pytest

from cli.stack import Proc, Stack, free_port, start_api, start_worker
from tests.conftest import base_env, nonce
from tests.harness import MASTER_KEY, fake_proxy_config

pytestmark = pytest.mark.bigjob
REQUESTS = int(os.environ.get("BIGJOB_REQUESTS", "50000"))
MAX_RSS_MB = 200
VACUUM_EVERY = 5000  # finished calls between two vacuums, where the server runs no autovacuum


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
    # Two workers, as a deployment scales them: one worker is CPU-bound at ~50 calls/s on a
    # 2-core machine, and the two together keep the run within CI's budget.
    for n in (1, 2):
        s.procs[f"worker-{n}"] = start_worker(env, log_dir, name=f"worker-big-{n}")
    yield s
    s.stop()


class Autovacuum:
    """What autovacuum does for a real deployment, where this machine's Postgres runs none.

    The claim and the job end read partial indexes of queued and running calls; each call run
    leaves a dead entry in them until a vacuum. Without one, every claim walks past all the calls
    run so far, and a 50,000-call job slows as it goes (~95 calls/s at the start, ~30 at
    28,000 here). So where `autovacuum` is off, the test vacuums the job's tables each time
    another `VACUUM_EVERY` calls have finished, as autovacuum's thresholds would.
    """

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SHOW autovacuum").fetchone()
        self.needed = row is not None and row[0] == "off"
        self.vacuums = 0
        self._at = 0

    def after(self, finished: int) -> None:
        if self.needed and finished - self._at >= VACUUM_EVERY:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE) calls, jobs")
            self._at = finished
            self.vacuums += 1


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


def test_a_50000_request_jsonl_job_completes_with_the_api_under_200_mb(
    big_stack: Stack, database_url: str
) -> None:
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

        vacuum = Autovacuum(database_url)
        started = time.monotonic()
        deadline = started + 4 * 3600
        while True:
            current = http.get(f"/api/jobs/{job['id']}").json()
            if current["status"] in ("succeeded", "failed", "cancelled", "expired"):
                break
            assert time.monotonic() < deadline, current
            counts = current["request_counts"]
            vacuum.after(counts["succeeded"] + counts["failed"])
            time.sleep(2)  # the poll's interval: what ends the wait is the job's state
        print(
            f"\nBIGJOB {REQUESTS} calls ran in {time.monotonic() - started:.0f} s"
            f" ({vacuum.vacuums} vacuums by the test)",
            flush=True,
        )
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
