"""`alembic upgrade head` from empty gives exactly the schema the models describe; data
migrations do what they say."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from shared.billing.usage import usage
from shared.config import DatabaseURL, Settings
from shared.db import create_engine
from shared.migrations import upgrade
from shared.models import Base
from tests.harness import create_database, drop_database


def test_migrations_match_models(database_url: str) -> None:
    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(ctx, Base.metadata))

    async def run() -> list[object]:
        engine = create_async_engine(DatabaseURL(database_url).url())
        async with engine.connect() as conn:
            result = await conn.run_sync(diff)
        await engine.dispose()
        return result

    assert asyncio.run(run()) == []


def test_migration_0010_backfills_the_usage_rollup_from_ended_jobs() -> None:
    """Jobs stored before the rollup existed: after the upgrade, every usage grouping read from
    the rollup equals the sums over the jobs and calls."""
    url = create_database("saasllm_mig9_")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        upgrade(url, "0004")
        jobs = [  # id, status, day, job type, [(model, tokens, cost, billed, credits)]
            (
                "j1",
                "succeeded",
                1,
                "a",
                [("m1", 10, "0.01", "0.011", "1"), ("m2", 5, "0.02", "0.022", None)],
            ),
            ("j2", "failed", 1, None, [("m2", 7, "0.03", "0.033", None)]),
            (
                "j3",
                "succeeded",
                2,
                "a",
                [("m1", 3, "0.001", "0.0011", "0.5"), ("m1", 4, "0.002", "0.0022", "0.25")],
            ),
            ("j4", "expired", 2, "b", []),
            ("j5", "running", 2, "b", [("m2", 9, "0.05", "0.055", None)]),
        ]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO teams (id, name) VALUES ('t-mig9', 'm')")
            for job_id, status, day, job_type, calls in jobs:
                credits = sum(float(c[4] or 0) for c in calls)
                conn.execute(
                    "INSERT INTO jobs (id, team_id, style, job_type, status, total_calls, "
                    "prompt_tokens, completion_tokens, total_tokens, cost_usd, billed_usd, "
                    "credits_charged, created_at) VALUES (%s, 't-mig9', 'batch', %s, %s, %s, "
                    "%s, 0, %s, %s, %s, %s, %s)",
                    (
                        job_id,
                        job_type,
                        status,
                        len(calls),
                        sum(c[1] for c in calls),
                        sum(c[1] for c in calls),
                        sum(float(c[2]) for c in calls),
                        sum(float(c[3]) for c in calls),
                        credits,
                        datetime(2026, 5, day, 5, tzinfo=UTC),
                    ),
                )
                for seq, (model, tokens, cost, billed, cr) in enumerate(calls):
                    conn.execute(
                        "INSERT INTO calls (id, job_id, team_id, seq, custom_id, model_requested, "
                        "request, status, prompt_tokens, completion_tokens, total_tokens, "
                        "cost_usd, billed_usd, credits_charged) VALUES (%s, %s, 't-mig9', %s, "
                        "%s, %s, '{}', 'succeeded', %s, 0, %s, %s, %s, %s)",
                        (
                            f"{job_id}-{seq}",
                            job_id,
                            seq,
                            f"c{seq}",
                            model,
                            tokens,
                            tokens,
                            cost,
                            billed,
                            cr,
                        ),
                    )
        upgrade(url, "head")

        async def compare() -> int:
            engine = create_engine(Settings(database_url=url), pool_size=1)
            try:
                async with AsyncSession(engine) as session:
                    start, end = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
                    for group_by in ("day", "model", "job_type", "team"):
                        fast = await usage(session, "t-mig9", start, end, group_by)  # type: ignore[arg-type]
                        raw = await usage(session, "t-mig9", start, end, group_by, rollup=False)  # type: ignore[arg-type]
                        assert [r.model_dump() for r in fast] == [r.model_dump() for r in raw]
                        assert sum(r.calls for r in fast) == 6
                    rows = await session.execute(text("SELECT sum(jobs) FROM usage_rollup"))
                    return int(rows.scalar_one())
            finally:
                await engine.dispose()

        assert asyncio.run(compare()) == 4  # the four ended jobs, not the running one
    finally:
        drop_database(url)
