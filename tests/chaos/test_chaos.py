"""Nothing lost, nothing counted twice: crashes, restarts and outages under load."""

from __future__ import annotations

import signal
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from cli.stack import start_api
from tests.chaos.conftest import Chaos, report, wait_all_terminal
from tests.harness import MASTER_KEY, wait_until

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
    """Calls `running` in Postgres, as the API reports them."""
    return sum(client.get(f"/api/jobs/{j}").json()["request_counts"]["running"] for j in ids)


def _check(name: str, submitted: int, jobs: list[dict], repeated: int, calls: int) -> None:
    """The CHAOS line, then: nothing lost, nothing counted twice, every call succeeded."""
    lost, twice = report(name, submitted, jobs, repeated)
    assert lost == 0 and twice == 0
    assert len(jobs) == submitted
    assert [j["request_counts"]["succeeded"] for j in jobs] == [calls] * submitted


def test_kill_9_worker_with_hundreds_of_calls_in_flight(healthy: Chaos) -> None:
    chaos = healthy
    tag = "kill9-" + uuid.uuid4().hex[:6]
    with chaos.client() as client:
        # Every provider request is held open until released: what is in flight at the kill is
        # exactly what the provider holds, whatever the machine's speed.
        ids = _submit(client, tag, jobs=20, calls=15, extra=f"[[hold:{tag}]]")
        slots = int(chaos.env["WORKER_MAX_JOBS"])  # 250 of the 300 calls fill the worker
        wait_until(
            chaos.supervised(lambda: chaos.held(tag) == slots),
            120,
            f"{slots} calls held at the provider",
        )
        in_flight = wait_until(
            lambda: _running_calls(client, ids) == slots and slots, 60, "calls running in Postgres"
        )
        worker = chaos.workers[-1]
        worker.popen.send_signal(signal.SIGKILL)
        worker.popen.wait(30)
        chaos.workers.remove(worker)
        sent_before = len(chaos.seen(tag))
        assert sent_before == in_flight  # the dead worker had sent exactly what was running
        chaos.release(tag)
        chaos.new_worker()
        jobs = wait_all_terminal(client, ids)
    repeated = len(chaos.seen(tag)) - 300
    _check("kill -9 worker", 20, jobs, repeated, 15)
    print(f"CHAOS kill -9: in flight at the kill {in_flight}, repeated {repeated}")
    # each call in flight at the kill was sent once more; no other call was sent twice
    assert 0 < repeated <= in_flight


def test_redis_restarted_empty_during_load(healthy: Chaos) -> None:
    chaos = healthy
    tag = "redis-" + uuid.uuid4().hex[:6]
    with chaos.client() as client:
        ids = _submit(client, tag, jobs=10, calls=10, extra="[[delay:500]]")
        wait_until(chaos.supervised(lambda: len(chaos.seen(tag)) >= 20), 60, "work to start")
        chaos.redis_restart_empty()
        chaos.restarts = 0
        jobs = wait_all_terminal(client, ids, chaos=chaos)
        print(f"\nCHAOS redis: workers restarted by the supervisor: {chaos.restarts}")
    repeated = len(chaos.seen(tag)) - 100
    _check("redis restarted empty", 10, jobs, repeated, 10)


def test_postgres_restarted_during_load(healthy: Chaos) -> None:
    chaos = healthy
    tag = "pg-" + uuid.uuid4().hex[:6]
    statuses: dict[int, int] = {}
    with chaos.client() as client:
        ids = _submit(client, tag, jobs=10, calls=10, extra="[[delay:300]]")
        wait_until(chaos.supervised(lambda: len(chaos.seen(tag)) >= 20), 60, "work to start")
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
        jobs = wait_all_terminal(client, ids, chaos=chaos)
        print(f"\nCHAOS postgres: workers restarted by the supervisor: {chaos.restarts}")
    print(f"\nCHAOS postgres outage: API answers during the outage {statuses}")
    assert set(statuses) == {503}
    _check("postgres restarted", 10, jobs, len(chaos.seen(tag)) - 100, 10)


