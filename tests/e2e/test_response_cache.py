"""Response caching as a team setting, through the proxy's Redis cache: a repeated request of a
team with caching on is served without reaching the provider, marked `cached`, priced 0 provider
USD, and never served to another team; a team without the setting never gets a cached answer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis

from cli.stack import free_port, start_proxy
from tests.conftest import Platform, TeamClient, nonce, private_platform
from tests.harness import MASTER_KEY, REDIS_URL, fake_proxy_config, provider_requests


@pytest.fixture(scope="module")
def caching_platform(
    fake_provider: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """A proxy with its response cache on the test Redis (REDIS_URL), and an API and worker."""
    log_dir = tmp_path_factory.mktemp("cache")
    config = fake_proxy_config(log_dir, fake_provider)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    proxy = start_proxy(
        dict(env, LITELLM_MASTER_KEY=MASTER_KEY, REDIS_URL=REDIS_URL), config, port, log_dir
    )
    try:
        assert "response cache and router state" in proxy.log_path.read_text()
        with private_platform(f"http://127.0.0.1:{port}", log_dir) as platform:
            yield platform
    finally:
        proxy.stop()


def admin_client(team: TeamClient) -> httpx.Client:
    return httpx.Client(base_url=team.base_url, headers={"Authorization": f"Bearer {MASTER_KEY}"})


def new_team(team: TeamClient, **settings: Any) -> TeamClient:
    """Another team on the same platform, with `settings`."""
    tag = nonce()
    with admin_client(team) as admin:
        r = admin.post("/api/admin/teams", json={"team_id": f"c-{tag}", "name": tag, **settings})
        assert r.status_code == 201, r.text
        k = admin.post(f"/api/admin/teams/c-{tag}/keys", json={"name": "k"})
        assert k.status_code == 201, k.text
    client = TeamClient(
        base_url=team.base_url, headers={"Authorization": f"Bearer {k.json()['key']}"}
    )
    client.team_id, client.key, client.key_id = f"c-{tag}", k.json()["key"], k.json()["id"]
    return client


def one_call(team: TeamClient, content: str) -> dict[str, Any]:
    job = team.submit(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}]
    )
    done = team.wait(job["id"])
    assert done["status"] == "succeeded", done
    (call,) = team.get(f"/api/jobs/{job['id']}", params={"include_calls": "true"}).json()["calls"]
    (line,) = team.get(f"/api/jobs/{job['id']}/results").json()["data"]
    assert line["cached"] is call["cached"]
    return {"job": done, "call": call}


def test_a_repeat_is_served_from_the_teams_cache_and_never_from_another_teams(
    caching_platform: Platform, provider: httpx.Client
) -> None:
    base, _env, _procs = caching_platform
    first_team = new_team(base, cache_enabled=True, cache_ttl_seconds=600)
    other_team = new_team(base, cache_enabled=True)
    plain_team = new_team(base)  # caching off (the default)
    assert first_team.get("/api/jobs").status_code == 200
    content = f"cache me {nonce()}"

    first = one_call(first_team, content)
    assert first["call"]["cached"] is False
    assert Decimal(first["call"]["cost_usd"]) > 0
    assert len(provider_requests(provider, content)) == 1

    again = one_call(first_team, content)
    assert again["call"]["cached"] is True
    assert Decimal(again["call"]["cost_usd"]) == 0 and Decimal(again["job"]["cost_usd"]) == 0
    assert (
        again["call"]["response"]["choices"][0]["message"]["content"]
        == (first["call"]["response"]["choices"][0]["message"]["content"])
    )
    assert again["call"]["usage"]["total_tokens"] == first["call"]["usage"]["total_tokens"]
    assert len(provider_requests(provider, content)) == 1  # the provider never saw the repeat

    # Another team with caching on asks the same: its own request reaches the provider.
    other = one_call(other_team, content)
    assert other["call"]["cached"] is False
    assert len(provider_requests(provider, content)) == 2
    # A team with caching off is never served from a cache, however often it asks.
    for _ in range(2):
        assert one_call(plain_team, content)["call"]["cached"] is False
    assert len(provider_requests(provider, content)) == 4

    # The entry lives under the first team's namespace, with its TTL.
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"saas-llm:team:{first_team.team_id}:*"))
        assert len(keys) == 1
        assert 0 < client.ttl(keys[0]) <= 600
        assert list(client.scan_iter(match=f"saas-llm:team:{plain_team.team_id}:*")) == []
    finally:
        client.close()
    for team in (first_team, other_team, plain_team):
        team.close()


def test_cache_settings_are_team_settings(caching_platform: Platform) -> None:
    base, _env, _procs = caching_platform
    with admin_client(base) as admin:
        r = admin.get(f"/api/admin/teams/{base.team_id}")
        assert r.json()["cache_enabled"] is False and r.json()["cache_ttl_seconds"] is None
        r = admin.patch(
            f"/api/admin/teams/{base.team_id}",
            json={"cache_enabled": True, "cache_ttl_seconds": 60},
        )
        assert r.status_code == 200 and r.json()["cache_enabled"] is True
        bad = admin.patch(f"/api/admin/teams/{base.team_id}", json={"cache_ttl_seconds": 0})
        assert bad.status_code in (400, 422) and "error" in bad.json()
    # Clients cannot set cache controls themselves: caching is the team's setting.
    r = base.post(
        "/api/jobs",
        json={
            "requests": [
                {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "x"}],
                    "cache": {"use-cache": True},
                }
            ]
        },
    )
    assert r.status_code in (400, 422) and "error" in r.json()
