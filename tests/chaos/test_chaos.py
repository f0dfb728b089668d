"""Nothing lost, nothing counted twice: crashes, restarts and outages under load."""

from __future__ import annotations

import signal
import time
import uuid

import httpx
import pytest

from tests.chaos.conftest import Chaos, report, wait_all_terminal
from tests.harness import wait_until

pytestmark = pytest.mark.chaos


def _submit(client: httpx.Client, tag: str, jobs: int, calls: int, extra: str = "") -> list[str]:
    ids = []
    for j in range(jobs):
        requests = [
            {
                "custom_id": f"c{i}",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} j{j} c{i} {extra}"}],
            }
            for i in range(calls)
        ]
        r = client.post("/api/jobs", json={"requests": requests})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _running_calls(client: httpx.Client, ids: list[str]) -> int:
    return sum(client.get(f"/api/jobs/{j}").json()["request_counts"]["running"] for j in ids)


def test_kill_9_worker_with_hundreds_of_calls_in_flight(chaos: Chaos) -> None:
    tag = "kill9-" + uuid.uuid4().hex[:6]
    with chaos.client() as client:
        ids = _submit(client, tag, jobs=20, calls=15, extra="[[delay:2000]]")
        wait_until(lambda: len(chaos.seen(tag)) >= 200, 60, "200 calls in flight")
        worker = chaos.workers[-1]
        worker.popen.send_signal(signal.SIGKILL)
        worker.popen.wait(10)
        chaos.workers.remove(worker)
        in_flight = _running_calls(client, ids)
        assert in_flight >= 200
        chaos.new_worker()
        jobs = wait_all_terminal(client, ids, timeout=180)
    repeated = len(chaos.seen(tag)) - 300
    lost, twice = report("kill -9 worker", 20, jobs, repeated)
    assert lost == 0 and twice == 0
    assert all(j["status"] == "succeeded" and j["request_counts"]["succeeded"] == 15 for j in jobs)
    assert 0 <= repeated <= in_flight


def test_redis_restarted_empty_during_load(chaos: Chaos) -> None:
    tag = "redis-" + uuid.uuid4().hex[:6]
    with chaos.client() as client:
        ids = _submit(client, tag, jobs=10, calls=10, extra="[[delay:500]]")
        wait_until(lambda: len(chaos.seen(tag)) >= 20, 60, "work to start")
        chaos.redis_restart_empty()
        chaos.restarts = 0
        jobs = wait_all_terminal(client, ids, timeout=180, chaos=chaos)
        print(f"\nCHAOS redis: workers restarted by the supervisor: {chaos.restarts}")
    repeated = len(chaos.seen(tag)) - 100
    lost, twice = report("redis restarted empty", 10, jobs, repeated)
    assert lost == 0 and twice == 0
    assert all(j["status"] == "succeeded" for j in jobs)


def test_postgres_restarted_during_load(chaos: Chaos) -> None:
    tag = "pg-" + uuid.uuid4().hex[:6]
    statuses: dict[int, int] = {}
    with chaos.client() as client:
        ids = _submit(client, tag, jobs=10, calls=10, extra="[[delay:300]]")
        wait_until(lambda: len(chaos.seen(tag)) >= 20, 60, "work to start")
        chaos.pg.stop()
        probe = {
            "requests": [
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} during"}]}
            ]
        }
        for _ in range(5):
            r = client.post("/api/jobs", json=probe)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 503:
                assert r.json()["error"]["type"] == "service_unavailable"
                assert r.headers["retry-after"]
            g = client.get(f"/api/jobs/{ids[0]}")
            statuses[g.status_code] = statuses.get(g.status_code, 0) + 1
        chaos.restart_postgres()
        chaos.restarts = 0
        jobs = wait_all_terminal(client, ids, timeout=180, chaos=chaos)
        print(f"\nCHAOS postgres: workers restarted by the supervisor: {chaos.restarts}")
    print(f"\nCHAOS postgres outage: API answers during the outage {statuses}")
    assert set(statuses) == {503}
    lost, twice = report("postgres restarted", 10, jobs, len(chaos.seen(tag)) - 100)
    assert lost == 0 and twice == 0
    assert all(j["status"] == "succeeded" for j in jobs)


