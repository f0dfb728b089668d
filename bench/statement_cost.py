"""CPU per statement of the ways the hot path can run one: the ORM, SQLAlchemy Core, a text
statement, each through the session and through its connection, and asyncpg directly.

The statement is the claim's read (a call with its job's deadline and its team's row, one row of
~60 columns: what `shared.jobs.lifecycle._CLAIM` returns), by primary key, on a fresh migrated
database with one team, job and call (dropped at the end). Each way runs `-n` times on one
session, in `--rounds` alternating rounds; the figure is the best round's CPU of this process
(user + system, getrusage) per statement, so Postgres' own CPU is not in it: it is what the
worker pays per statement on top of the round trip. Read it as ratios within one run.

    python -m bench.statement_cost [-n 1500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import uvloop
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql

from shared.config import Settings
from shared.db import create_engine, create_sessionmaker
from shared.models import Call, Job, Team
from tests.harness import create_database, drop_database

CALL_ID = "call_bench_statement"
ORM = (
    select(Call, Job.deadline_at, Job.total_calls, Team)
    .join(Job, Job.id == Call.job_id)
    .join(Team, Team.id == Call.team_id)
    .where(Call.id == CALL_ID)
    .execution_options(populate_existing=True)
)
CORE = (
    select(*Call.__table__.c, Job.deadline_at, Job.total_calls, *Team.__table__.c)
    .join(Job, Job.id == Call.job_id)
    .join(Team, Team.id == Call.team_id)
    .where(Call.id == CALL_ID)
)
# The same statement as text, and as asyncpg's own SQL ($1).
SQL = str(CORE.compile(dialect=postgresql.dialect(paramstyle="numeric"))).replace(":1", "$1")
TEXT = text(SQL.replace("$1::VARCHAR", ":id").replace("$1", ":id"))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _seed(url: str) -> None:
    with psycopg.connect(url.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        conn.execute("INSERT INTO teams (id, name) VALUES ('t_bench', 'bench')")
        conn.execute(
            "INSERT INTO jobs (id, team_id, style, status, total_calls)"
            " VALUES ('job_bench', 't_bench', 'batch', 'queued', 1)"
        )
        conn.execute(
            "INSERT INTO calls (id, job_id, team_id, seq, custom_id, model_requested, request,"
            " status) VALUES (%s, 'job_bench', 't_bench', 0, 'c0', 'gpt-4o-mini', %s, 'queued')",
            (CALL_ID, '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'),
        )


async def measure(url: str, n: int, rounds: int) -> dict[str, float]:
    engine = create_engine(Settings(environment="test", database_url=url))
    sessionmaker = create_sessionmaker(engine)
    best: dict[str, float] = {}
    try:
        for _ in range(rounds):
            async with sessionmaker() as session:
                conn = await session.connection()
                raw: Any = (await conn.get_raw_connection()).driver_connection
                ways: dict[str, Callable[[], Awaitable[Any]]] = {
                    "session, ORM entities": lambda s=session: s.execute(ORM),
                    "session, Core columns": lambda s=session: s.execute(CORE),
                    "session, text": lambda s=session: s.execute(TEXT, {"id": CALL_ID}),
                    "connection, Core columns": lambda c=conn: c.execute(CORE),
                    "connection, text": lambda c=conn: c.execute(TEXT, {"id": CALL_ID}),
                    "asyncpg directly": lambda r=raw: r.fetch(SQL, CALL_ID),
                }
                for name, way in ways.items():
                    for _ in range(50):  # warm: statement caches, prepared statements
                        await way()
                    started = _cpu()
                    for _ in range(n):
                        result = await way()
                        if hasattr(result, "first"):
                            assert result.first() is not None
                        else:
                            assert result
                    us = (_cpu() - started) / n * 1e6
                    best[name] = min(best.get(name, us), us)
    finally:
        await engine.dispose()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = create_database("saasllm_stmt_")
    try:
        _seed(url)
        best = uvloop.run(measure(url, args.n, args.rounds))
    finally:
        drop_database(url)
    raw = best["asyncpg directly"]
    print("| way | CPU µs per statement | to asyncpg directly |")
    print("|---|---:|---:|")
    for name, us in best.items():
        print(f"| {name} | {us:.0f} | {us / raw:.1f}x |")


if __name__ == "__main__":
    main()
