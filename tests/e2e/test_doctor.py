"""`saas-llm doctor`: each checklist item's function on its own, then the command against a real
platform (its own proxy with a strong master key, API, worker, database): every item passes
(or is waived/cannot-check where a local test stack truly cannot pass), and each
misconfiguration in turn fails its item with a non-zero exit."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli import doctor
from cli.stack import Proc, free_port, start_api, start_proxy
from shared.teams.schemas import TeamOut
from tests.conftest import Platform, private_platform
from tests.harness import MASTER_KEY, fake_proxy_config

BIN = Path(sys.executable).parent
STRONG_KEY = f"sk-prod-{secrets.token_urlsafe(32)}"
BUDGETS_DEPLOYED = "budget_usd" in TeamOut.model_fields


# --- each item's function ------------------------------------------------------------------


def test_master_key_form() -> None:
    for key in (
        "sk-prod-CHANGE-ME-TO-SECURE-RANDOM-KEY",
        "sk-prod-8vN_zK2QmR4tX7wY3jL9pF1nH6cV5bA8",  # the guide's own "output example"
        "sk-prod-1234567890abcdef",
        "sk-prod-" + secrets.token_hex(8),  # short
        "sk-prod-" + "ab" * 30,  # long but two characters: little entropy
    ):
        assert doctor.check_master_key_form(key).status == "fail", key
    assert doctor.check_master_key_form(STRONG_KEY).status == "pass"
    assert doctor.check_master_key_form(None).status == "cannot-check"


def test_same_key_debug_sslmode_and_networking() -> None:
    rejected = {"checks": {"master_key": "error: LITELLM_MASTER_KEY is not accepted"}}
    assert doctor.check_same_key(rejected, None).status == "fail"
    assert doctor.check_same_key({"checks": {"master_key": "ok"}}, "ok").status == "pass"
    assert doctor.check_same_key({"checks": {"master_key": "ok"}}, "HTTP 401").status == "fail"
    assert doctor.check_same_key(None, None).status == "cannot-check"

    assert doctor.check_debug({"DEBUG": "true"}).status == "fail"
    assert doctor.check_debug({"DEBUG": "false"}).status == "pass"
    assert doctor.check_debug({}).status == "pass"

    url = "postgresql://u:p@postgres.railway.internal:5432/railway"
    assert doctor.check_sslmode(url).status == "fail"
    assert doctor.check_sslmode(url, allow_insecure=True).status == "waived"
    assert doctor.check_sslmode(url + "?sslmode=require").status == "pass"
    assert doctor.check_sslmode(url + "?sslmode=prefer").status == "fail"

    private = {
        "LITELLM_PROXY_URL": "http://litellm-proxy.railway.internal:4000",
        "DATABASE_URL": url,
        "REDIS_URL": "redis://default:x@redis.railway.internal:6379",
    }
    assert doctor.check_private_networking(private).status == "pass"
    public = {**private, "DATABASE_URL": "postgresql://u:p@roundhouse.proxy.rlwy.net:1234/r"}
    result = doctor.check_private_networking(public)
    assert result.status == "fail" and "DATABASE_URL" in result.detail
    local = {**private, "LITELLM_PROXY_URL": "http://127.0.0.1:4000"}
    assert doctor.check_private_networking(local).status == "fail"
    assert doctor.check_private_networking(local, allow_local=True).status == "waived"

    assert doctor.check_https("https://api.example.com").status == "pass"
    assert doctor.check_https("http://saas-api.railway.internal:8000").status == "cannot-check"


def test_teams_migrations_webhooks_and_provider_keys() -> None:
    limited = {"team_id": "a", "status": "active", "requests_per_minute": 60}
    assert doctor.check_rate_limits([limited]).status == "pass"
    assert doctor.check_rate_limits([limited, {"team_id": "b", "status": "active"}]).status == (
        "fail"
    )
    assert doctor.check_rate_limits([{"team_id": "s", "status": "suspended"}]).status == "pass"

    assert doctor.check_budgets([{**limited, "budget_usd": "100.00"}]).status == "pass"
    assert doctor.check_budgets([{**limited, "budget_usd": None}]).status == "fail"
    absent = doctor.check_budgets([limited])  # the API has no budget field at all
    assert absent.status == "fail" and "budget_usd" in absent.detail

    assert doctor.check_migrations({"0005"}, {"0005"}).status == "pass"
    assert doctor.check_migrations({"0004"}, {"0005"}).status == "fail"
    assert doctor.check_migrations(None, {"0005"}).status == "cannot-check"

    fine = {"id": "e1", "team_id": "a", "enabled": True, "failing_since": None}
    assert doctor.check_webhooks([fine]).status == "pass"
    assert doctor.check_webhooks([{**fine, "enabled": False}]).status == "fail"
    assert doctor.check_webhooks([{**fine, "failing_since": "2026-12-01"}]).status == "fail"
    assert doctor.check_webhooks([]).status == "cannot-check"

    healthy = {"healthy_endpoints": [{"model": "openai/gpt-4o"}], "unhealthy_endpoints": []}
    assert doctor.check_provider_keys(healthy, {"OPENAI_API_KEY": "sk-real"}).status == "pass"
    placeholder = {"OPENAI_API_KEY": "sk-proj-YOUR-OPENAI-KEY"}
    assert doctor.check_provider_keys(healthy, placeholder).status == "fail"
    unhealthy = {
        "healthy_endpoints": [],
        "unhealthy_endpoints": [{"model": "openai/gpt-4o", "error": "AuthenticationError"}],
    }
    assert doctor.check_provider_keys(unhealthy, {}).status == "fail"


# --- the command against a running platform ------------------------------------------------


@pytest.fixture(scope="module")
def strong_platform(
    fake_provider: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Platform, str]]:
    """A proxy whose master key is a generated one, and an API and worker that use it."""
    log_dir = tmp_path_factory.mktemp("doctor")
    config = fake_proxy_config(log_dir, fake_provider)
    port = free_port()
    proxy = start_proxy(dict(os.environ, LITELLM_MASTER_KEY=STRONG_KEY), config, port, log_dir)
    proxy_url = f"http://127.0.0.1:{port}"
    try:
        with private_platform(proxy_url, log_dir, LITELLM_MASTER_KEY=STRONG_KEY) as platform:
            team, _env, _procs = platform
            with httpx.Client(
                base_url=str(team.base_url), headers={"Authorization": f"Bearer {MASTER_KEY}"}
            ) as admin:
                settings: dict[str, Any] = {"requests_per_minute": 600}
                if BUDGETS_DEPLOYED:
                    settings["budget_usd"] = "100.00"
                r = admin.patch(f"/api/admin/teams/{team.team_id}", json=settings)
                assert r.status_code == 200, r.text
            hook = team.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"})
            assert hook.status_code == 201, hook.text
            yield platform, str(log_dir)
    finally:
        proxy.stop()


def run_doctor(
    platform: Platform, *flags: str, api_url: str | None = None, **env_changes: str
) -> tuple[int, dict[str, dict[str, str]]]:
    team, env, _ = platform
    env = {**env, **env_changes}
    argv = [
        str(BIN / "saas-llm"),
        "doctor",
        "--env",
        "--api-url",
        api_url or str(team.base_url),
        "--key",
        MASTER_KEY,
        "--json",
        *flags,
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout, done.stderr
    results = {r["id"]: r for r in json.loads(done.stdout)}
    return done.returncode, results


LOCAL = ("--allow-insecure-db", "--allow-local-network")


def test_doctor_on_the_test_stack_passes_every_checkable_item(
    strong_platform: tuple[Platform, str],
) -> None:
    platform, _ = strong_platform
    code, results = run_doctor(platform, *LOCAL)
    status = {k: v["status"] for k, v in results.items()}
    passing = {
        "api_health",
        "proxy_health",
        "master_key_secure",
        "same_master_key",
        "provider_keys",
        "debug_off",
        "migrations_at_head",
        "rate_limits",
        "webhooks_reachable",
    }
    assert {k: status[k] for k in passing} == dict.fromkeys(passing, "pass"), results
    # A local stack cannot pass these; the flags say so and the output says "waived".
    assert {status[k] for k in ("database_ssl", "private_networking")} == {"waived"}
    assert status["secrets_not_in_git"] == status["https"] == "cannot-check"  # plain local HTTP
    if BUDGETS_DEPLOYED:
        assert status["team_budgets"] == "pass" and code == 0, results
    else:  # until the money issue adds budget_usd, the item fails, as the checklist asks
        assert status["team_budgets"] == "fail" and code == 1
        assert "budget_usd" in results["team_budgets"]["detail"]


def test_each_misconfiguration_fails_its_item(strong_platform: tuple[Platform, str]) -> None:
    platform, log_dir = strong_platform
    team, env, _procs = platform

    code, results = run_doctor(platform, *LOCAL, LITELLM_MASTER_KEY=doctor.GUIDE_EXAMPLE_KEY)
    assert code == 1 and results["master_key_secure"]["status"] == "fail"
    assert "example" in results["master_key_secure"]["detail"]
    assert results["master_key_secure"]["fix"]

    code, results = run_doctor(platform, *LOCAL, DEBUG="true")
    assert code == 1 and results["debug_off"]["status"] == "fail"

    code, results = run_doctor(platform, "--allow-local-network")  # sslmode no longer waived
    assert code == 1 and results["database_ssl"]["status"] == "fail"
    assert "sslmode=require" in results["database_ssl"]["fix"]

    # An API whose key differs from the proxy's: its /ready says so, and so does doctor.
    wrong = {**env, "LITELLM_MASTER_KEY": f"sk-prod-{secrets.token_urlsafe(32)}"}
    port = free_port()
    api: Proc = start_api(wrong, port, Path(log_dir), name="api-doctor-wrong-key")
    try:
        code, results = run_doctor(platform, *LOCAL, api_url=f"http://127.0.0.1:{port}")
    finally:
        api.stop()
    assert code == 1 and results["same_master_key"]["status"] == "fail"
    assert "LITELLM_MASTER_KEY is not accepted" in results["same_master_key"]["detail"]

    # A new team with a rate limit but no budget.
    with httpx.Client(
        base_url=str(team.base_url), headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        r = admin.post(
            "/api/admin/teams",
            json={"team_id": "no-budget", "name": "no budget", "requests_per_minute": 60},
        )
        assert r.status_code == 201, r.text
    code, results = run_doctor(platform, *LOCAL)
    assert code == 1 and results["team_budgets"]["status"] == "fail"
    if BUDGETS_DEPLOYED:
        assert "no-budget" in results["team_budgets"]["detail"]
    assert results["rate_limits"]["status"] == "pass"
