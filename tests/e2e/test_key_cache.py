"""The cache of authenticated keys across two API processes: a revoke, a suspension or a team
change on one drops the key on the other at once, not when the TTL ends (set to 300 s here, far
longer than any wait of this test). Waits on the other process having heard the change (its
/metrics), then checks the very next request."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from cli.stack import free_port, start_api
from tests.conftest import OwnPlatform, nonce
from tests.harness import MASTER_KEY, METRICS_TOKEN, wait_until


def cache_figure(api: httpx.Client, what: str) -> float:
    text = api.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    found = re.search(rf'^saas_llm_key_cache{{what="{what}"}} (\S+)$', text, re.MULTILINE)
    assert found is not None, text[-2000:]
    return float(found.group(1))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_change_on_one_api_process_refuses_the_key_on_the_other_at_once(
    own_platform: OwnPlatform, log_dir: Path
) -> None:
    with own_platform(AUTH_KEY_CACHE_SECONDS="300") as (team, env, procs):
        port = free_port()
        procs["api2"] = start_api(env, port, log_dir, name=f"api2-{nonce()}")
        one = httpx.Client(base_url=str(team.base_url), timeout=30)
        two = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        admin = httpx.Client(base_url=str(team.base_url), headers=bearer(MASTER_KEY), timeout=30)
        for api in (one, two):
            wait_until(lambda a=api: cache_figure(a, "on") == 1, what="the key cache to be on")

        def heard(before: float) -> None:
            wait_until(
                lambda: cache_figure(two, "invalidations") > before,
                what="the second API process to hear the change",
            )

        # Cached on the second process: the second request is a hit.
        key = bearer(team.key)
        assert two.get("/api/jobs", headers=key).status_code == 200
        hits = cache_figure(two, "hits")
        assert two.get("/api/jobs", headers=key).status_code == 200
        assert cache_figure(two, "hits") == hits + 1

        # Revoked on the first: refused by the second on its next request.
        before = cache_figure(two, "invalidations")
        r = admin.delete(f"/api/admin/teams/{team.team_id}/keys/{team.key_id}")
        assert r.status_code == 200, r.text
        heard(before)
        refused = two.get("/api/jobs", headers=key)
        assert refused.status_code == 401, refused.text

        # A scoped key: its scopes are checked from the cache too.
        k = admin.post(
            f"/api/admin/teams/{team.team_id}/keys", json={"name": "ro", "scopes": ["jobs:read"]}
        )
        assert k.status_code == 201, k.text
        reader = bearer(k.json()["key"])
        for _ in range(2):
            assert two.get("/api/jobs", headers=reader).status_code == 200
        ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        write = two.post("/api/jobs", headers=reader, json={"requests": [ask]})
        assert write.status_code == 403, write.text
        assert write.json()["error"]["type"] == "insufficient_scope"

        # Suspended on the first: refused by the second at once; resumed: accepted again.
        before = cache_figure(two, "invalidations")
        assert admin.post(f"/api/admin/teams/{team.team_id}/suspend").status_code == 200
        heard(before)
        suspended = two.get("/api/jobs", headers=reader)
        assert suspended.status_code == 403, suspended.text
        before = cache_figure(two, "invalidations")
        assert admin.post(f"/api/admin/teams/{team.team_id}/resume").status_code == 200
        heard(before)
        assert two.get("/api/jobs", headers=reader).status_code == 200

        # A team setting changed on the first (allowed models) applies on the second at once.
        writer = bearer(
            admin.post(f"/api/admin/teams/{team.team_id}/keys", json={"name": "w"}).json()["key"]
        )
        for _ in range(2):
            assert two.get("/api/jobs", headers=writer).status_code == 200  # cached
        before = cache_figure(two, "invalidations")
        patched = admin.patch(f"/api/admin/teams/{team.team_id}", json={"allowed_models": ["x"]})
        assert patched.status_code == 200, patched.text
        heard(before)
        r = two.post("/api/jobs", headers=writer, json={"requests": [ask]})
        assert 400 <= r.status_code < 500 and "not allowed" in r.text, r.text
        for c in (one, two, admin):
            c.close()