def test_provider_down_then_failing_then_back(healthy: Chaos) -> None:
    chaos = healthy
    tag = "prov-" + uuid.uuid4().hex[:6]
    with chaos.client() as client:
        chaos.stop_provider()
        down = _submit(client, tag, jobs=3, calls=2, extra="down")
        jobs = wait_all_terminal(client, down)
        assert [j["status"] for j in jobs] == ["failed"] * 3
        for j in jobs:
            for call in j["calls"]:
                assert call["status"] == "failed" and call["attempts"] == 4
                assert call["error"]["type"] == "provider_error"
        chaos.restart_provider()
        failing = _submit(client, tag, jobs=2, calls=2, extra="[[fail:500]]")
        failed = wait_all_terminal(client, failing)
        assert [(j["status"], j["usage"]["total_tokens"]) for j in failed] == [("failed", 0)] * 2
        back = _submit(client, tag, jobs=3, calls=2, extra="back")
        ok = wait_all_terminal(client, back)
    lost, twice = report("provider down/500/back", 8, jobs + failed + ok, 0)
    assert lost == 0 and twice == 0
    assert [j["status"] for j in ok] == ["succeeded"] * 3


def test_sigterm_drains_or_requeues(healthy: Chaos) -> None:
    chaos = healthy
    tag = "term-" + uuid.uuid4().hex[:6]
    with chaos.client() as client:
        # 50 calls answer within the drain window (drained), 100 are held past it (handed back).
        quick = _submit(client, tag, jobs=5, calls=10, extra="[[delay:1500]]")
        held = _submit(client, tag, jobs=10, calls=10, extra=f"[[hold:{tag}]]")
        wait_until(
            chaos.supervised(lambda: chaos.held(tag) >= 100), 120, "100 calls held at the provider"
        )
        alive = [w for w in chaos.workers if w.alive()]
        assert len(alive) == 1, [w.name for w in alive]
        worker = alive[0]
        started = time.monotonic()
        worker.popen.send_signal(signal.SIGTERM)
        code = worker.popen.wait(60)  # bounded by the drain window, not by the held calls
        took = time.monotonic() - started
        chaos.workers.remove(worker)
        assert _running_calls(client, quick + held) == 0  # finished or handed back, none running
        chaos.release(tag)
        chaos.new_worker()
        jobs = wait_all_terminal(client, quick + held)
    repeated = len(chaos.seen(tag)) - 150
    held_repeats = len(chaos.seen(f"[[hold:{tag}]]")) - 100
    print(f"\nCHAOS sigterm: worker exited with {code} after {took:.1f}s (drain window 6s)")
    _check("sigterm during load", 15, jobs, repeated, 10)
    # Every held call was handed back and sent once more, without using up an attempt.
    assert held_repeats == 100
    assert {c["attempts"] for j in jobs[5:] for c in j["calls"]} == {1}


def test_api_keeps_accepting_while_redis_is_down(healthy: Chaos) -> None:
    """Postgres is the system of record: with Redis away, submissions are stored (202) and run
    once Redis is back; nothing answers 500 and nothing hangs; an API started meanwhile serves."""
    chaos = healthy
    tag = "redisdown-" + uuid.uuid4().hex[:6]
    assert chaos.redis.proc is not None
    chaos.redis.proc.kill()
    statuses: dict[int, int] = {}
    with chaos.client() as client:
        try:
            # a restart during the outage must not take the API down
            assert chaos.api is not None
            chaos.api.stop()
            chaos.api = start_api(
                chaos.env, int(chaos.api_url.rsplit(":", 1)[1]), chaos.root / "logs", "api-2"
            )
            assert httpx.get(chaos.api_url + "/health", timeout=10).status_code == 200
            ids = []
            for j in range(5):
                # answered, not hung: the client's timeout is the bound (after-commit steps
                # are cut at 5 s, so a missing Redis cannot hold a submission)
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
                if r.status_code == 202:
                    ids.append(r.json()["id"])
                g = client.get(f"/api/jobs/{ids[-1]}") if ids else None
                assert g is None or g.status_code == 200
            ready = httpx.get(chaos.api_url + "/ready", timeout=10)
            assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"
        finally:
            chaos.redis_restart_empty()
        jobs = wait_all_terminal(client, ids, chaos=chaos)
    print(f"\nCHAOS redis down: API answers {statuses}")
    assert statuses == {202: 5}
    _check("submitted while redis was down", 5, jobs, 0, 1)


