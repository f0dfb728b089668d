"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text

from api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Alive; checks no dependency (the Railway guide's check)."""
    return {"status": "healthy", "service": "saas-llm-api"}


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, timeout=3.0)
        return name, "ok"
    except Exception as exc:
        return name, f"error: {type(exc).__name__}"


@router.get("/ready")
async def ready(state: StateDep) -> JSONResponse:
    """Postgres, Redis and the proxy all answer."""

    async def db() -> None:
        async with state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))

    async def proxy() -> None:
        response = await state.http.get(
            state.settings.litellm_proxy_url.rstrip("/") + "/health/liveliness", timeout=3.0
        )
        response.raise_for_status()

    results = dict(
        await asyncio.gather(
            _check("postgres", db()),
            _check("redis", state.queue.ping()),
            _check("proxy", proxy()),
        )
    )
    ok = all(v == "ok" for v in results.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": results},
        status_code=200 if ok else 503,
    )


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    """Jobs, calls and webhook deliveries by status, queue depth and recent call latency."""
    registry = CollectorRegistry()
    jobs = Gauge("saas_llm_jobs", "Jobs by status", ["status"], registry=registry)
    calls = Gauge("saas_llm_calls", "Calls by status", ["status"], registry=registry)
    depth = Gauge("saas_llm_queue_depth", "Tasks waiting in the queue", registry=registry)
    webhooks = Gauge(
        "saas_llm_webhook_deliveries", "Webhook deliveries by status", ["status"], registry=registry
    )
    latency = Gauge(
        "saas_llm_call_latency_seconds",
        "Provider latency of calls finished in the last 5 minutes",
        ["quantile"],
        registry=registry,
    )
    async with state.sessionmaker() as session:
        for status, n in (
            await session.execute(text("SELECT status, count(*) FROM jobs GROUP BY status"))
        ).all():
            jobs.labels(status).set(n)
        for status, n in (
            await session.execute(text("SELECT status, count(*) FROM calls GROUP BY status"))
        ).all():
            calls.labels(status).set(n)
        for status, n in (
            await session.execute(
                text("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
            )
        ).all():
            webhooks.labels(status).set(n)
        row = (
            await session.execute(
                text(
                    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),"
                    " percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)"
                    " FROM calls WHERE finished_at > now() - interval '5 minutes'"
                    " AND latency_ms IS NOT NULL"
                )
            )
        ).one()
    latency.labels("0.5").set((row[0] or 0) / 1000)
    latency.labels("0.99").set((row[1] or 0) / 1000)
    depth.set(await state.queue.zcard(state.settings.worker_queue_name))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
