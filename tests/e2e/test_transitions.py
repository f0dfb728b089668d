"""Every way a job ends, through the public API: the `job.<status>` event is recorded and an
open event stream is woken by the job's notification.

The platform here re-reads streams only every 600 s (`JOBS_EVENTS_POLL_SECONDS`), so a stream
that sees the job end within the test's wait was woken by the end's notification, not by polling.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Proc, start_worker
from tests.conftest import Platform, TeamClient, nonce, private_platform
from tests.harness import MASTER_KEY, wait_until

QUIET = {
    "JOBS_EVENTS_POLL_SECONDS": "600",
    "WORKER_CALL_TIMEOUT_SECONDS": "600",
    "WORKER_LEASE_SECONDS": "3",
    "WORKER_RECONCILE_SECONDS": "1",
    "WORKER_MAX_ATTEMPTS": "1",
}


@pytest.fixture(scope="module")
def quiet(proxy: str, log_dir: Path) -> Iterator[Platform]:
    with private_platform(proxy, log_dir, **QUIET) as platform:
        yield platform


class Stream:
    """An SSE stream read in a thread; `events` fills as they arrive."""

    def __init__(self, team: TeamClient, job_id: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.closed = threading.Event()
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(team, job_id), daemon=True)
        self._thread.start()
        assert self.opened.wait(30), "the stream did not open"

    def _read(self, team: TeamClient, job_id: str) -> None:
        timeout = httpx.Timeout(10, read=120)
        try:
            with team.stream("GET", f"/api/jobs/{job_id}/events", timeout=timeout) as response:
                name = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((name, json.loads(line[6:])))
                        self.opened.set()
        finally:
            self.opened.set()
            self.closed.set()

    def last_status(self) -> str | None:
        jobs = [data for name, data in self.events if name == "job"]
        return jobs[-1]["status"] if jobs else None


def _ask(text: str) -> list[dict[str, Any]]:
    return [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}]


def _ends(team: TeamClient, stream: Stream, job_id: str, status: str) -> None:
    assert stream.closed.wait(90), f"the stream was not woken; saw {stream.events[-1:]}"
    assert stream.last_status() == status
    events = team.get("/api/webhooks/events", params={"job_id": job_id}).json()["data"]
    assert [e["type"] for e in events] == [f"job.{status}"]
    assert events[0]["payload"]["data"]["status"] == status


def _running(team: TeamClient, job_id: str) -> bool:
    return bool(team.get(f"/api/jobs/{job_id}").json()["request_counts"]["running"] == 1)


def test_success(quiet: Platform, provider: httpx.Client) -> None:
    team, _, _ = quiet
    tag = nonce()
    job = team.submit(_ask(f"{tag} [[hold:{tag}]]"))
    wait_until(lambda: _running(team, job["id"]), 60, "the call to start")
    stream = Stream(team, job["id"])
    provider.post("/_control/release", params={"name": tag})
    _ends(team, stream, job["id"], "succeeded")
    assert [e[1]["status"] for e in stream.events] == ["running", "succeeded"]


def test_failure(quiet: Platform) -> None:
    team, _, _ = quiet
    job = team.submit(_ask(f"{nonce()} [[delay:500]] [[fail:400]]"))
    stream = Stream(team, job["id"])
    _ends(team, stream, job["id"], "failed")


def test_cancel(quiet: Platform, provider: httpx.Client) -> None:
    team, _, _ = quiet
    tag = nonce()
    job = team.submit(_ask(f"{tag} [[hold:{tag}]]"))
    wait_until(lambda: _running(team, job["id"]), 60, "the call to start")
    stream = Stream(team, job["id"])
    assert team.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    _ends(team, stream, job["id"], "cancelled")
    provider.post("/_control/release", params={"name": tag})


def test_deadline(quiet: Platform, provider: httpx.Client) -> None:
    team, _, _ = quiet
    tag = nonce()
    job = team.submit(_ask(f"{tag} [[hold:{tag}]]"), deadline_seconds=1)
    stream = Stream(team, job["id"])
    _ends(team, stream, job["id"], "failed")
    calls = team.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()["calls"]
    assert calls[0]["error"]["type"] in ("deadline_exceeded", "timeout")
    provider.post("/_control/release", params={"name": tag})


def test_expiry(quiet: Platform) -> None:
    team, _, _ = quiet
    job = team.post("/api/jobs/create", json={"ttl_seconds": 1}).json()
    stream = Stream(team, job["id"])
    _ends(team, stream, job["id"], "expired")


def test_worker_lost(quiet: Platform, provider: httpx.Client, log_dir: Path) -> None:
    team, env, procs = quiet
    tag = nonce()
    job = team.submit(_ask(f"{tag} [[hold:{tag}]]"))
    wait_until(lambda: _running(team, job["id"]), 60, "the call to start")
    stream = Stream(team, job["id"])
    worker: Proc = procs["worker"]
    worker.popen.send_signal(signal.SIGKILL)
    worker.popen.wait(30)
    # a new worker's reconciler finds the lease run out on the last attempt: worker_lost
    procs["worker"] = start_worker(env, log_dir, name=f"worker-lost-{tag}")
    _ends(team, stream, job["id"], "failed")
    calls = team.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()["calls"]
    assert calls[0]["error"]["type"] == "worker_lost"
    provider.post("/_control/release", params={"name": tag})


def test_suspending_a_team_closes_its_streams_and_holds_its_queued_calls(
    quiet: Platform, provider: httpx.Client
) -> None:
    team, _, _ = quiet
    admin = httpx.Client(
        base_url=str(team.base_url), headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30
    )
    tag = nonce()
    limit = admin.patch(f"/api/admin/teams/{team.team_id}", json={"max_calls_in_flight": 1})
    assert limit.status_code == 200, limit.text
    try:
        first = team.submit(_ask(f"{tag} [[hold:{tag}]] a"))
        wait_until(lambda: _running(team, first["id"]), 60, "the first call to start")
        job = team.submit(_ask(f"{tag} b") + _ask(f"{tag} c"))  # wait behind the limit
        stream = Stream(team, job["id"])
        assert admin.post(f"/api/admin/teams/{team.team_id}/suspend").status_code == 200
        assert stream.closed.wait(60), "the stream of a suspended team stayed open"
        assert stream.events[-1][0] == "error"
        assert stream.events[-1][1]["error"]["type"] == "team_suspended"
        provider.post("/_control/release", params={"name": tag})
        # the running call finishes; the two queued ones do not start while suspended
        suspended_view = admin.get(f"/api/admin/teams/{team.team_id}")
        assert suspended_view.json()["status"] == "suspended"
        wait_until(lambda: any("done" in r for r in _seen(provider, tag)), 60, "the held call")
        resumed_at = _now(provider)
        assert admin.post(f"/api/admin/teams/{team.team_id}/resume").status_code == 200
        done = team.wait(job["id"], timeout=120)
        assert done["status"] == "succeeded" and done["request_counts"]["succeeded"] == 2
        assert team.wait(first["id"])["status"] == "succeeded"
        later = [r for r in _seen(provider, tag) if "[[hold:" not in r["content"]]
        assert len(later) == 2 and all(r["t"] >= resumed_at for r in later)
    finally:
        admin.post(f"/api/admin/teams/{team.team_id}/resume")
        admin.patch(f"/api/admin/teams/{team.team_id}", json={"max_calls_in_flight": None})
        admin.close()


def _seen(provider: httpx.Client, tag: str) -> list[dict[str, Any]]:
    return list(provider.get("/_control/requests", params={"contains": tag}).json())


def _now(provider: httpx.Client) -> float:
    """The provider's clock (the one its request times use), via a request of its own."""
    marker = nonce()
    provider.post(
        "/v1/chat/completions",
        json={"model": "x", "messages": [{"role": "user", "content": marker}]},
    )
    return float(_seen(provider, marker)[0]["t"])