def test_provider_down_then_failing_then_back(chaos: Chaos) -> None:
    tag = "prov-" + uuid.uuid4().hex[:6]
    with chaos.client() as client:
        chaos.stop_provider()
        down = _submit(client, tag, jobs=3, calls=2, extra="down")
        jobs = wait_all_terminal(client, down, timeout=120)
        assert all(j["status"] == "failed" for j in jobs)
        for j in jobs:
            for call in j["calls"]:
                assert call["status"] == "failed" and call["attempts"] == 4
                assert call["error"]["type"] == "provider_error"
        chaos.restart_provider()
        failing = _submit(client, tag, jobs=2, calls=2, extra="[[fail:500]]")
        failed = wait_all_terminal(client, failing, timeout=120)
        assert all(j["status"] == "failed" and j["usage"]["total_tokens"] == 0 for j in failed)
        back = _submit(client, tag, jobs=3, calls=2, extra="back")
        ok = wait_all_terminal(client, back, timeout=120)
    lost, twice = report("provider down/500/back", 8, jobs + failed + ok, 0)
    assert lost == 0 and twice == 0
    assert all(j["status"] == "succeeded" for j in ok)


def test_sigterm_drains_or_requeues(chaos: Chaos) -> None:
    tag = "term-" + uuid.uuid4().hex[:6]
    with chaos.client() as client:
        ids = _submit(client, tag, jobs=10, calls=20, extra="[[delay:1500]]")
        wait_until(lambda: len(chaos.seen(tag)) >= 50, 60, "calls in flight")
        alive = [w for w in chaos.workers if w.alive()]
        assert len(alive) == 1, [w.name for w in alive]
        worker = alive[0]
        started = time.monotonic()
        worker.popen.send_signal(signal.SIGTERM)
        code = worker.popen.wait(30)
        took = time.monotonic() - started
        assert _running_calls(client, ids) == 0  # finished or handed back, none left running
        chaos.workers.remove(worker)
        chaos.new_worker()
        jobs = wait_all_terminal(client, ids, timeout=180)
    repeated = len(chaos.seen(tag)) - 200
    print(f"\nCHAOS sigterm: worker exited with {code} after {took:.1f}s (drain window 6s)")
    lost, twice = report("sigterm during load", 10, jobs, repeated)
    assert lost == 0 and twice == 0
    assert all(j["status"] == "succeeded" for j in jobs)
    assert took < 6 + 5


def test_api_keeps_accepting_while_redis_is_down(chaos: Chaos) -> None:
    """Postgres is the system of record: with Redis away, submissions are stored (202) and run
    once Redis is back; nothing answers 500 and nothing hangs."""
    tag = "redisdown-" + uuid.uuid4().hex[:6]
    assert chaos.redis.proc is not None
    chaos.redis.proc.kill()
    statuses: dict[int, int] = {}
    with chaos.client() as client:
        try:
            ids = []
            for j in range(5):
                started = time.monotonic()
                r = client.post(
                    "/api/jobs",
                    json={
                        "requests": [
                            {
                                "model": "gpt-4o-mini",
                                "messages": [{"role": "user", "content": f"{tag} {j}"}],
                            }
                        ]
                    },
                )
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert time.monotonic() - started < 10
                if r.status_code == 202:
                    ids.append(r.json()["id"])
                g = client.get(f"/api/jobs/{ids[-1]}") if ids else None
                assert g is None or g.status_code == 200
            ready = httpx.get(chaos.api_url + "/ready", timeout=10)
            assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"
        finally:
            chaos.redis_restart_empty()
        jobs = wait_all_terminal(client, ids, timeout=120, chaos=chaos)
    print(f"\nCHAOS redis down: API answers {statuses}")
    assert statuses == {202: 5}
    lost, twice = report("submitted while redis was down", 5, jobs, 0)
    assert lost == 0 and twice == 0
    assert all(j["status"] == "succeeded" for j in jobs)
