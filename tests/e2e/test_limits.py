"""Team limits: requests per minute at submission, calls in flight in the workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.conftest import TeamClient, nonce
from tests.harness import provider_requests


def _requests(tag: str, n: int, marker: str = "") -> list[dict]:
    return [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} {i} {marker}"}]}
        for i in range(n)
    ]


def _align_to_a_fresh_minute(margin: float = 20.0) -> None:
    """The limit counts per calendar minute (the window itself is tested with an injected clock
    in tests/service): start where the whole test fits inside one minute, whatever the clock."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


def test_requests_per_minute_refuses_with_429_and_writes_nothing(
    make_team: Callable[..., TeamClient],
) -> None:
    team = make_team(requests_per_minute=3)
    _align_to_a_fresh_minute()
    tag = nonce()
    assert team.post("/api/jobs", json={"requests": _requests(tag, 2)}).status_code == 202
    refused = team.post("/api/jobs", json={"requests": _requests(tag, 2)})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    too_big = team.post("/api/jobs", json={"requests": _requests(tag, 4)})
    assert too_big.status_code == 400 and too_big.json()["error"]["type"] == "limit_exceeded"
    assert len(team.get("/api/jobs").json()["data"]) == 1
    # the refused requests were not counted: one more request still fits this minute
    assert team.post("/api/jobs", json={"requests": _requests(tag, 1)}).status_code == 202


def test_calls_in_flight_never_exceed_the_team_limit(
    make_team: Callable[..., TeamClient], provider: httpx.Client
) -> None:
    team = make_team(max_calls_in_flight=2)
    tag = nonce()
    job = team.submit(_requests(tag, 8, "[[delay:300]]"))
    done = team.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded" and done["request_counts"]["succeeded"] == 8
    seen = provider_requests(provider, tag)
    assert len(seen) == 8
    events = sorted([(r["t"], 1) for r in seen] + [(r["done"], -1) for r in seen])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 2  # never more than the limit, and the limit is used


def test_limits_can_be_changed_by_the_admin(
    admin: httpx.Client, make_team: Callable[..., TeamClient]
) -> None:
    team = make_team(requests_per_minute=1)
    _align_to_a_fresh_minute()
    tag = nonce()
    assert team.post("/api/jobs", json={"requests": _requests(tag, 1)}).status_code == 202
    assert team.post("/api/jobs", json={"requests": _requests(tag, 1)}).status_code == 429
    r = admin.patch(f"/api/admin/teams/{team.team_id}", json={"requests_per_minute": 10})
    assert r.status_code == 200 and r.json()["requests_per_minute"] == 10
    assert team.post("/api/jobs", json={"requests": _requests(tag, 1)}).status_code == 202
