"""The auth matrix: every route of the app's own route table x every way of (not) being allowed.

The routes come from the app (`api.openapi.routes`), the expectations from `EXPECT` below: a
route the app has and `EXPECT` lacks fails the test, so a new route cannot ship without saying who
may call it. Rows:

  no key · malformed header · unknown key · revoked key · expired key · suspended team ·
  another team's ids (own key) · the admin key on a team route / a team key on an admin route ·
  a key without the route's scope · a key with only the route's scope · the admin key (admin routes)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.main import create_app
from api.openapi import routes
from cli.stack import Stack
from shared.config import Settings
from shared.teams.schemas import SCOPES
from tests.conftest import TeamClient, nonce
from tests.harness import MASTER_KEY, METRICS_TOKEN, wait_until

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "matrix"}]}


@dataclass(frozen=True)
class Expect:
    auth: str  # "public" | "team" | "admin"
    ok: int  # the status of a well-formed call by an allowed key (team routes: on B's ids)
    body: Any = None
    params: dict[str, Any] = field(default_factory=dict)


EXPECT: dict[str, Expect] = {
    "GET /health": Expect("public", 200),
    "GET /ready": Expect("public", 200),
    "GET /metrics": Expect("metrics", 200),
    # Admin routes: {team_id} and {key_id} are a scratch team's.
    "POST /api/admin/teams": Expect("admin", 201, body="new-team"),
    "GET /api/admin/teams": Expect("admin", 200),
    "GET /api/admin/teams/{team_id}": Expect("admin", 200),
    "PATCH /api/admin/teams/{team_id}": Expect("admin", 200, body={"name": "renamed"}),
    "POST /api/admin/teams/{team_id}/suspend": Expect("admin", 200),
    "POST /api/admin/teams/{team_id}/resume": Expect("admin", 200),
    "POST /api/admin/teams/{team_id}/keys": Expect("admin", 201, body={"name": "m"}),
    "GET /api/admin/teams/{team_id}/keys": Expect("admin", 200),
    "DELETE /api/admin/teams/{team_id}/keys/{key_id}": Expect("admin", 200),
    "DELETE /api/admin/teams/{team_id}/data": Expect("admin", 200),
    "POST /api/admin/teams/{team_id}/portal-links": Expect("admin", 201, body={}),
    "POST /api/admin/teams/{team_id}/credits": Expect("admin", 201, body={"amount": "5"}),
    "GET /api/admin/teams/{team_id}/ledger": Expect("admin", 200),
    # B's succeeded job (1 credit in job mode), refunded once
    "POST /api/admin/jobs/{job_id}/refund": Expect("admin", 201, body={"note": "matrix"}),
    "GET /api/admin/usage": Expect("admin", 200),
    "GET /api/credits": Expect("team", 200),
    "GET /api/usage": Expect("team", 200),
    # Team routes: ids in the path are team B's, so an allowed key of team A gets 404.
    "GET /api/models": Expect("team", 200),
    "POST /api/jobs": Expect("team", 202, body={"requests": [CHAT]}),
    "GET /api/jobs": Expect("team", 200),
    "POST /api/jobs/create": Expect("team", 201, body={}),
    "POST /api/jobs/{job_id}/calls": Expect("team", 404, body=CHAT),
    "POST /api/jobs/{job_id}/complete": Expect("team", 404),
    "POST /api/jobs/{job_id}/cancel": Expect("team", 404),
    "GET /api/jobs/{job_id}": Expect("team", 404),
    "GET /api/jobs/{job_id}/calls/{call_id}": Expect("team", 404),
    "GET /api/jobs/{job_id}/results": Expect("team", 404),
    "GET /api/jobs/{job_id}/events": Expect("team", 404),
    "POST /api/webhooks/endpoints": Expect("team", 201, body={"url": "http://127.0.0.1:9/m"}),
    "GET /api/webhooks/endpoints": Expect("team", 200),
    "GET /api/webhooks/endpoints/{endpoint_id}": Expect("team", 404),
    "PATCH /api/webhooks/endpoints/{endpoint_id}": Expect("team", 404, body={"description": "x"}),
    "DELETE /api/webhooks/endpoints/{endpoint_id}": Expect("team", 404),
    "GET /api/webhooks/endpoints/{endpoint_id}/secret": Expect("team", 404),
    "POST /api/webhooks/endpoints/{endpoint_id}/rotate-secret": Expect("team", 404),
    "POST /api/webhooks/endpoints/{endpoint_id}/replay": Expect(
        "team", 404, body={"since": "2026-01-01T00:00:00Z"}
    ),
    "GET /api/webhooks/secret": Expect("team", 200),
    "POST /api/webhooks/secret/rotate": Expect("team", 200),
    "GET /api/webhooks/events": Expect("team", 200),
    "GET /api/webhooks/events/{event_id}": Expect("team", 404),
    "POST /api/webhooks/events/{event_id}/redeliver": Expect("team", 404),
    "GET /api/webhooks/deliveries": Expect("team", 200),
    "GET /api/webhooks/deliveries/{delivery_id}": Expect("team", 404),
    "GET /api/webhooks/deliveries/{delivery_id}/attempts": Expect("team", 404),
}


def _key(admin: httpx.Client, team_id: str, **fields: Any) -> dict[str, Any]:
    r = admin.post(f"/api/admin/teams/{team_id}/keys", json={"name": "m", **fields})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _b_ids(b: TeamClient) -> dict[str, str]:
    """Team B's job, call, endpoint, event and delivery ids."""
    endpoint = b.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/b"}).json()
    job = b.submit([CHAT])
    b.wait(job["id"])
    call = b.get(f"/api/jobs/{job['id']}", params={"include_calls": True}).json()["calls"][0]

    def delivered() -> dict[str, Any] | None:
        rows = b.get("/api/webhooks/deliveries", params={"endpoint_id": endpoint["id"]}).json()
        return rows["data"][0] if rows["data"] else None

    delivery = wait_until(delivered, what="team B's delivery")
    return {
        "job_id": job["id"],
        "call_id": call["id"],
        "endpoint_id": endpoint["id"],
        "event_id": delivery["event_id"],
        "delivery_id": delivery["id"],
    }