# -- money through a worker kill ------------------------------------------------------------------


def _money_team(chaos: Chaos, admin: httpx.Client, **fields: object) -> tuple[str, httpx.Client]:
    team_id = "chaos-money-" + uuid.uuid4().hex[:8]
    r = admin.post("/api/admin/teams", json={"team_id": team_id, "name": team_id, **fields})
    assert r.status_code == 201, r.text
    key = admin.post(f"/api/admin/teams/{team_id}/keys", json={}).json()["key"]
    grant = admin.post(f"/api/admin/teams/{team_id}/credits", json={"amount": "1000"})
    assert grant.status_code == 201, grant.text
    client = httpx.Client(
        base_url=chaos.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )
    return team_id, client


def _ledger(admin: httpx.Client, team_id: str) -> list[dict]:
    entries: list[dict] = []
    after: str | None = None
    while True:
        params: dict[str, object] = {"limit": 200, **({"after": after} if after else {})}
        page = admin.get(f"/api/admin/teams/{team_id}/ledger", params=params).json()
        entries += page["data"]
        if not page["has_more"]:
            return entries
        after = page["next_cursor"]


def test_kill_9_worker_charges_each_succeeded_job_exactly_once(healthy: Chaos) -> None:
    """Two teams, `job` and `usd` mode, with calls held in flight when the worker is killed: the
    new worker runs them again, and each succeeded job is charged exactly once (one `charge`
    entry), the failed and cancelled ones never; the ledger sums to the balance and the billed
    spend in the budget is the sum of the calls' billed prices."""
    chaos = healthy
    tag = "money9-" + uuid.uuid4().hex[:6]
    D = Decimal
    admin = httpx.Client(
        base_url=chaos.api_url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=120
    )
    made = {
        "job": _money_team(chaos, admin, enforce_credits=True),
        "usd": _money_team(
            chaos,
            admin,
            billing_mode="usd",
            credits_per_usd="1000",
            price_markup_pct="10",
            enforce_credits=True,
            budget_usd="100",
            budget_period="month",
        ),
    }
    teams = {mode: client for mode, (_, client) in made.items()}
    held_ids: dict[str, list[str]] = {}
    other_ids: dict[str, dict[str, str]] = {}
    try:
        for mode, client in teams.items():
            held_ids[mode] = []
            for j in range(3):
                requests = [
                    {
                        "model": "gpt-4o-mini",
                        "max_tokens": 50,
                        "messages": [
                            {"role": "user", "content": f"{tag} {mode} j{j} c{i} [[hold:{tag}]]"}
                        ],
                    }
                    for i in range(4)
                ]
                r = client.post("/api/jobs", json={"requests": requests})
                assert r.status_code == 202, r.text
                held_ids[mode].append(r.json()["id"])
            fail = client.post(
                "/api/jobs",
                json={
                    "requests": [
                        {
                            "model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": f"{tag} [[fail:400]]"}],
                        }
                    ]
                },
            )
            cancel = client.post(
                "/api/jobs",
                json={
                    "requests": [
                        {
                            "model": "gpt-4o-mini",
                            "messages": [
                                {"role": "user", "content": f"{tag} cancel [[hold:{tag}-c]]"}
                            ],
                        }
                    ]
                },
            )
            assert fail.status_code == 202 and cancel.status_code == 202, (fail.text, cancel.text)
            other_ids[mode] = {"failed": fail.json()["id"], "cancelled": cancel.json()["id"]}
        wait_until(lambda: chaos.held(f"[[hold:{tag}-c]]") == 2, 120, "the calls to cancel held")
        for mode, client in teams.items():
            r = client.post(f"/api/jobs/{other_ids[mode]['cancelled']}/cancel")
            assert r.status_code == 200, r.text
        in_flight = 2 * 3 * 4
        wait_until(lambda: chaos.held(f"[[hold:{tag}]]") == in_flight, 120, "24 calls held")
        wait_until(
            lambda: sum(_running_calls(c, held_ids[m]) for m, c in teams.items()) == in_flight,
            60,
            "24 calls running in Postgres",
        )
        worker = chaos.workers[-1]
        worker.popen.send_signal(signal.SIGKILL)
        worker.popen.wait(30)
        chaos.workers.remove(worker)
        chaos.release(tag)
        chaos.new_worker()
        ended = {
            mode: wait_all_terminal(
                client, held_ids[mode] + list(other_ids[mode].values()), chaos=chaos
            )
            for mode, client in teams.items()
        }
        sent = len(chaos.seen(f"[[hold:{tag}]]"))
        repeated = sent - in_flight
        print(f"\nCHAOS money kill -9: in flight {in_flight}, sent {sent}, repeated {repeated}")
        assert 0 < repeated <= in_flight  # the tasks really ran again

        for mode, client in teams.items():
            jobs = {j["id"]: j for j in ended[mode]}
            assert len(jobs) == 5
            team_id = made[mode][0]
            assert [jobs[j]["status"] for j in held_ids[mode]] == ["succeeded"] * 3
            assert jobs[other_ids[mode]["failed"]]["status"] == "failed"
            assert jobs[other_ids[mode]["cancelled"]]["status"] == "cancelled"
            for status in ("failed", "cancelled"):
                assert jobs[other_ids[mode][status]]["credits_charged"] == "0"
            entries = _ledger(admin, team_id)
            charges = [e for e in entries if e["kind"] == "charge"]
            # exactly one charge per succeeded job, none for the others
            assert sorted(e["job_id"] for e in charges) == sorted(held_ids[mode])
            credits = client.get("/api/credits").json()
            balance = D(credits["balance"])
            assert sum((D(e["amount"]) for e in entries), D(0)) == balance
            assert D(entries[0]["balance_after"]) == balance
            assert D(credits["reserved"]) == 0
            billed_total = D(0)
            for job_id in held_ids[mode]:
                job = jobs[job_id]
                calls = job["calls"]
                assert [c["status"] for c in calls] == ["succeeded"] * 4
                billed = sum((D(c["billed_usd"]) for c in calls), D(0))
                assert D(job["billed_usd"]) == billed
                billed_total += billed
                (charge,) = [e for e in charges if e["job_id"] == job_id]
                if mode == "job":
                    want = D(1)
                else:
                    want = sum(
                        ((D(c["billed_usd"]) * 1000).quantize(D("1e-10")) for c in calls), D(0)
                    )
                assert D(charge["amount"]) == -want and D(job["credits_charged"]) == want
            assert balance == 1000 - sum((-D(e["amount"]) for e in charges), D(0))
            if mode == "usd":
                budget = credits["budget"]
                assert D(budget["spent_usd"]) == billed_total and D(budget["reserved_usd"]) == 0
                assert billed_total > 0
    finally:
        chaos.release(tag)
        chaos.release(f"{tag}-c")
        for mode, client in teams.items():
            for job_id in held_ids.get(mode, []) + list(other_ids.get(mode, {}).values()):
                client.post(f"/api/jobs/{job_id}/cancel")
            client.close()
        admin.close()
