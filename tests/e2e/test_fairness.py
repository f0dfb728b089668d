"""Fairness across teams and priority within a team, end to end: a private API and worker with
a few slots, the real proxy, the fake provider answering after a fixed delay.

Order is read from the fake provider (the order its requests arrived in), never from clocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Platform, TeamClient, nonce, private_platform
from tests.harness import MASTER_KEY, provider_requests, wait_until

SLOTS = 4
FLOOD = 300


@pytest.fixture(scope="module")
def platform(proxy: str, log_dir: Path) -> Iterator[Platform]:
    with private_platform(
        proxy,
        log_dir,
        WORKER_MAX_JOBS=str(SLOTS),
        JOBS_MAX_REQUESTS=str(FLOOD),
        JOBS_MAX_BODY_BYTES=str(1 << 20),
    ) as p:
        yield p


def second_team(first: TeamClient) -> TeamClient:
    tag = nonce()
    with httpx.Client(
        base_url=str(first.base_url), headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        r = admin.post("/api/admin/teams", json={"team_id": "t-" + tag, "name": tag})
        assert r.status_code == 201, r.text
        k = admin.post(f"/api/admin/teams/t-{tag}/keys", json={"name": "t"})
        assert k.status_code == 201, k.text
    client = TeamClient(
        base_url=first.base_url, headers={"Authorization": f"Bearer {k.json()['key']}"}, timeout=30
    )
    client.team_id, client.key, client.key_id = "t-" + tag, k.json()["key"], k.json()["id"]
    return client


def ask(text: str) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def test_a_teams_one_call_job_is_not_stuck_behind_another_teams_flood(
    platform: Platform, provider: httpx.Client
) -> None:
    flooder, _, _ = platform
    other = second_team(flooder)
    tag = nonce()
    flood = flooder.submit([ask(f"{tag} A {i} [[delay:150]]") for i in range(FLOOD)])
    # Every slot busy with the flood, and more of it done than there are slots.
    wait_until(
        lambda: len(provider_requests(provider, f"{tag} A ")) >= 2 * SLOTS,
        timeout=120,
        what="the flood to fill every worker slot",
    )
    before = len(provider_requests(provider, f"{tag} A "))
    job = other.submit([ask(f"{tag} B [[delay:150]]")])
    done = other.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    seen = [r["content"] for r in provider_requests(provider, tag)]
    b_at = next(i for i, c in enumerate(seen) if c.startswith(f"{tag} B "))
    flood_between = b_at - before  # flood calls that reached the provider after B was queued
    call = other.get(f"/api/jobs/{job['id']}", params={"include_calls": "true"}).json()["calls"][0]
    print(
        f"FAIRNESS flood {FLOOD} calls on {SLOTS} slots: {before} flood calls before B was "
        f"queued, {flood_between} between B's submission and B's start; B's queue wait "
        f"{call['started_at']} - {call['created_at']}"
    )
    # In queue order B would wait for the ~{FLOOD - before} flood calls queued before it.
    assert flood_between <= 3 * SLOTS, seen[before : b_at + 1]
    assert FLOOD - b_at >= FLOOD // 2  # the flood was far from over when B started
    r = flooder.post(f"/api/jobs/{flood['id']}/cancel")
    assert r.status_code == 200, r.text
    other.close()


def test_a_teams_high_priority_calls_start_before_its_low_ones(
    platform: Platform, provider: httpx.Client
) -> None:
    team = second_team(platform[0])
    tag = nonce()
    hold = team.submit([ask(f"{tag} hold {i} [[hold:{tag}]]") for i in range(SLOTS)])
    wait_until(
        lambda: len(provider_requests(provider, f"{tag} hold ")) == SLOTS,
        timeout=120,
        what="every worker slot to hold a call",
    )
    low = team.submit([ask(f"{tag} low {i} [[delay:50]]") for i in range(20)], priority="low")
    high = team.submit([ask(f"{tag} high {i} [[delay:50]]") for i in range(SLOTS)], priority="high")
    assert low["priority"] == "low" and high["priority"] == "high"
    # Both are queued before any slot frees up.
    assert not provider_requests(provider, f"{tag} low ") + provider_requests(
        provider, f"{tag} high "
    )
    provider.post("/_control/release", params={"name": tag})
    for job in (hold, low, high):
        assert team.wait(job["id"], timeout=120)["status"] == "succeeded"
    order = [
        r["content"].split()[1]
        for r in provider_requests(provider, tag)
        if r["content"].split()[1] in ("low", "high")
    ]
    last_high = max(i for i, kind in enumerate(order) if kind == "high")
    lows_first = order[:last_high].count("low")
    print(f"PRIORITY order after the slots freed: {' '.join(order)}")
    # In queue order all 20 low calls would start before the high ones.
    assert lows_first <= SLOTS, order
    assert team.get(f"/api/jobs/{low['id']}").json()["priority"] == "low"
    team.close()


def test_a_call_whose_entry_ran_another_call_still_starts_while_that_call_runs(
    platform: Platform, provider: httpx.Client
) -> None:
    """A queue entry that ran a higher priority call instead of its own must not keep its own
    call waiting for that call's whole latency: with slots free, every queued call starts, and
    here none of them ends until all have started (they are all held)."""
    team = second_team(platform[0])
    tag = nonce()
    busy = team.submit([ask(f"{tag} busy {i} [[hold:{tag}-busy]]") for i in range(SLOTS)])
    wait_until(
        lambda: len(provider_requests(provider, f"{tag} busy ")) == SLOTS,
        timeout=120,
        what="every worker slot to hold a call",
    )
    # Queued behind the held slots: the low entries come first, and the fair claim gives them
    # the high call first.
    lows = team.submit(
        [ask(f"{tag} low {i} [[hold:{tag}-after]]") for i in range(SLOTS - 1)], priority="low"
    )
    high = team.submit([ask(f"{tag} high [[hold:{tag}-after]]")], priority="high")
    provider.post("/_control/release", params={"name": f"{tag}-busy"})
    try:
        wait_until(
            lambda: (
                len(provider_requests(provider, f"{tag} low "))
                + len(provider_requests(provider, f"{tag} high "))
                == SLOTS
            ),
            timeout=120,
            what="every queued call to start while the others are held",
        )
    finally:
        provider.post("/_control/release", params={"name": f"{tag}-after"})
    for job in (busy, lows, high):
        assert team.wait(job["id"], timeout=120)["status"] == "succeeded"
    team.close()