def test_every_route_answers_every_auth_case_as_expected(
    stack: Stack,
    admin: httpx.Client,
    make_team: Callable[..., TeamClient],
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = routes(create_app(Settings(environment="test")))
    keys = {f"{r.method} {r.path}" for r in table}
    assert not keys - set(EXPECT), (
        f"routes without an auth-matrix entry: {sorted(keys - set(EXPECT))}"
    )
    assert not set(EXPECT) - keys, f"entries for routes that no longer exist: {set(EXPECT) - keys}"

    a, b, suspended = make_team(), make_team(), make_team()
    b_ids = _b_ids(b)
    revoked = _key(admin, a.team_id)
    assert admin.delete(f"/api/admin/teams/{a.team_id}/keys/{revoked['id']}").status_code == 200
    expired = _key(
        admin, a.team_id, expires_at=(datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    )
    assert admin.post(f"/api/admin/teams/{suspended.team_id}/suspend").status_code == 200
    scoped = {scope: _key(admin, a.team_id, scopes=[scope])["key"] for scope in SCOPES}
    scratch = "m-" + nonce()
    assert admin.post("/api/admin/teams", json={"team_id": scratch, "name": "m"}).status_code == 201
    scratch_key = _key(admin, scratch)["id"]
    ids = {**b_ids, "team_id": scratch, "key_id": scratch_key}

    bad_headers: dict[str, dict[str, str]] = {
        "no key": {},
        "malformed header": {"Authorization": "Basic " + a.key},
        "malformed header (no token)": {"Authorization": "Bearer"},
        "unknown key": {"Authorization": "Bearer sk-" + uuid.uuid4().hex},
        "revoked key": {"Authorization": f"Bearer {revoked['key']}"},
        "expired key": {"Authorization": f"Bearer {expired['key']}"},
    }
    rows: list[tuple[str, str, int, int]] = []
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:

        def call(
            route: Any, expect: Expect, token: str | None, headers: dict[str, str] | None = None
        ) -> httpx.Response:
            path = route.path.format(**ids)
            body = expect.body
            if body == "new-team":
                body = {"team_id": "m-" + nonce(), "name": "m"}
            h = dict(headers or {})
            if token is not None:
                h["Authorization"] = f"Bearer {token}"
            if route.path.endswith("/events") and "{job_id}" in route.path:
                with client.stream(route.method, path, headers=h) as r:
                    r.read()
                    return r
            return client.request(route.method, path, headers=h, json=body)

        def check(
            route: Any, case: str, response: httpx.Response, want: int, type_: str | None = None
        ) -> None:
            rows.append((f"{route.method} {route.path}", case, want, response.status_code))
            assert response.status_code == want, (route.method, route.path, case, response.text)
            if want >= 400:
                error = response.json()["error"]
                assert error["request_id"] and error["message"], response.text
                if type_ is not None:
                    assert error["type"] == type_, (route.path, case, response.text)

        for route in table:
            expect = EXPECT[f"{route.method} {route.path}"]
            assert route.auth == expect.auth, (route.method, route.path, route.auth)
            if route.auth == "public":
                for case, headers in bad_headers.items():
                    check(route, case, call(route, expect, None, headers), expect.ok)
                continue
            for case, headers in bad_headers.items():
                check(route, case, call(route, expect, None, headers), 401, "authentication_error")
            if route.auth == "metrics":
                check(route, "team key on the metrics route", call(route, expect, a.key), 401)
                check(route, "admin key on the metrics route", call(route, expect, MASTER_KEY), 401)
                check(route, "the metrics token", call(route, expect, METRICS_TOKEN), expect.ok)
                continue
            if route.auth == "team":
                assert route.scope in SCOPES
                check(
                    route,
                    "suspended team",
                    call(route, expect, suspended.key),
                    403,
                    "team_suspended",
                )
                check(route, "admin key on a team route", call(route, expect, MASTER_KEY), 401)
                other = next(s for s in SCOPES if s != route.scope)
                check(
                    route,
                    "key without the route's scope",
                    call(route, expect, scoped[other]),
                    403,
                    "insufficient_scope",
                )
                check(
                    route,
                    "key with only the route's scope",
                    call(route, expect, scoped[route.scope]),
                    expect.ok,
                )
                check(route, "another team's ids", call(route, expect, a.key), expect.ok)
            else:
                check(
                    route,
                    "suspended team's key on an admin route",
                    call(route, expect, suspended.key),
                    401,
                )
                check(route, "team key on an admin route", call(route, expect, a.key), 401)
                check(
                    route,
                    "scoped team key on an admin route",
                    call(route, expect, scoped["jobs:read"]),
                    401,
                )
                check(route, "the admin key", call(route, expect, MASTER_KEY), expect.ok)

    assert all(want == got for _, _, want, got in rows)
    with capsys.disabled():
        print(f"\nauth matrix: {len(rows)} rows over {len(table)} routes, all as expected")
