"""Tenants are isolated: team B gets 404 for every one of team A's resources, and never sees them."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import TeamClient, nonce


def test_team_b_cannot_see_or_touch_team_a_jobs(make_team: Callable[..., TeamClient]) -> None:
    a, b = make_team(), make_team()
    tag = nonce()
    job = a.submit(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} secret"}]}]
    )
    a.wait(job["id"])
    call_id = a.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()["calls"][0][
        "id"
    ]
    step = a.post("/api/jobs/create", json={"job_type": "x"}).json()["id"]

    for method, path in [
        ("GET", f"/api/jobs/{job['id']}"),
        ("GET", f"/api/jobs/{job['id']}/results"),
        ("GET", f"/api/jobs/{job['id']}/calls/{call_id}"),
        ("POST", f"/api/jobs/{job['id']}/cancel"),
        ("POST", f"/api/jobs/{step}/calls"),
        ("POST", f"/api/jobs/{step}/complete"),
        ("POST", f"/api/jobs/{step}/cancel"),
    ]:
        body = (
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
            if path.endswith("/calls")
            else None
        )
        r = b.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["type"] == "not_found"
        assert tag not in r.text

    assert b.get("/api/jobs", params={"limit": 100}).json()["data"] == []
    assert a.get(f"/api/jobs/{step}").json()["status"] == "open"  # B's attempts changed nothing
    mine = {j["id"] for j in a.get("/api/jobs", params={"limit": 100}).json()["data"]}
    assert mine == {job["id"], step}
