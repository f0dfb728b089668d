"""Retention: a team's `retention_days` makes the worker delete request and response bodies of
jobs that ended longer ago, keeping tokens, cost and billing; an admin call erases a team's
jobs, calls and events."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from tests.conftest import OwnPlatform, TeamClient, nonce
from tests.harness import MASTER_KEY, wait_until


def _rows(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return list(conn.execute(sql, params).fetchall())


def _backdate(database_url: str, job_id: str, days: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobs SET finished_at = now() - make_interval(days => %s) WHERE id = %s",
            (days, job_id),
        )


def _job(team: TeamClient) -> dict[str, Any]:
    job = team.submit(
        [
            {
                "custom_id": c,
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{c} {nonce()}"}],
            }
            for c in ("a", "b")
        ]
    )
    done = team.wait(job["id"])
    assert done["status"] == "succeeded", done
    return done


def _calls(team: TeamClient, job_id: str) -> list[dict[str, Any]]:
    listed = team.get(f"/api/jobs/{job_id}", params={"include_calls": "true"}).json()["calls"]
    return [team.get(f"/api/jobs/{job_id}/calls/{c['id']}").json() for c in listed]


def test_bodies_of_ended_jobs_past_retention_are_deleted_and_figures_kept(
    own_platform: OwnPlatform,
) -> None:
    with own_platform(WORKER_RETENTION_SECONDS="2") as (team, env, _procs):
        db = env["DATABASE_URL"]
        with httpx.Client(
            base_url=str(team.base_url),
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=30,
        ) as admin:
            bad = admin.patch(f"/api/admin/teams/{team.team_id}", json={"retention_days": 0})
            assert bad.status_code == 422
            r = admin.patch(f"/api/admin/teams/{team.team_id}", json={"retention_days": 30})
            assert r.status_code == 200 and r.json()["retention_days"] == 30
            # a second team keeps everything (retention_days null, the default)
            assert (
                admin.post("/api/admin/teams", json={"team_id": "t-keep", "name": "k"}).status_code
                == 201
            )
            assert admin.get("/api/admin/teams/t-keep").json()["retention_days"] is None
            key = admin.post("/api/admin/teams/t-keep/keys", json={}).json()["key"]
        keeper = TeamClient(
            base_url=str(team.base_url), headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

        old, recent = _job(team), _job(team)
        kept = _job(keeper)
        before = _calls(team, old["id"])
        assert all(c["request"]["messages"] and c["response"] for c in before)
        _backdate(db, old["id"], 31)
        _backdate(db, kept["id"], 365)

        wait_until(
            lambda: all(c["response"] is None for c in _calls(team, old["id"])),
            timeout=60,
            what="the old job's bodies to be deleted",
        )
        after = _calls(team, old["id"])
        for b, a in zip(before, after, strict=True):
            assert a["request"] == {"deleted": "retention"} and a["response"] is None
            # tokens, cost, status and timing stay
            for field in ("usage", "cost_usd", "status", "latency_ms", "model_used", "custom_id"):
                assert a[field] == b[field], field
        job_after = team.get(f"/api/jobs/{old['id']}").json()
        for field in ("cost_usd", "credits_charged", "usage", "status", "request_counts"):
            assert job_after[field] == old[field], field
        # the recent job and the other team's old job keep their bodies
        assert all(c["response"] for c in _calls(team, recent["id"]))
        assert all(c["response"] and c["request"]["messages"] for c in _calls(keeper, kept["id"]))
        [(cleared,)] = _rows(
            db, 'SELECT count(*) FROM calls WHERE request = \'{"deleted": "retention"}\'::jsonb'
        )
        assert cleared == 2
        keeper.close()


def test_admin_deletes_a_teams_jobs_calls_and_events(own_platform: OwnPlatform) -> None:
    with own_platform() as (team, env, _procs):
        db = env["DATABASE_URL"]
        with httpx.Client(
            base_url=str(team.base_url),
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=30,
        ) as admin:
            job = _job(team)
            wait_until(
                lambda: team.get("/api/webhooks/events", params={"job_id": job["id"]}).json()[
                    "data"
                ],
                what="the job's event",
            )
            open_job = team.post("/api/jobs/create", json={"job_type": "x"}).json()
            busy = admin.delete(f"/api/admin/teams/{team.team_id}/data")
            assert busy.status_code == 409 and busy.json()["error"]["type"] == "conflict"
            assert team.post(f"/api/jobs/{open_job['id']}/complete").status_code == 200

            r = admin.delete(f"/api/admin/teams/{team.team_id}/data")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["team_id"] == team.team_id
            assert body["jobs"] == 2 and body["calls"] == 2 and body["webhook_events"] >= 2
            assert team.get(f"/api/jobs/{job['id']}").status_code == 404
            assert team.get("/api/jobs").json()["data"] == []
            assert team.get("/api/webhooks/events").json()["data"] == []
            for table in ("jobs", "calls", "webhook_events", "webhook_deliveries"):
                assert _rows(
                    db,
                    f"SELECT count(*) FROM {table} WHERE team_id = %s",  # noqa: S608
                    team.team_id,
                ) == [(0,)]
            # the team and its key stay usable
            assert admin.get(f"/api/admin/teams/{team.team_id}").status_code == 200
            assert team.get("/api/models").status_code == 200
            assert admin.delete("/api/admin/teams/t-nobody/data").status_code == 404
