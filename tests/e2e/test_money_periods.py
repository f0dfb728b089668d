"""Budget periods across processes with an injected clock (`BILLING_CLOCK_FILE`): the API and
the worker agree on "now"; a day budget fills, work pauses, the clock passes UTC midnight and the
paused work resumes by itself, once; spend lands in its own day; a reservation made before the
boundary and settled after it counts in the period it was made in."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
from standardwebhooks import Webhook

from tests.conftest import TERMINAL, OwnPlatform, TeamClient
from tests.e2e.money_helpers import MODEL, one_call, worst_usd
from tests.fakes.receiver import Receiver
from tests.harness import MASTER_KEY, provider_requests, wait_until

D = Decimal


def _set_offset(path: Path, seconds: float) -> None:
    """Move every process's clock: the file is replaced whole (a new inode)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{seconds:.6f}\n")
    os.replace(tmp, path)


def _settled(team: TeamClient, job_id: str, done: set[str]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = dict(team.get(f"/api/jobs/{job_id}").json())
        if job["status"] in done and not job["request_counts"]["running"]:
            return job
        return None

    return wait_until(check, timeout=120, what=f"job {job_id} in {sorted(done)}")


def _periods(database_url: str, team_id: str) -> dict[str, tuple[D, D]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT period_start, spent_usd, reserved_usd FROM budget_periods "
            "WHERE team_id = %s ORDER BY period_start",
            (team_id,),
        ).fetchall()
    return {r[0].astimezone(UTC).date().isoformat(): (D(r[1]), D(r[2])) for r in rows}


def test_day_rollover_with_an_injected_clock_across_processes(
    own_platform: OwnPlatform, provider: httpx.Client, tmp_path: Path
) -> None:
    clock_file = tmp_path / "clock"
    real = datetime.now(UTC)
    midnight = (real + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    # The platform's "now" starts 30 minutes before a UTC midnight (whatever the real time).
    offset = (midnight - timedelta(minutes=30) - real).total_seconds()
    _set_offset(clock_file, offset)
    day_before, day_after = (midnight - timedelta(days=1)).date(), midnight.date()
    receiver = Receiver().start()
    overrides = {"BILLING_CLOCK_FILE": str(clock_file), "WORKER_RECONCILE_SECONDS": "1"}
    try:
        with own_platform(**overrides) as (team, env, _procs):
            tag = "roll-" + os.urandom(4).hex()
            worst = worst_usd(D(0), one_call(tag, 0))
            with httpx.Client(
                base_url=str(team.base_url),
                headers={"Authorization": f"Bearer {MASTER_KEY}"},
                timeout=30,
            ) as admin:
                r = admin.patch(
                    f"/api/admin/teams/{team.team_id}",
                    json={
                        "on_limit": "pause",
                        "budget_usd": str(worst * 5),
                        "budget_period": "day",
                        "budget_thresholds": [],
                    },
                )
                assert r.status_code == 200, r.text
            made = team.post(
                "/api/webhooks/endpoints",
                json={"url": receiver.url, "event_types": ["job.paused", "job.resumed"]},
            )
            assert made.status_code == 201, made.text
            secret = made.json()["secret"]

            # A call held at the provider across the boundary: reserved before midnight.
            held_body = {
                "model": MODEL,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"{tag}-held [[hold:{tag}]]"}],
            }
            held = team.submit([held_body])["id"]
            wait_until(
                lambda: any("done" not in r for r in provider_requests(provider, f"{tag}-held")),
                60,
                "the held call at the provider",
            )
            # Fill the day: one job at a time until one pauses, then two more (paused at once).
            before: list[str] = []
            paused: list[str] = []
            for i in range(1, 60):
                job = _settled(team, team.submit([one_call(tag, i)])["id"], TERMINAL | {"paused"})
                (paused if job["status"] == "paused" else before).append(job["id"])
                if paused:
                    break
            assert before and paused, (before, paused)
            for i in (100, 101):
                job = team.submit([one_call(tag, i)])
                assert job["status"] == "paused", job
                paused.append(job["id"])
            assert all(team.get(f"/api/jobs/{j}").json()["status"] == "succeeded" for j in before)
            spent_before = _periods(env["DATABASE_URL"], team.team_id)[day_before.isoformat()][0]
            assert spent_before <= worst * 4  # the held call's worst case is still reserved
            sent_before = len(provider_requests(provider, tag))

            # Past midnight for every process at once.
            _set_offset(clock_file, offset + 40 * 60)
            resumed = [_settled(team, j, TERMINAL) for j in paused]
            assert [j["status"] for j in resumed] == ["succeeded"] * len(paused)
            after = team.wait(team.submit([one_call(tag, 200)])["id"])
            assert after["status"] == "succeeded"
            httpx.post(
                f"{provider.base_url}/_control/release", params={"name": tag}, timeout=10
            ).raise_for_status()
            held_job = team.wait(held)
            assert held_job["status"] == "succeeded"

            # Nothing ran twice: each job's one request reached the provider once.
            seen = provider_requests(provider, tag)
            contents = [r["content"] for r in seen]
            assert len(contents) == len(set(contents)) == 1 + len(before) + len(paused) + 1
            assert sent_before == 1 + len(before)

            def billed(ids: list[str]) -> D:
                return sum((D(team.get(f"/api/jobs/{j}").json()["billed_usd"]) for j in ids), D(0))

            periods = _periods(env["DATABASE_URL"], team.team_id)
            # The held call settled after midnight, in the period it reserved in; the resumed
            # and the new jobs in the new day; nothing reserved is left anywhere.
            assert periods[day_before.isoformat()] == (billed([held, *before]), D(0))
            assert periods[day_after.isoformat()] == (billed([*paused, after["id"]]), D(0))
            assert billed(paused) > 0
            credits = team.get("/api/credits").json()["budget"]
            assert credits["period_start"].startswith(day_after.isoformat())
            assert D(credits["spent_usd"]) == billed([*paused, after["id"]])

            # Usage by day: by each job's creation day (the paused jobs were submitted before).
            usage = team.get(
                "/api/usage",
                params={
                    "group_by": "day",
                    "from": day_before.isoformat(),
                    "to": (day_after + timedelta(days=1)).isoformat(),
                },
            ).json()
            by_day = {row["group"]: row for row in usage["data"]}
            assert set(by_day) == {day_before.isoformat(), day_after.isoformat()}
            first = by_day[day_before.isoformat()]
            assert first["jobs"] == 1 + len(before) + len(paused)
            assert D(first["billed_usd"]) == billed([held, *before, *paused])
            second = by_day[day_after.isoformat()]
            assert second["jobs"] == 1 and D(second["billed_usd"]) == D(after["billed_usd"])

            # Signed job.paused and job.resumed for each paused job.
            def events() -> dict[str, set[str]] | None:
                hook = Webhook(secret)
                got: dict[str, set[str]] = {"job.paused": set(), "job.resumed": set()}
                for req in list(receiver.requests):
                    e = hook.verify(req.body, req.headers)
                    got[e["type"]].add(e["data"]["id"])
                return got if got["job.resumed"] >= set(paused) else None

            got = wait_until(events, 60, "job.resumed for every paused job")
            assert got["job.paused"] == set(paused) and got["job.resumed"] == set(paused)
    finally:
        receiver.stop()
