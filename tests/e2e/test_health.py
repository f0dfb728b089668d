"""Health, readiness and metrics endpoints, as the Railway guide checks them."""

from __future__ import annotations

import httpx

from cli.stack import Stack
from tests.conftest import TeamClient, nonce
from tests.harness import METRICS_TOKEN


def test_health_is_exactly_the_seed_answer(stack: Stack) -> None:
    r = httpx.get(stack.api_url + "/health")
    assert r.status_code == 200
    assert r.json() == {"status": "healthy", "service": "saas-llm-api"}


def test_ready_checks_postgres_redis_and_proxy(stack: Stack) -> None:
    r = httpx.get(stack.api_url + "/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "redis": "ok", "proxy": "ok", "master_key": "ok"},
    }


def test_metrics_count_jobs_and_calls(stack: Stack, team: TeamClient) -> None:
    job = team.submit(
        [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": nonce()}]}]
    )
    team.wait(job["id"])
    text = httpx.get(
        stack.api_url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    lines = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert lines['saas_llm_jobs_recent{status="succeeded"}'] >= 1
    assert {'saas_llm_jobs{status="queued"}', 'saas_llm_calls{status="running"}'} <= set(lines)
    assert lines['saas_llm_table_rows_estimate{table="calls"}'] >= 0
    assert "saas_llm_queue_depth" in lines
    assert lines['saas_llm_call_latency_seconds{quantile="0.5"}'] > 0


def test_metrics_need_the_token(stack: Stack, team: TeamClient) -> None:
    url = stack.api_url + "/metrics"
    for headers in (
        {},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        {"Authorization": f"Bearer {team.key}"},  # a team key is no metrics token
        {"Authorization": METRICS_TOKEN},
    ):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
    ok = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200 and "saas_llm_queue_depth" in ok.text


def test_metrics_read_no_whole_table(stack: Stack) -> None:
    """Every query /metrics makes is answered from an index or the catalog, never a scan of a
    whole table: the statements are read back from Postgres' own statistics of this database."""
    import psycopg

    database_url = stack.env["DATABASE_URL"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # plans below reflect index usability only
        for sql, params in (
            (
                "SELECT status, count(*) FROM jobs WHERE status IN ('open','queued','running') GROUP BY status",
                None,
            ),
            (
                "SELECT status, count(*) FROM calls WHERE status IN ('queued','running') GROUP BY status",
                None,
            ),
            ("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'", None),
            ("SELECT status, count(*) FROM jobs WHERE id >= %s GROUP BY status", ("job_0",)),
        ):
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params).fetchall())
            assert "Seq Scan" not in plan, plan
