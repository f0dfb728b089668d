"""The benchmarks' webhook sink: a run waits for its own jobs' webhooks with one request."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from bench import sink


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sink.app), base_url="http://sink")


async def _deliver(client: httpx.AsyncClient, job_id: str, job_type: str) -> None:
    r = await client.post(
        "/", json={"type": "job.succeeded", "data": {"id": job_id, "job_type": job_type}}
    )
    assert r.status_code == 204


async def test_wait_count_answers_once_that_many_jobs_of_the_type_arrived() -> None:
    tag, other = uuid.uuid4().hex, uuid.uuid4().hex
    async with _client() as client:
        waiting = asyncio.create_task(client.get(f"/wait-count/{tag}", params={"n": 2}))
        await _deliver(client, "job_a", tag)
        await _deliver(client, "job_x", other)  # another run's: not counted
        await _deliver(client, "job_a", tag)  # a redelivery: the same job, not counted again
        # One job of this run so far: a wait for two is not answered.
        early = await client.get(f"/wait-count/{tag}", params={"n": 2, "timeout": 0.05})
        assert early.status_code == 504
        assert not waiting.done()
        await _deliver(client, "job_b", tag)
        assert (await waiting).status_code == 204

        mine = (await client.get("/arrivals", params={"job_type": tag})).json()
        assert [row[0] for row in mine] == ["job_a", "job_a", "job_b"]
        everything = (await client.get("/arrivals")).json()
        assert {row[0] for row in everything} >= {"job_a", "job_b", "job_x"}


async def test_wait_count_gives_504_when_they_do_not_arrive() -> None:
    async with _client() as client:
        await _deliver(client, "job_c", "one-only")
        r = await client.get("/wait-count/one-only", params={"n": 2, "timeout": 0.05})
        assert r.status_code == 504
