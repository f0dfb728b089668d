"""A webhook host whose DNS never answers delays no other team's delivery; its attempts record
a DNS timeout. The platform's resolver is pointed at a local UDP socket that never replies."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import OwnPlatform, TeamClient
from tests.fakes.receiver import Receiver
from tests.harness import MASTER_KEY, wait_until

HANGING = 20  # more lookups at once than the default thread-pool executor has threads
DNS_TIMEOUT = 15


@pytest.fixture
def silent_nameserver() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def _deliveries(team: TeamClient) -> list[dict[str, Any]]:
    return list(team.get("/api/webhooks/deliveries", params={"limit": 100}).json()["data"])


def _complete_step_job(team: TeamClient) -> None:
    created = team.post("/api/jobs/create", json={"job_type": "dns"})
    assert created.status_code == 201, created.text
    done = team.post(f"/api/jobs/{created.json()['id']}/complete")
    assert done.status_code == 200, done.text


def test_a_host_whose_dns_hangs_delays_no_other_teams_delivery(
    own_platform: OwnPlatform, silent_nameserver: str
) -> None:
    receiver = Receiver().start()
    started = time.monotonic()
    try:
        with own_platform(
            WEBHOOK_DNS_NAMESERVERS=silent_nameserver,
            WEBHOOK_DNS_TIMEOUT_SECONDS=str(DNS_TIMEOUT),
            WEBHOOK_TIMEOUT_SECONDS="30",
            WEBHOOK_RETRY_SCHEDULE="0",
        ) as (slow_team, _env, _procs):
            for i in range(HANGING):
                r = slow_team.post(
                    "/api/webhooks/endpoints",
                    json={"url": f"http://hook-{i}.dns-never-answers.test:9/hook"},
                )
                assert r.status_code == 201, r.text
            base = str(slow_team.base_url)
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30
            ) as admin:
                assert (
                    admin.post(
                        "/api/admin/teams", json={"team_id": "t-other", "name": "o"}
                    ).status_code
                    == 201
                )
                key = admin.post("/api/admin/teams/t-other/keys", json={"name": "k"}).json()["key"]
            other = TeamClient(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )
            with other:
                # the other team's host has a name too, resolved by the same resolver
                r = other.post(
                    "/api/webhooks/endpoints",
                    json={"url": f"http://localhost:{receiver.port}/hook"},
                )
                assert r.status_code == 201, r.text

                _complete_step_job(slow_team)
                # every hanging delivery has been claimed: its lookup is in flight
                wait_until(
                    lambda: (
                        len(_deliveries(slow_team)) == HANGING
                        and all(d["attempts"] >= 1 for d in _deliveries(slow_team))
                    ),
                    what="the hanging deliveries to be claimed",
                )
                _complete_step_job(other)
                wait_until(
                    lambda: [d for d in _deliveries(other) if d["status"] == "succeeded"],
                    what="the other team's delivery",
                )
                assert len(receiver.requests) == 1
                # ... while the first team's are all still waiting on their lookups
                slow = _deliveries(slow_team)
                assert all(d["status"] == "pending" and d["last_error"] is None for d in slow)

                settled = wait_until(
                    lambda: (
                        [d for d in _deliveries(slow_team) if d["status"] == "failed"]
                        if all(d["status"] == "failed" for d in _deliveries(slow_team))
                        else None
                    ),
                    timeout=120,
                    what="the hanging deliveries to fail",
                )
                assert len(settled) == HANGING
                for d in settled:
                    assert f"timed out after {DNS_TIMEOUT}s" in d["last_error"], d
                    attempts = slow_team.get(f"/api/webhooks/deliveries/{d['id']}/attempts").json()[
                        "data"
                    ]
                    assert len(attempts) == 1 and attempts[0]["status_code"] is None
                    assert attempts[0]["error"].startswith("DNS lookup of hook-")
    finally:
        receiver.stop()
    print(f"\nDNS-hang test: {time.monotonic() - started:.1f}s")
