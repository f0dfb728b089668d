"""The hot paths stay lean: database round trips per one-call job, counted on the wire.

The API and the worker of a private platform reach Postgres through counting relays
(`tests/pgwire.py`); one-call jobs run one at a time, each waited for by reading its row
directly (not through the API, whose reads would count). A round trip is a statement's Sync or a
simple query (BEGIN, COMMIT): a figure of the code, not of the machine, so it can be held here.
The bounds are today's figures (`python -m bench.round_trips` prints them with the statements)
plus the few round trips of the worker's background loops that may fall inside the window.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from cli.stack import Proc, free_port, start_api, start_worker
from tests.conftest import TERMINAL, base_env
from tests.harness import create_database, drop_database, new_team_key, wait_until
from tests.pgwire import WireCounter

JOBS = 12
# Per one-call job: the API's submit, and the worker's claim + finish (which ends the job).
# Measured: submit 1 (one statement, committing by itself: no BEGIN or COMMIT), the worker 5
# (claim: the fair choice and the claim in one statement, committing by itself; finish: BEGIN,
# the call with the end's facts, the end with its event, COMMIT), a read 1; the margins are the
# key cache's refresh, the lease keeper and a reconciler pass (one CI run counted 9.0 against
# 7, when the claim was two statements).
API_SUBMIT_MAX = 1.5
WORKER_PER_JOB_MAX = 7.0
API_READ_MAX = 1.5


class Counted:
    def __init__(self, client: httpx.Client, db: str, api: WireCounter, worker: WireCounter):
        self.client, self.db, self.api, self.worker = client, db, api, worker

    def status(self, job_id: str) -> str | None:
        with psycopg.connect(self.db) as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return row[0] if row else None

    def run_job(self, i: int) -> str:
        r = self.client.post(
            "/api/jobs",
            json={
                "requests": [
                    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"rt {i}"}]}
                ]
            },
        )
        assert r.status_code == 202, r.text
        job_id = str(r.json()["id"])
        status = wait_until(
            lambda: (s := self.status(job_id)) in TERMINAL and s, 60, f"job {i} to end"
        )
        assert status == "succeeded"
        return job_id


@pytest.fixture(scope="module")
def counted(proxy: str, log_dir: Path) -> Iterator[Counted]:
    db = create_database("saasllm_rt_")
    api_wire, worker_wire = WireCounter(), WireCounter()
    api_wire.start()
    worker_wire.start()
    tag = uuid.uuid4().hex[:8]
    queue = f"saas-llm-rt:{tag}"
    procs: list[Proc] = []
    try:
        port = free_port()
        procs.append(
            start_api(base_env(api_wire.route(db), queue, proxy), port, log_dir, name="api-rt")
        )
        worker_env = base_env(worker_wire.route(db), queue, proxy)
        # The worker's periodic passes (they run at start, then not again during the test) would
        # add their statements to whichever jobs they fall beside.
        worker_env.update(
            WORKER_RECONCILE_SECONDS="3600",
            WORKER_RETENTION_SECONDS="3600",
            WEBHOOK_SWEEP_SECONDS="3600",
        )
        procs.append(start_worker(worker_env, log_dir, "w-rt"))
        base = f"http://127.0.0.1:{port}"
        key = new_team_key(base, "rt-")
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            yield Counted(client, db, api_wire, worker_wire)
    finally:
        for proc in reversed(procs):
            proc.stop()
        api_wire.stop()
        worker_wire.stop()
        drop_database(db)


def _report(wire: WireCounter, n: int) -> str:
    return "\n".join(f"{c / n:5.2f}  {sql}" for sql, c in wire.statements.most_common(30))


def _work(wire: WireCounter) -> int:
    """Round trips less the idle pings: a connection idle for over a second is pinged at
    checkout (BEGIN, `;`, ROLLBACK: `shared.db.ping_when_idle`), which depends on how long the
    job before took on this machine, not on the code."""
    return wire.round_trips - 3 * wire.statements[";"]


def test_a_one_call_job_costs_a_bounded_number_of_round_trips(counted: Counted) -> None:
    for i in range(3):  # warm: pools, prepared statements, the model list, the key cache
        counted.run_job(i)
    counted.api.reset()
    counted.worker.reset()
    ids = [counted.run_job(i) for i in range(JOBS)]
    api, worker = _work(counted.api) / JOBS, _work(counted.worker) / JOBS
    print(f"\nround trips per one-call job: API submit {api:.1f}, worker {worker:.1f}")
    assert api <= API_SUBMIT_MAX, _report(counted.api, JOBS)
    assert worker <= WORKER_PER_JOB_MAX, _report(counted.worker, JOBS)

    counted.api.reset()
    for job_id in ids:
        r = counted.client.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["status"] == "succeeded"
    get = _work(counted.api) / JOBS
    counted.api.reset()
    for _ in ids:
        page = counted.client.get("/api/jobs", params={"limit": 20})
        assert page.status_code == 200 and len(page.json()["data"]) == JOBS + 3
    listed = _work(counted.api) / JOBS
    print(f"round trips per read: GET job {get:.1f}, list page {listed:.1f}")
    assert get <= API_READ_MAX, _report(counted.api, JOBS)
    assert listed <= API_READ_MAX, _report(counted.api, JOBS)
