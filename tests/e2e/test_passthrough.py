"""Passthrough allow-list and restricted keys, through the real API, worker and proxy."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from shared.teams.schemas import SCOPES
from tests.conftest import TeamClient, nonce
from tests.harness import provider_requests

FUNCTION = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def _chat(text: str, **extra: object) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def test_provider_side_tools_and_file_ids_only_where_the_admin_allows(
    admin: httpx.Client, team: TeamClient, provider: httpx.Client
) -> None:
    tag = nonce()
    refused = team.post(
        "/api/jobs", json={"requests": [_chat(tag, tools=[FUNCTION, {"type": "web_search"}])]}
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "requests[0].tools[1].type"
    assert "web_search" in error["message"]
    assert team.get("/api/jobs").json()["data"] == []  # nothing was written

    step = team.post("/api/jobs/create", json={}).json()["id"]
    image = {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}}
    bad = team.post(
        f"/api/jobs/{step}/calls",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [image]}]},
    )
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["param"] == "messages[0].content[0].image_url.url"
    file_part = {"type": "file", "file": {"file_id": "file-123"}}
    no_file = team.post(
        "/api/jobs",
        json={"requests": [_chat(tag) | {"messages": [{"role": "user", "content": [file_part]}]}]},
    )
    assert no_file.status_code == 400, no_file.text
    assert no_file.json()["error"]["param"] == "requests[0].messages[0].content[0].file.file_id"

    # A plain function tool passes through to the provider.
    job = team.submit([_chat(f"{tag} fn", tools=[FUNCTION])])
    assert team.wait(job["id"])["status"] == "succeeded"
    seen = provider_requests(provider, f"{tag} fn")
    assert seen and seen[0]["tools"][0]["function"]["name"] == "lookup"

    patched = admin.patch(
        f"/api/admin/teams/{team.team_id}",
        json={"allowed_tool_types": ["web_search"], "allow_file_ids": True},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["allowed_tool_types"] == ["web_search"]
    assert patched.json()["allow_file_ids"] is True
    allowed = team.post(
        "/api/jobs", json={"requests": [_chat(tag, tools=[FUNCTION, {"type": "web_search"}])]}
    )
    assert allowed.status_code == 202, allowed.text
    still = team.post("/api/jobs", json={"requests": [_chat(tag, tools=[{"type": "mcp"}])]})
    assert (
        still.status_code == 400 and still.json()["error"]["param"] == "requests[0].tools[0].type"
    )
    bad_type = admin.patch(
        f"/api/admin/teams/{team.team_id}", json={"allowed_tool_types": ["Not A Type"]}
    )
    assert bad_type.status_code == 422, bad_type.text


def test_restricted_keys_carry_their_scopes(
    admin: httpx.Client, make_team: Callable[..., TeamClient]
) -> None:
    team = make_team()
    keys = admin.get(f"/api/admin/teams/{team.team_id}/keys").json()["data"]
    assert keys[0]["scopes"] == list(SCOPES)  # a key made without scopes has them all
    made = admin.post(
        f"/api/admin/teams/{team.team_id}/keys", json={"scopes": ["webhooks", "jobs:read"]}
    )
    assert made.status_code == 201, made.text
    assert made.json()["scopes"] == ["jobs:read", "webhooks"]
    for bad in ([], ["admin"], ["jobs:*"]):
        r = admin.post(f"/api/admin/teams/{team.team_id}/keys", json={"scopes": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["param"].startswith("scopes")
    headers = {"Authorization": f"Bearer {made.json()['key']}"}
    assert team.get("/api/jobs", headers=headers).status_code == 200
    denied = team.post("/api/jobs/create", json={}, headers=headers)
    assert denied.status_code == 403, denied.text
    assert denied.json()["error"]["type"] == "insufficient_scope"
    assert denied.json()["error"]["required_scope"] == "jobs:write"
