"""Health, readiness and metrics endpoints, as the Railway guide checks them."""

from __future__ import annotations

import httpx

from cli.stack import Stack
from tests.conftest import TeamClient, nonce


def test_health_is_exactly_the_seed_answer(stack: Stack) -> None:
    r = httpx.get(stack.api_url + "/health")
    assert r.status_code == 200
    assert r.json() == {"status": "healthy", "service": "saas-llm-api"}


def test_ready_checks_postgres_redis_and_proxy(stack: Stack) -> None:
    r = httpx.get(stack.api_url + "/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "redis": "ok", "proxy": "ok"},
    }


def test_metrics_count_jobs_and_calls(stack: Stack, team: TeamClient) -> None:
    job = team.submit(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": nonce()}]}]
    )
    team.wait(job["id"])
    text = httpx.get(stack.api_url + "/metrics").text
    lines = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert lines['saas_llm_jobs{status="succeeded"}'] >= 1
    assert lines['saas_llm_calls{status="succeeded"}'] >= 1
    assert "saas_llm_queue_depth" in lines
    assert lines['saas_llm_call_latency_seconds{quantile="0.5"}'] > 0
