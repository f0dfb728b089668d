"""Idempotent submission, cancellation of running calls, timeouts and deadlines."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal

import httpx
import psycopg

from cli.stack import Stack
from shared.config import Settings
from shared.ids import new_id
from shared.queue import create_queue, enqueue_call
from tests.conftest import TeamClient, nonce
from tests.harness import provider_requests, wait_until


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_fifty_concurrent_submissions_with_one_idempotency_key(team: TeamClient) -> None:
    key = "idem-" + nonce()
    payload = {
        "requests": [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": key}]}]
    }

    def submit(_: int) -> httpx.Response:
        return team.post("/api/jobs", json=payload, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(max_workers=25) as pool:
        responses = list(pool.map(submit, range(50)))
    assert {r.status_code for r in responses} == {202}, {r.status_code: r.text for r in responses}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    assert len(replayed) == 49
    jobs = team.get("/api/jobs", params={"limit": 100}).json()["data"]
    assert [j["id"] for j in jobs] == list(ids)
    team.wait(ids.pop())
    other = team.post(
        "/api/jobs",
        json={
            "requests": [
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "different"}]}
            ]
        },
        headers={"Idempotency-Key": key},
    )
    assert other.status_code == 409 and other.json()["error"]["type"] == "idempotency_conflict"


def test_cancel_aborts_a_running_call_and_discards_its_late_answer(
    team: TeamClient, provider: httpx.Client, stack: Stack
) -> None:
    tag = nonce()
    job = team.submit(
        [
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} [[delay:2500]]"}],
            }
        ]
    )
    wait_until(lambda: provider_requests(provider, tag), what="the provider to receive the call")
    running = team.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()
    assert running["status"] == "running" and running["calls"][0]["status"] == "running"
    cancelled = team.post(f"/api/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    call_id = running["calls"][0]["id"]
    worker_log = stack.procs["worker"].log_path
    wait_until(
        lambda: (
            f'"call_id": "{call_id}"' in worker_log.read_text()
            and "call aborted" in worker_log.read_text()
        ),
        what="the worker to abort the request",
    )
    # the provider finishes its (now orphaned) answer; it must not land in the job
    wait_until(
        lambda: provider_requests(provider, tag)[0].get("status") == 200,
        what="the provider's late answer",
    )
    final = team.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()
    assert final["status"] == "cancelled"
    assert final["calls"][0]["status"] == "cancelled" and final["calls"][0]["usage"] is None
    assert final["usage"]["total_tokens"] == 0 and Decimal(final["cost_usd"]) == 0


def test_per_call_timeout_is_retried_then_fails_with_a_clear_error(
    team: TeamClient, provider: httpx.Client
) -> None:
    tag = nonce()
    job = team.submit(
        [
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} [[delay:3000]]"}],
            }
        ],
        timeout_seconds=0.5,
    )
    done = team.wait(job["id"], timeout=60)
    assert done["status"] == "failed"
    call = team.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()["calls"][0]
    assert call["error"]["type"] == "timeout" and "0.5s" in call["error"]["message"]
    assert call["attempts"] == 4  # WORKER_MAX_ATTEMPTS in tests
    assert len(provider_requests(provider, tag)) == 4


def test_job_deadline_fails_unfinished_calls(team: TeamClient) -> None:
    tag = nonce()
    job = team.submit(
        [
            {
                "custom_id": "fast",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} quick"}],
            },
            {
                "custom_id": "slow",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} [[delay:5000]]"}],
            },
        ],
        deadline_seconds=1.5,
    )
    done = team.wait(job["id"], timeout=60)
    assert done["status"] == "failed"
    results = {r["custom_id"]: r for r in team.get(f"/api/jobs/{job['id']}/results").json()["data"]}
    assert results["fast"]["status"] == "succeeded"
    assert results["slow"]["status"] == "failed"
    assert results["slow"]["error"]["type"] == "deadline_exceeded"
    assert 1.5 <= (_ts(done["finished_at"]) - _ts(done["created_at"])) < 5


def _queue_a_raw_call(
    stack: Stack, database_url: str, team_id: str, job_status: str, request: dict
) -> tuple[str, str]:
    """Write a job and a queued call straight into Postgres (around the API's checks) and put
    the call on the queue, as the API would."""
    job_id, call_id = new_id("job"), new_id("call")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, team_id, style, status, total_calls) VALUES (%s, %s, 'batch', %s, 1)",
            (job_id, team_id, job_status),
        )
        conn.execute(
            "INSERT INTO calls (id, job_id, team_id, seq, custom_id, model_requested, request, status)"
            " VALUES (%s, %s, %s, 0, 'raw', 'gpt-4o-mini', %s, 'queued')",
            (call_id, job_id, team_id, json.dumps(request)),
        )

    async def enqueue() -> None:
        env = stack.env
        queue = await create_queue(
            Settings(redis_url=env["REDIS_URL"], worker_queue_name=env["WORKER_QUEUE_NAME"])
        )
        await enqueue_call(queue, call_id)
        await queue.aclose()

    asyncio.run(enqueue())
    return job_id, call_id


def test_a_call_the_worker_cannot_process_fails_instead_of_looping(
    team: TeamClient, stack: Stack, database_url: str
) -> None:
    """A poisoned row (written around the API's validation) ends `failed` after one attempt."""
    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
        "timeout": "soon",
    }
    job_id, _ = _queue_a_raw_call(stack, database_url, team.team_id, "queued", request)
    done = team.wait(job_id, timeout=30)
    assert done["status"] == "failed"
    call = team.get(f"/api/jobs/{job_id}", params={"include_calls": True}).json()["calls"][0]
    assert call["status"] == "failed" and call["attempts"] == 1
    assert call["error"]["type"] == "internal_error"


def test_a_call_of_an_ended_job_never_runs(
    team: TeamClient, stack: Stack, database_url: str, provider: httpx.Client
) -> None:
    """A call that slipped in while its job was being cancelled is refused at claim time."""
    tag = nonce()
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": tag}]}
    job_id, call_id = _queue_a_raw_call(stack, database_url, team.team_id, "cancelled", request)
    call = wait_until(
        lambda: (
            (c := team.get(f"/api/jobs/{job_id}/calls/{call_id}").json())["status"] != "queued"
            and c
        ),
        what="the worker to take the call",
    )
    assert call["status"] == "cancelled" and call["attempts"] == 0
    assert provider_requests(provider, tag) == []
