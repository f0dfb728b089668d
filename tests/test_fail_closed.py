"""Fail closed: the real API and worker processes refuse to start in production with an unfit
secret or a development-only switch, and say which setting; the compose file publishes nothing
on all interfaces and carries no default key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.stack import BIN, ROOT
from tests.harness import REDIS_URL

GOOD = {
    "LITELLM_MASTER_KEY": "sk-" + "Q7v2Lk9xPz4Rw8Tn3Yb6Hc1Jm5Sd0Fg",
    "WEBHOOK_SECRETS_KEY": "hkG0_6v1bq3m4PqKXbLw2mVY1bT3Cq9iV8zrH7nV1mQ=",
}
REFUSALS = [
    ("missing master key", {"LITELLM_MASTER_KEY": ""}, "LITELLM_MASTER_KEY is missing"),
    (
        "short master key",
        {"LITELLM_MASTER_KEY": "sk-0123456789abcdef"},
        "LITELLM_MASTER_KEY is shorter",
    ),
    (
        "guide's example key",
        {"LITELLM_MASTER_KEY": "sk-prod-8vN_zK2QmR4tX7wY3jL9pF1nH6cV5bA8"},
        "LITELLM_MASTER_KEY is an example",
    ),
    (
        "placeholder master key",
        {"LITELLM_MASTER_KEY": "sk-prod-CHANGE-ME-TO-SECURE-RANDOM-KEY-0000"},
        "LITELLM_MASTER_KEY is a placeholder",
    ),
    ("short admin key", {"ADMIN_API_KEY": "admin"}, "ADMIN_API_KEY is shorter"),
    ("short metrics token", {"METRICS_TOKEN": "metrics"}, "METRICS_TOKEN is shorter"),
    ("no encryption key", {"WEBHOOK_SECRETS_KEY": ""}, "WEBHOOK_SECRETS_KEY is missing"),
    (
        "malformed encryption key",
        {"WEBHOOK_SECRETS_KEY": "not-a-fernet-key-but-long-enough-0123456789"},
        "WEBHOOK_SECRETS_KEY key 1 is not a Fernet key",
    ),
    ("debug", {"DEBUG": "true"}, "DEBUG is on"),
    (
        "private webhooks",
        {"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"},
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS is on",
    ),
    (
        "test clock",
        {"BILLING_CLOCK_FILE": "/tmp/saas-llm-test-clock"},
        "BILLING_CLOCK_FILE is set",
    ),
]
COMMANDS = {
    "api": [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", "9"],
    "worker": [str(BIN / "arq"), "worker.main.WorkerSettings"],
}


def production_env(**overrides: str) -> dict[str, str]:
    """No ENVIRONMENT at all: the processes must default to production."""
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none",
        "REDIS_URL": REDIS_URL,
        **GOOD,
    }
    env.update(overrides)
    return env


@pytest.mark.parametrize("process", sorted(COMMANDS))
@pytest.mark.parametrize(("case", "overrides", "named"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_the_process_refuses_to_start_and_names_the_setting(
    process: str, case: str, overrides: dict[str, str], named: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        COMMANDS[process],
        cwd=ROOT,
        env=production_env(**overrides),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "refusing to start in 'production'" in output and named in output, output[-2000:]
    for value in overrides.values():
        if len(value) > 5:
            assert value not in output  # the refusal names the setting, never its value


def test_development_is_chosen_only_by_saying_so() -> None:
    # The image files set no ENVIRONMENT: they run as production.
    for name in ("Dockerfile.saas", "Dockerfile.worker"):
        assert "ENVIRONMENT" not in (ROOT / name).read_text()
    # `saas-llm up` and the tests are the places that select development.
    assert 'env.setdefault("ENVIRONMENT", "development")' in (ROOT / "cli/up.py").read_text()


def _interpolations(value: str) -> list[tuple[str, str, str]]:
    return re.findall(r"\$\{([A-Z_]+)(:?[-?])?([^}]*)\}", value)


def test_compose_binds_loopback_only_and_has_no_default_key() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    published = [
        (name, str(port))
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    ]
    assert published, "the API and the proxy publish a port"
    for name, port in published:
        parts = port.split(":")
        assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name} publishes {port!r}"
        assert "0.0.0.0" not in port
    secret_names = {
        "LITELLM_MASTER_KEY",
        "WEBHOOK_SECRETS_KEY",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "ADMIN_API_KEY",
        "METRICS_TOKEN",
    }
    seen: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            for var, op, default in _interpolations(node):
                if var in secret_names:
                    seen.add(var)
                    # required (`:?`), plain, or empty-if-unset (`:-` with nothing): never a value
                    if op.endswith("-"):
                        assert default == "", f"{var} has a default in {node!r}"

    walk(compose)
    assert {"LITELLM_MASTER_KEY", "WEBHOOK_SECRETS_KEY"} <= seen
    app_env = compose["services"]["api"]["environment"]
    assert app_env["LITELLM_MASTER_KEY"].startswith("${LITELLM_MASTER_KEY:?")
    assert app_env["ENVIRONMENT"] == "${ENVIRONMENT:-production}"
