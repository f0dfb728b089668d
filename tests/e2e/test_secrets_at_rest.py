"""Secrets at rest and in logs: signing secrets are stored encrypted, the key rotates without
losing a secret, expired previous secrets are erased, migration 0007 encrypts old rows, and no
secret of a full run appears in any log file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet
from standardwebhooks import Webhook

from cli.stack import BIN, ROOT, start_worker
from shared.crypto import PREFIX, SecretBox
from shared.migrations import alembic_config, upgrade
from tests.conftest import OwnPlatform, TeamClient, nonce
from tests.fakes.receiver import Receiver
from tests.harness import (
    MASTER_KEY,
    METRICS_TOKEN,
    WEBHOOK_SECRETS_KEY,
    create_database,
    drop_database,
    wait_until,
)


def _rows(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return list(conn.execute(sql, params).fetchall())


def _endpoint(team: TeamClient, url: str) -> dict[str, Any]:
    r = team.post("/api/webhooks/endpoints", json={"url": url})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _step_job(team: TeamClient) -> str:
    created = team.post("/api/jobs/create", json={"job_type": "secrets"})
    assert created.status_code == 201, created.text
    job_id = str(created.json()["id"])
    assert team.post(f"/api/jobs/{job_id}/complete").status_code == 200
    return job_id


def test_signing_secrets_are_stored_encrypted_and_the_key_rotates(
    own_platform: OwnPlatform, log_dir: Path
) -> None:
    receiver = Receiver().start()
    try:
        with own_platform() as (team, env, procs):
            db = env["DATABASE_URL"]
            endpoint = _endpoint(team, receiver.url)
            secret = endpoint["secret"]
            team_secret = team.get("/api/webhooks/secret").json()["secret"]
            [(stored,)] = _rows(
                db, "SELECT secret FROM webhook_endpoints WHERE id = %s", endpoint["id"]
            )
            [(stored_team,)] = _rows(db, "SELECT secret FROM webhook_team_secrets")
            for plain, row in ((secret, stored), (team_secret, stored_team)):
                assert row.startswith(PREFIX) and plain not in row
                assert SecretBox([WEBHOOK_SECRETS_KEY]).open(row) == plain
            # the API still shows the plaintext to the team
            assert (
                team.get(f"/api/webhooks/endpoints/{endpoint['id']}/secret").json()["secret"]
                == secret
            )

            # rotate the encryption key: new key first, re-encrypt, then run with the new key only
            new_key = Fernet.generate_key().decode()
            done = subprocess.run(
                [str(BIN / "saas-llm"), "webhooks", "rotate-key"],
                env={**env, "WEBHOOK_SECRETS_KEY": f"{new_key},{WEBHOOK_SECRETS_KEY}"},
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            assert "re-encrypted 2 row(s)" in done.stdout
            [(rotated,)] = _rows(
                db, "SELECT secret FROM webhook_endpoints WHERE id = %s", endpoint["id"]
            )
            assert rotated != stored and SecretBox([new_key]).open(rotated) == secret
            procs["worker"].stop()
            procs["worker"] = start_worker(
                {**env, "WEBHOOK_SECRETS_KEY": new_key}, log_dir, name=f"worker-newkey-{nonce()}"
            )
            _step_job(team)
            got = receiver.wait_for(1)[0]
            Webhook(secret).verify(got.body, got.headers)  # same secret, new encryption key
    finally:
        receiver.stop()


def test_previous_secrets_are_erased_after_their_grace_period(own_platform: OwnPlatform) -> None:
    with own_platform(WEBHOOK_SECRET_GRACE_SECONDS="2", WORKER_RETENTION_SECONDS="2") as (
        team,
        env,
        _procs,
    ):
        db = env["DATABASE_URL"]
        endpoint = _endpoint(team, "http://127.0.0.1:9/hook")
        assert (
            team.post(f"/api/webhooks/endpoints/{endpoint['id']}/rotate-secret").status_code == 200
        )
        assert team.post("/api/webhooks/secret/rotate").status_code == 200
        sql = (
            "SELECT count(*) FROM (SELECT previous_secret FROM webhook_endpoints UNION ALL "
            "SELECT previous_secret FROM webhook_team_secrets) s WHERE previous_secret IS NOT NULL"
        )
        assert _rows(db, sql) == [(2,)]
        # the worker's retention cron clears them once the grace period is over
        wait_until(lambda: _rows(db, sql) == [(0,)], timeout=60, what="previous secrets erased")


def test_migration_0007_encrypts_existing_plaintext_secrets() -> None:
    url = create_database("saasllm_mig7_")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        upgrade(url, "0003")
        plain, team_plain, previous = "whsec_" + nonce(), "whsec_" + nonce(), "whsec_" + nonce()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO teams (id, name) VALUES ('t-mig', 'm')")
            conn.execute(
                "INSERT INTO webhook_endpoints (id, team_id, url, secret, previous_secret) "
                "VALUES ('whep_1', 't-mig', 'http://x', %s, %s)",
                (plain, previous),
            )
            conn.execute(
                "INSERT INTO webhook_team_secrets (team_id, secret) VALUES ('t-mig', %s)",
                (team_plain,),
            )
        key = Fernet.generate_key().decode()
        done = subprocess.run(
            [str(BIN / "saas-llm"), "migrate", "--database-url", url],
            env={**os.environ, "ENVIRONMENT": "test", "WEBHOOK_SECRETS_KEY": key},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        box = SecretBox([key])
        [(s, p)] = _rows(url, "SELECT secret, previous_secret FROM webhook_endpoints")
        [(t,)] = _rows(url, "SELECT secret FROM webhook_team_secrets")
        assert all(v.startswith(PREFIX) for v in (s, p, t))
        assert (box.open(s), box.open(p), box.open(t)) == (plain, previous, team_plain)
        [(version,)] = _rows(url, "SELECT version_num FROM alembic_version")
        # revision ids are not in numeric order (0007 comes before 0005): compare with the head
        assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    finally:
        drop_database(url)


def test_no_secret_of_a_full_run_appears_in_any_log_file(
    own_platform: OwnPlatform, log_dir: Path
) -> None:
    base = create_database("saasllm_redact_")
    db_password = "Pw:" + nonce() + "/x@y"  # a shape no key pattern would catch
    quoted = db_password.replace(":", "%3A").replace("/", "%2F").replace("@", "%40")
    url = base.replace("postgres@", f"postgres:{quoted}@", 1)  # trust auth ignores it
    receiver = Receiver().start()
    try:
        with own_platform(DATABASE_URL=url) as (team, _env, procs):
            endpoint = _endpoint(team, receiver.url)
            old_secret = endpoint["secret"]
            new_secret = team.post(
                f"/api/webhooks/endpoints/{endpoint['id']}/rotate-secret"
            ).json()["secret"]
            team_secret = team.get("/api/webhooks/secret").json()["secret"]
            job = team.submit(
                [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}],
                webhook_url=receiver.url,
            )
            team.wait(job["id"])
            receiver.wait_for(2)
            # errors and odd requests are logged too
            team.get("/api/jobs/nope")
            team.post("/api/jobs", content=b"{not json")
            team.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            secrets = {
                "LITELLM_MASTER_KEY": MASTER_KEY,
                "METRICS_TOKEN": METRICS_TOKEN,
                "WEBHOOK_SECRETS_KEY": WEBHOOK_SECRETS_KEY,
                "database password": db_password,
                "database password (quoted)": quoted,
                "team key": team.key,
                "endpoint secret": old_secret,
                "rotated endpoint secret": new_secret,
                "team secret": team_secret,
            }
            for proc in procs.values():
                proc.stop()
        logs = sorted(p for p in log_dir.rglob("*") if p.is_file())
        assert any(p.name.startswith("api-wh-") for p in logs)
        for path in logs:
            text = path.read_text(errors="replace")
            for name, value in secrets.items():
                assert value not in text, f"{name} appears in {path.name}"
    finally:
        receiver.stop()
        drop_database(base)
