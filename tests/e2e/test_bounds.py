"""Bounds on shared resources: each is a setting, and reaching it gets its documented answer.

Event streams per team and per process, webhook endpoints per team, redeliveries per team per
minute, the API's Redis pool, and the failed-authentication throttle.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from tests.conftest import OwnPlatform, TeamClient, nonce
from tests.harness import MASTER_KEY, wait_until


def _admin(team: TeamClient) -> httpx.Client:
    return httpx.Client(
        base_url=str(team.base_url), headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30
    )


def _second_team(team: TeamClient) -> TeamClient:
    """Another team on the same (private) platform as `team`."""
    team_id = "t-" + nonce()
    with _admin(team) as admin:
        assert (
            admin.post("/api/admin/teams", json={"team_id": team_id, "name": "b"}).status_code
            == 201
        )
        key = admin.post(f"/api/admin/teams/{team_id}/keys", json={}).json()
    other = TeamClient(
        base_url=str(team.base_url), headers={"Authorization": f"Bearer {key['key']}"}, timeout=30
    )
    other.team_id, other.key, other.key_id = team_id, key["key"], key["id"]
    return other


def _open_job(team: TeamClient) -> str:
    created = team.post("/api/jobs/create", json={"job_type": "bounds"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


@contextlib.contextmanager
def _stream(team: TeamClient, job_id: str) -> Iterator[httpx.Response]:
    """An open event stream (its first event read), or the refusal."""
    with team.stream("GET", f"/api/jobs/{job_id}/events") as response:
        lines = response.iter_lines()  # kept alive: dropping it would close the connection
        if response.status_code == 200:
            first = next(lines)
            assert first.startswith("retry:"), first
        else:
            response.read()
        yield response


def _quota(response: httpx.Response, status: int, setting: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = dict(response.json()["error"])
    assert error["setting"] == setting, error
    assert error["request_id"] and error["message"]
    assert int(response.headers["Retry-After"]) >= 1
    return error


def test_event_streams_are_bounded_per_team_and_per_process(own_platform: OwnPlatform) -> None:
    with own_platform(EVENTS_MAX_STREAMS_PER_TEAM="2", EVENTS_MAX_STREAMS_PER_PROCESS="3") as (
        a,
        _,
        _,
    ):
        b = _second_team(a)
        job_a, job_b = _open_job(a), _open_job(b)
        with contextlib.ExitStack() as held:
            for _ in range(2):
                assert held.enter_context(_stream(a, job_a)).status_code == 200
            with _stream(a, job_a) as third:
                error = _quota(third, 429, "EVENTS_MAX_STREAMS_PER_TEAM")
                assert error["type"] == "quota_exceeded" and error["limit"] == 2
            # Team B is not held back by team A's streams, only by the process's bound.
            assert held.enter_context(_stream(b, job_b)).status_code == 200
            with _stream(b, job_b) as over:
                error = _quota(over, 429, "EVENTS_MAX_STREAMS_PER_PROCESS")
                assert error["limit"] == 3

        # Closed streams give their slots back.
        def reopened() -> bool:
            with _stream(a, job_a) as again:
                return again.status_code == 200

        wait_until(reopened, what="a stream slot to be given back")
        b.close()


def test_the_redis_pool_is_bounded_and_a_full_pool_is_a_clear_503(
    own_platform: OwnPlatform,
) -> None:
    with own_platform(
        REDIS_MAX_CONNECTIONS="3",
        REDIS_POOL_TIMEOUT_SECONDS="0.3",
        EVENTS_MAX_STREAMS_PER_TEAM="50",
        EVENTS_MAX_STREAMS_PER_PROCESS="50",
    ) as (team, _, _):
        job_id = _open_job(team)
        opened = 0
        with contextlib.ExitStack() as held:
            while True:
                response = held.enter_context(_stream(team, job_id))
                if response.status_code != 200:
                    break
                opened += 1
                assert opened <= 3, "more streams than Redis connections were opened"
            error = _quota(response, 503, "REDIS_MAX_CONNECTIONS")
            assert error["type"] == "service_unavailable"
            assert "REDIS_MAX_CONNECTIONS" in error["message"]
            # Requests that need Redis only briefly still get an answer (the job is in Postgres).
            assert team.get(f"/api/jobs/{job_id}").status_code == 200
        assert opened >= 1

        def reopened() -> bool:
            with _stream(team, job_id) as again:
                return again.status_code == 200

        wait_until(reopened, what="the pool to have a connection again")


def test_webhook_endpoints_per_team_are_bounded(
    make_team: Callable[..., TeamClient],
) -> None:
    team, other = make_team(), make_team()
    limit = 20  # WEBHOOK_MAX_ENDPOINTS_PER_TEAM's default
    ids = []
    for i in range(limit):
        r = team.post("/api/webhooks/endpoints", json={"url": f"http://127.0.0.1:9/{i}"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    over = team.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/over"})
    assert over.status_code == 429, over.text
    error = over.json()["error"]
    assert error["type"] == "quota_exceeded" and error["limit"] == limit
    assert error["setting"] == "WEBHOOK_MAX_ENDPOINTS_PER_TEAM"
    assert len(team.get("/api/webhooks/endpoints", params={"limit": 100}).json()["data"]) == limit
    # Another team has its own count; deleting one frees a place.
    assert (
        other.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/x"}).status_code
        == 201
    )
    assert team.delete(f"/api/webhooks/endpoints/{ids[0]}").status_code == 204
    assert (
        team.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/y"}).status_code
        == 201
    )


def _failed_event(team: TeamClient, endpoint_id: str) -> str:
    job = team.post("/api/jobs/create", json={"job_type": "bounds"}).json()["id"]
    assert team.post(f"/api/jobs/{job}/complete").status_code == 200

    def failed() -> str | None:
        rows = team.get("/api/webhooks/deliveries", params={"endpoint_id": endpoint_id}).json()
        done = [d for d in rows["data"] if d["status"] == "failed" and d["event_id"]]
        events = {d["event_id"] for d in done}
        mine = team.get("/api/webhooks/events", params={"job_id": job}).json()["data"]
        return mine[0]["id"] if mine and mine[0]["id"] in events else None

    return str(wait_until(failed, what="a failed delivery"))


def test_redeliveries_and_replays_per_team_per_minute_are_bounded(
    own_platform: OwnPlatform,
) -> None:
    with own_platform(WEBHOOK_REDELIVERIES_PER_MINUTE="1") as (team, _, _):
        endpoint = team.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/dead"})
        assert endpoint.status_code == 201, endpoint.text
        endpoint_id = endpoint.json()["id"]
        first, second = _failed_event(team, endpoint_id), _failed_event(team, endpoint_id)

        # A replay of 2 failed deliveries is more than the whole budget: refused, nothing requeued.
        replay = team.post(
            f"/api/webhooks/endpoints/{endpoint_id}/replay", json={"since": "2020-01-01T00:00:00Z"}
        )
        assert replay.status_code == 429, replay.text
        assert replay.json()["error"]["type"] == "rate_limit_exceeded"
        assert int(replay.headers["Retry-After"]) >= 1
        rows = team.get("/api/webhooks/deliveries", params={"endpoint_id": endpoint_id}).json()
        assert {d["status"] for d in rows["data"]} == {"failed"}

        assert team.post(f"/api/webhooks/events/{first}/redeliver").status_code == 202
        again = team.post(f"/api/webhooks/events/{second}/redeliver")
        assert again.status_code == 429, again.text
        assert again.json()["error"]["limit"] == 1
        assert "WEBHOOK_REDELIVERIES_PER_MINUTE" in again.json()["error"]["message"]
        still = team.get("/api/webhooks/deliveries", params={"event_id": second}).json()["data"]
        assert [d["status"] for d in still] == ["failed"]


def test_failed_authentication_is_throttled_per_key_prefix_and_per_address(
    own_platform: OwnPlatform,
) -> None:
    with own_platform(
        AUTH_MAX_FAILURES_PER_ADDRESS="6",
        AUTH_MAX_FAILURES_PER_KEY_PREFIX="3",
        AUTH_THROTTLE_WINDOW_SECONDS="3600",
    ) as (team, _, _):
        prefix = "sk-" + uuid.uuid4().hex[:7]
        with httpx.Client(base_url=str(team.base_url), timeout=30) as client:

            def attempt(key: str) -> httpx.Response:
                return client.get("/api/jobs", headers={"Authorization": f"Bearer {key}"})

            for _ in range(3):
                assert attempt(prefix + uuid.uuid4().hex).status_code == 401
            throttled = attempt(prefix + uuid.uuid4().hex)
            assert throttled.status_code == 429, throttled.text
            assert throttled.json()["error"]["type"] == "rate_limit_exceeded"
            assert int(throttled.headers["Retry-After"]) >= 1
            # A missing header is not a guess and is not counted; other prefixes still get 401.
            assert client.get("/api/jobs").status_code == 401
            assert team.get("/api/jobs").status_code == 200
            for _ in range(2):
                assert attempt("sk-" + uuid.uuid4().hex).status_code == 401
            # The address has now failed 6 times (3 + 1 refused by the throttle is not counted,
            # + 2): from it, every key is refused until the window ends, even a good one.
            assert attempt("sk-" + uuid.uuid4().hex).status_code == 401
            blocked = team.get("/api/jobs")
            assert blocked.status_code == 429, blocked.text
            assert int(blocked.headers["Retry-After"]) >= 1
