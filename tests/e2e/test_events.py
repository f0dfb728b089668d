"""Live status over Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from tests.conftest import TeamClient, nonce


def _read_events(client: httpx.Client, path: str, timeout: float = 60) -> list[dict]:
    events: list[dict] = []
    with client.stream("GET", path, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                assert name == "job"
                events.append(json.loads(line[6:]))
    return events


def test_events_stream_follows_a_job_to_its_end(team: TeamClient) -> None:
    tag = nonce()
    job = team.submit(
        [
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} {i} [[delay:400]]"}],
            }
            for i in range(3)
        ]
    )
    events = _read_events(team, f"/api/jobs/{job['id']}/events")
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "succeeded"
    assert "running" in statuses or statuses[0] == "queued"
    assert len(events) >= 2  # the first snapshot, then changes
    assert events[-1]["request_counts"]["succeeded"] == 3
    assert events[-1] == team.get(f"/api/jobs/{job['id']}").json()
    # counts only ever move forward
    done = [e["request_counts"]["succeeded"] for e in events]
    assert done == sorted(done)


def test_events_of_an_ended_job_and_of_another_team(
    team: TeamClient, make_team: Callable[..., TeamClient]
) -> None:
    job = team.submit(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": nonce()}]}]
    )
    team.wait(job["id"])
    events = _read_events(team, f"/api/jobs/{job['id']}/events")
    assert [e["status"] for e in events] == ["succeeded"]
    other = make_team()
    r = other.get(f"/api/jobs/{job['id']}/events")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


def test_events_report_cancellation(team: TeamClient) -> None:
    created = team.post("/api/jobs/create", json={"job_type": "sse"}).json()
    job_id = created["id"]
    team.post(
        f"/api/jobs/{job_id}/calls",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"{nonce()} [[delay:5000]]"}],
        },
    )
    with team.stream("GET", f"/api/jobs/{job_id}/events", timeout=30) as response:
        lines = response.iter_lines()
        first = next(json.loads(line[6:]) for line in lines if line.startswith("data: "))
        assert first["status"] == "open"
        assert team.post(f"/api/jobs/{job_id}/cancel").status_code == 200
        rest = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert rest[-1]["status"] == "cancelled"
