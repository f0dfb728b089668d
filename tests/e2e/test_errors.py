"""Bad input gets a clear 4xx with the JSON error shape, and nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import TeamClient, nonce

MSG = [{"role": "user", "content": "hello"}]


def _assert_error(
    response: httpx.Response, status: int, type_: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"type", "message", "request_id"}
    assert error["message"] and error["request_id"]
    assert response.headers["x-request-id"] == error["request_id"]
    if type_:
        assert error["type"] == type_, error
    return dict(error)


def _job_count(client: TeamClient) -> int:
    return len(client.get("/api/jobs", params={"limit": 100}).json()["data"])


@pytest.mark.parametrize(
    ("payload", "status", "type_"),
    [
        ({"requests": [{"model": "no-such-model", "messages": MSG}]}, 400, "model_not_found"),
        ({"requests": [{"messages": MSG}]}, 422, "validation_error"),
        ({"requests": [{"model": "gpt-4o-mini"}]}, 422, "validation_error"),
        ({"requests": [{"model": "gpt-4o-mini", "messages": []}]}, 422, "validation_error"),
        (
            {
                "requests": [
                    {"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}
                ]
            },
            422,
            "validation_error",
        ),
        ({"requests": []}, 422, "validation_error"),
        ({}, 422, "validation_error"),
        (
            {"requests": [{"model": "gpt-4o-mini", "messages": MSG, "api_base": "http://evil"}]},
            400,
            "invalid_request_error",
        ),
        (
            {"requests": [{"model": "gpt-4o-mini", "messages": MSG, "stream": True}]},
            400,
            "invalid_request_error",
        ),
        (
            {"requests": [{"custom_id": "x", "model": "gpt-4o-mini", "messages": MSG}] * 2},
            400,
            "invalid_request_error",
        ),
        ({"requests": [{"model": "gpt-4o-mini", "messages": MSG}] * 51}, 400, "limit_exceeded"),
        (
            {"requests": [{"model": "gpt-4o-mini", "messages": MSG}], "webhook_url": "not a url"},
            422,
            "validation_error",
        ),
        (
            {"requests": [{"model": "gpt-4o-mini", "messages": MSG, "timeout": "soon"}]},
            400,
            "invalid_request_error",
        ),
        (
            {"requests": [{"model": "gpt-4o-mini", "messages": MSG, "timeout": 0}]},
            400,
            "invalid_request_error",
        ),
        (
            {
                "requests": [
                    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a\u0000b"}]}
                ]
            },
            400,
            "invalid_request_error",
        ),
        (
            {"requests": [{"model": "gpt-4o-mini", "messages": MSG}], "metadata": {"k": "\u0000"}},
            400,
            "invalid_request_error",
        ),
    ],
)
def test_bad_submissions_are_refused_and_write_nothing(
    team: TeamClient, payload: dict[str, Any], status: int, type_: str
) -> None:
    before = _job_count(team)
    _assert_error(team.post("/api/jobs", json=payload), status, type_)
    assert _job_count(team) == before


def test_malformed_json_and_oversized_body(team: TeamClient) -> None:
    bad = team.post(
        "/api/jobs", content=b'{"requests": [', headers={"content-type": "application/json"}
    )
    _assert_error(bad, 400, "invalid_json")
    big = {
        "requests": [
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 300_000}]}
        ]
    }
    _assert_error(team.post("/api/jobs", json=big), 413, "payload_too_large")

    def chunks():  # no Content-Length: the size is counted as the body streams in
        yield b'{"requests": [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}]}]}'

    chunked = team.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"})
    _assert_error(chunked, 413, "payload_too_large")
    assert _job_count(team) == 0


def test_disallowed_model_for_the_team(make_team: Callable[..., TeamClient]) -> None:
    client = make_team(allowed_models=["gpt-4o-mini"])
    err = _assert_error(
        client.post("/api/jobs", json={"requests": [{"model": "gpt-4o", "messages": MSG}]}),
        403,
        "model_not_allowed",
    )
    assert err["param"] == "requests[0].model"
    assert [m["id"] for m in client.get("/api/models").json()["data"]] == ["gpt-4o-mini"]
    assert _job_count(client) == 0


def test_team_limit_on_requests_per_job(make_team: Callable[..., TeamClient]) -> None:
    client = make_team(max_requests_per_job=2)
    payload = {"requests": [{"model": "gpt-4o-mini", "messages": MSG}] * 3}
    _assert_error(client.post("/api/jobs", json=payload), 400, "limit_exceeded")


def test_unknown_routes_and_job_ids(team: TeamClient) -> None:
    _assert_error(team.get("/api/nothing-here"), 404, "not_found")
    _assert_error(team.get("/api/jobs/job_doesnotexist"), 404, "not_found")
    _assert_error(team.get("/api/jobs", params={"status": "weird"}), 400)
    _assert_error(team.get("/api/jobs", params={"limit": 0}), 422, "validation_error")


def test_auth_no_key_revoked_key_suspended_team(
    admin: httpx.Client, make_team: Callable[..., TeamClient], stack: Any
) -> None:
    client = make_team()
    with httpx.Client(base_url=stack.api_url) as anon:
        _assert_error(anon.get("/api/jobs"), 401, "authentication_error")
        _assert_error(anon.get("/api/jobs", headers={"Authorization": "Bearer sk-wrong"}), 401)
        _assert_error(
            anon.post("/api/jobs/create", json={"team_id": client.team_id, "job_type": "t"}), 401
        )
        _assert_error(anon.get("/api/admin/teams"), 401)
        _assert_error(
            anon.get("/api/admin/teams", headers={"Authorization": f"Bearer {client.key}"}), 401
        )

    assert client.get("/api/jobs").status_code == 200
    assert admin.post(f"/api/admin/teams/{client.team_id}/suspend").json()["status"] == "suspended"
    _assert_error(client.get("/api/jobs"), 403, "team_suspended")
    _assert_error(
        client.post("/api/jobs", json={"requests": [{"model": "gpt-4o-mini", "messages": MSG}]}),
        403,
    )
    assert admin.post(f"/api/admin/teams/{client.team_id}/resume").json()["status"] == "active"
    assert client.get("/api/jobs").status_code == 200

    revoked = admin.delete(f"/api/admin/teams/{client.team_id}/keys/{client.key_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    _assert_error(client.get("/api/jobs"), 401, "authentication_error")


def test_admin_team_and_key_management(admin: httpx.Client) -> None:
    team_id = "adm-" + nonce()
    created = admin.post(
        "/api/admin/teams", json={"team_id": team_id, "name": "Acme", "allowed_models": ["gpt-4o"]}
    )
    assert created.status_code == 201
    _assert_error(
        admin.post("/api/admin/teams", json={"team_id": team_id, "name": "Again"}), 409, "conflict"
    )
    _assert_error(admin.post("/api/admin/teams", json={"team_id": "Bad Slug!", "name": "x"}), 422)
    updated = admin.patch(
        f"/api/admin/teams/{team_id}", json={"name": "Acme Inc", "requests_per_minute": 60}
    )
    assert updated.json()["name"] == "Acme Inc" and updated.json()["allowed_models"] == ["gpt-4o"]
    assert admin.get(f"/api/admin/teams/{team_id}").json()["requests_per_minute"] == 60
    key = admin.post(f"/api/admin/teams/{team_id}/keys", json={"name": "ci"}).json()
    assert key["key"].startswith("sk-") and len(key["key"]) > 40
    listed = admin.get(f"/api/admin/teams/{team_id}/keys").json()["data"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert "key" not in listed[0] and listed[0]["prefix"] == key["key"][:10]
    _assert_error(admin.get("/api/admin/teams/nope-" + nonce()), 404)
    expired = admin.post(
        f"/api/admin/teams/{team_id}/keys", json={"expires_at": "2020-01-01T00:00:00Z"}
    ).json()
    with httpx.Client(base_url=str(admin.base_url)) as c:
        r = c.get("/api/jobs", headers={"Authorization": f"Bearer {expired['key']}"})
        _assert_error(r, 401, "authentication_error")
