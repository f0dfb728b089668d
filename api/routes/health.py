"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from fastapi import APIRouter, Depends, Header, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import bindparam, text

from api.deps import StateDep
from shared.errors import NotFound, Unauthorized
from shared.ids import ulid_floor
from shared.llm.keycheck import MasterKeyRejected, check_master_key

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Alive; checks no dependency (the Railway guide's check)."""
    return {"status": "healthy", "service": "saas-llm-api"}


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, timeout=3.0)
        return name, "ok"
    except MasterKeyRejected as exc:
        return name, f"error: {exc}"
    except Exception as exc:
        return name, f"error: {type(exc).__name__}"


@router.get("/ready")
async def ready(state: StateDep) -> JSONResponse:
    """Postgres, Redis and the proxy all answer, and the proxy accepts our master key."""

    async def db() -> None:
        async with state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))

    async def proxy() -> None:
        if state.settings.llm_gateway == "inprocess":
            await state.catalog.names()  # no proxy: the Router's config must be readable
            return
        response = await state.http.get(
            state.settings.litellm_proxy_url.rstrip("/") + "/health/liveliness", timeout=3.0
        )
        response.raise_for_status()

    settings = state.settings
    results = dict(
        await asyncio.gather(
            _check("postgres", db()),
            _check("redis", state.queue.ping()),
            _check("proxy", proxy()),
            _check(
                "master_key",
                check_master_key(
                    state.http, settings.litellm_proxy_url, settings.litellm_master_key
                ),
            ),
        )
    )
    ok = all(v == "ok" for v in results.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": results},
        status_code=200 if ok else 503,
    )


async def metrics_auth(state: StateDep, authorization: str | None = Header(default=None)) -> None:
    """`Authorization: Bearer <METRICS_TOKEN>`; without a token set, open only in development."""
    token = state.settings.metrics_token
    if not token:
        if state.settings.is_development:
            return
        raise NotFound("metrics are off: set METRICS_TOKEN to serve them")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise Unauthorized("metrics need Authorization: Bearer <METRICS_TOKEN>")


def _id_floor(prefix: str, seconds_ago: float) -> str:
    """The smallest id of `prefix` created at or after `seconds_ago` (ids are ULIDs)."""
    ms = int((time.time() - seconds_ago) * 1000)
    return f"{prefix}_" + ulid_floor(ms)


ACTIVE_JOBS = ("open", "queued", "running")  # the predicate of ix_jobs_active
ACTIVE_CALLS = ("queued", "running")  # the predicate of ix_calls_active
RECENT_SECONDS = 3600


@router.get("/metrics", dependencies=[Depends(metrics_auth)])
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics, from cheap reads only: exact counts of active work through the
    partial indexes, the last hour's jobs and calls through the time-ordered primary key, and
    the planner's row estimates (pg_class.reltuples) for the tables' sizes."""
    registry = CollectorRegistry()
    jobs = Gauge("saas_llm_jobs", "Active jobs by status", ["status"], registry=registry)
    calls = Gauge("saas_llm_calls", "Active calls by status", ["status"], registry=registry)
    recent_jobs = Gauge(
        "saas_llm_jobs_recent",
        "Jobs created in the last hour, by status",
        ["status"],
        registry=registry,
    )
    rows = Gauge(
        "saas_llm_table_rows_estimate",
        "Planner estimate of rows per table",
        ["table"],
        registry=registry,
    )
    depth = Gauge("saas_llm_queue_depth", "Tasks waiting in the queue", registry=registry)
    webhooks = Gauge(
        "saas_llm_webhook_deliveries",
        "Pending webhook deliveries; and those created in the last hour by status",
        ["status"],
        registry=registry,
    )
    latency = Gauge(
        "saas_llm_call_latency_seconds",
        "Provider latency of calls finished in the last 5 minutes",
        ["quantile"],
        registry=registry,
    )
    for status in ACTIVE_JOBS:
        jobs.labels(status).set(0)
    for status in ACTIVE_CALLS:
        calls.labels(status).set(0)
    async with state.sessionmaker() as session:
        for status, n in (
            await session.execute(
                text(
                    "SELECT status, count(*) FROM jobs WHERE status IN :s GROUP BY status"
                ).bindparams(bindparam("s", expanding=True)),
                {"s": list(ACTIVE_JOBS)},
            )
        ).all():
            jobs.labels(status).set(n)
        for status, n in (
            await session.execute(
                text(
                    "SELECT status, count(*) FROM calls WHERE status IN :s GROUP BY status"
                ).bindparams(bindparam("s", expanding=True)),
                {"s": list(ACTIVE_CALLS)},
            )
        ).all():
            calls.labels(status).set(n)
        for status, n in (
            await session.execute(
                text("SELECT status, count(*) FROM jobs WHERE id >= :floor GROUP BY status"),
                {"floor": _id_floor("job", RECENT_SECONDS)},
            )
        ).all():
            recent_jobs.labels(status).set(n)
        pending = (
            await session.execute(
                text("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            )
        ).scalar_one()
        webhooks.labels("pending").set(pending)
        for status, n in (
            await session.execute(
                text(
                    "SELECT status, count(*) FROM webhook_deliveries"
                    " WHERE id >= :floor AND status <> 'pending' GROUP BY status"
                ),
                {"floor": _id_floor("whdl", RECENT_SECONDS)},
            )
        ).all():
            webhooks.labels(status).set(n)
        for table, n in (
            await session.execute(
                text(
                    "SELECT relname, reltuples FROM pg_class WHERE relkind = 'r'"
                    " AND relname IN ('jobs', 'calls', 'webhook_events', 'webhook_deliveries',"
                    " 'webhook_attempts')"
                )
            )
        ).all():
            rows.labels(table).set(max(float(n), 0.0))
        # Calls finished in the last 5 minutes were created in the last hour (a call's timeout
        # is far shorter): the id range bounds the scan.
        row = (
            await session.execute(
                text(
                    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),"
                    " percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)"
                    " FROM calls WHERE id >= :floor"
                    " AND finished_at > now() - interval '5 minutes'"
                    " AND latency_ms IS NOT NULL"
                ),
                {"floor": _id_floor("call", RECENT_SECONDS)},
            )
        ).one()
    latency.labels("0.5").set((row[0] or 0) / 1000)
    latency.labels("0.99").set((row[1] or 0) / 1000)
    depth.set(await state.queue.zcard(state.settings.worker_queue_name))
    if (cache := state.key_cache) is not None:
        keys = Gauge(
            "saas_llm_key_cache",
            "This API process's cache of authenticated keys: on (1: its invalidation channel is"
            " subscribed), entries, hits, misses, team changes heard since start",
            ["what"],
            registry=registry,
        )
        keys.labels("on").set(1 if cache.enabled else 0)
        keys.labels("entries").set(len(cache.entries))
        keys.labels("hits").set(cache.hits)
        keys.labels("misses").set(cache.misses)
        keys.labels("invalidations").set(cache.invalidations)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
