"""The issue's scale proof (slow: `-m chaos`): 200 concurrent one-call jobs from 20 client
connections, spread over two API processes and two workers, against a budget that holds about
50 worst cases; with `reject` and with `pause`, then the budget raised."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import free_port, start_api, start_worker
from tests.conftest import TERMINAL, OwnPlatform, TeamClient
from tests.e2e.money_helpers import one_call, submit_concurrently, worst_usd
from tests.harness import MASTER_KEY, provider_requests, wait_until

pytestmark = pytest.mark.chaos
D = Decimal
JOBS, CONNECTIONS, FITS = 200, 20, 50


def _team(admin: httpx.Client, base_url: str, **fields: Any) -> TeamClient:
    team_id = "t-" + uuid.uuid4().hex[:10]
    r = admin.post("/api/admin/teams", json={"team_id": team_id, "name": team_id, **fields})
    assert r.status_code == 201, r.text
    key = admin.post(f"/api/admin/teams/{team_id}/keys", json={}).json()
    client = TeamClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key['key']}"}, timeout=60
    )
    client.team_id, client.key, client.key_id = team_id, key["key"], key["id"]
    return client


def _statuses(team: TeamClient, ids: list[str]) -> list[dict[str, Any]]:
    return [team.get(f"/api/jobs/{j}").json() for j in ids]


def _settle(team: TeamClient, ids: list[str], done: set[str], what: str) -> list[Any]:
    """Wait until every job is in `done` with no call running."""

    def settled() -> list[dict[str, Any]] | None:
        jobs = _statuses(team, ids)
        if all(j["status"] in done and not j["request_counts"]["running"] for j in jobs):
            return jobs
        return None

    return list(wait_until(settled, timeout=300, what=what))


def _inside_one_period(margin: timedelta = timedelta(minutes=30)) -> None:
    """The budget is per UTC calendar month and this test checks one period's spend: start
    where the run fits inside one month (the boundary itself is tested with an injected clock
    in tests/service). Waits only in a month's last half hour."""
    now = datetime.now(UTC)
    turn = (now.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    if turn - now < margin:
        time.sleep((turn - now).total_seconds() + 1)


def test_200_jobs_two_apis_two_workers_reject_and_pause(
    own_platform: OwnPlatform, log_dir: Path, provider: httpx.Client
) -> None:
    # Small pools: four processes share a Postgres that other suites use too.
    pools = {"WORKER_MAX_JOBS": "10", "DATABASE_POOL_SIZE": "4", "DATABASE_MAX_OVERFLOW": "2"}
    with own_platform(WORKER_RECONCILE_SECONDS="2", **pools) as (first, env, procs):
        second_port = free_port()
        procs["api2"] = start_api(env, second_port, log_dir, name=f"api2-{second_port}")
        procs["worker2"] = start_worker(env, log_dir, name=f"worker2-{second_port}")
        urls = [str(first.base_url).rstrip("/"), f"http://127.0.0.1:{second_port}"]
        with httpx.Client(
            base_url=urls[0], headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=60
        ) as admin:
            for on_limit in ("reject", "pause"):
                _inside_one_period()
                tag = f"scale-{on_limit}-" + uuid.uuid4().hex[:8]
                bodies = [one_call(tag, i) for i in range(JOBS)]
                worst = worst_usd(D(10), bodies[0])
                budget = worst * FITS
                team = _team(
                    admin,
                    urls[0],
                    on_limit=on_limit,
                    price_markup_pct="10",
                    budget_usd=str(budget),
                    budget_period="month",
                )
                responses = submit_concurrently(urls, team.key, bodies, CONNECTIONS)
                codes = {r.status_code for r in responses}
                assert codes <= ({202, 402} if on_limit == "reject" else {202}), codes
                refused_at_submit = [r for r in responses if r.status_code == 402]
                assert all(
                    r.json()["error"]["type"] == "budget_exceeded" for r in refused_at_submit
                )
                ids = [r.json()["id"] for r in responses if r.status_code == 202]
                done = TERMINAL | ({"paused"} if on_limit == "pause" else set())

                jobs = _settle(team, ids, done, f"{on_limit}: every job settled")
                succeeded = [j for j in jobs if j["status"] == "succeeded"]
                spent = sum((D(j["billed_usd"]) for j in succeeded), D(0))
                assert spent <= budget  # to the last decimal
                state = team.get("/api/credits").json()["budget"]
                assert D(state["spent_usd"]) == spent and D(state["reserved_usd"]) == 0
                assert FITS <= len(succeeded) < JOBS
                if on_limit == "reject":
                    others = [j for j in jobs if j["status"] != "succeeded"]
                    assert all(j["status"] == "failed" for j in others)
                    assert len(succeeded) + len(others) + len(refused_at_submit) == JOBS
                    assert len(provider_requests(provider, tag)) == len(succeeded)
                    continue
                paused = [j for j in jobs if j["status"] == "paused"]
                assert len(paused) + len(succeeded) == JOBS
                raised = admin.patch(
                    f"/api/admin/teams/{team.team_id}", json={"budget_usd": str(worst * JOBS * 2)}
                )
                assert raised.status_code == 200, raised.text

                final = _settle(team, ids, set(TERMINAL), "the paused jobs to finish")
                assert all(j["status"] == "succeeded" for j in final)
                seen = provider_requests(provider, tag)
                assert len(seen) == JOBS  # nothing ran twice
                assert len({r["content"] for r in seen}) == JOBS
                total = sum((D(j["billed_usd"]) for j in final), D(0))
                assert D(team.get("/api/credits").json()["budget"]["spent_usd"]) == total
                team.close()
