"""Building blocks for running the platform against the fake provider (tests and bench)."""

from __future__ import annotations

import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
from cryptography.fernet import Fernet

from cli.stack import Proc, free_port, spawn, write_proxy_config
from shared.migrations import upgrade

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MASTER_KEY = "sk-test-master-" + secrets.token_hex(16)
METRICS_TOKEN = "metrics-" + secrets.token_hex(16)
WEBHOOK_SECRETS_KEY = Fernet.generate_key().decode()
MODELS = ("gpt-4o-mini", "gpt-4o")
T = TypeVar("T")


def create_database(prefix: str = "saasllm_test_") -> str:
    """A new, migrated database; returns its URL."""
    name = prefix + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    return url


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_fake_provider(log_dir: Path, port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    proc = spawn(
        "fake-provider",
        [sys.executable, "-m", "tests.fakes.provider", "--port", str(port)],
        dict(os.environ),
        log_dir,
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/_control/health", timeout=30)
    return proc, url


def fake_models(provider_url: str) -> list[dict[str, Any]]:
    """A proxy config's `model_list`: every model of MODELS on the fake provider."""
    return [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_base": provider_url + "/v1",
                "api_key": "fake-key",
            },
        }
        for name in MODELS
    ]


def fake_proxy_config(log_dir: Path, provider_url: str) -> Path:
    """A proxy config whose models all go to the fake provider (priced as the real models)."""
    return write_proxy_config(log_dir / "proxy.yaml", fake_models(provider_url))


def platform_env(database_url: str, queue: str, proxy_url: str) -> dict[str, str]:
    """Environment for API and worker processes of one test or bench run."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "WEBHOOK_", "JOBS_"))
    }
    env.update(
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "ADMIN_API_KEY": MASTER_KEY,
            "LITELLM_PROXY_URL": proxy_url,
            "METRICS_TOKEN": METRICS_TOKEN,
            "WEBHOOK_SECRETS_KEY": WEBHOOK_SECRETS_KEY,
            "WORKER_QUEUE_NAME": queue,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def new_team_key(api_url: str, prefix: str) -> str:
    """Create a team named `prefix` + a random suffix through the admin API; returns a new key."""
    team = prefix + uuid.uuid4().hex[:6]
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    httpx.post(
        api_url + "/api/admin/teams", json={"team_id": team, "name": team}, headers=admin
    ).raise_for_status()
    made = httpx.post(api_url + f"/api/admin/teams/{team}/keys", json={}, headers=admin)
    made.raise_for_status()
    return str(made.json()["key"])


def wait_until(condition: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def provider_requests(provider: httpx.Client, marker: str) -> list[dict[str, Any]]:
    """The requests the fake provider has seen whose content contains `marker`."""
    return list(provider.get("/_control/requests", params={"contains": marker}).json())
