"""The service-level layer: rules and races against a real, migrated Postgres, no subprocesses.

One migrated database per run; each test gets a session inside an outer transaction that is
rolled back afterwards (`session`), so tests leave nothing behind and run in milliseconds. Race
tests that need two real transactions use `sessionmaker` and clean up their own team.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.config import Settings
from shared.db import SessionMaker, create_engine, waker_info
from shared.ids import new_id
from shared.llm.backend import ModelCatalog
from shared.llm.client import LLMResult
from shared.models import Call, CallStatus, Job, JobStatus, JobStyle, Team
from shared.queue import Queue
from shared.runtime import Runtime
from tests.harness import create_database, drop_database

MODELS = ["gpt-4o-mini", "gpt-4o"]


@dataclass
class Wakes:
    """What the lifecycle asked to wake, recorded instead of published."""

    jobs: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        async def job(ident: str) -> None:
            self.jobs.append(ident)

        async def team(ident: str) -> None:
            self.teams.append(ident)

        return waker_info(job=job, team=team)


class FakeBackend:
    async def complete(self, body: dict[str, Any], *, timeout: float) -> LLMResult:
        raise AssertionError("service tests make no provider requests")

    async def models(self) -> list[str]:
        return MODELS

    async def aclose(self) -> None:
        """Nothing to release."""


@dataclass
class CountingLimiter:
    consumed: list[tuple[str, int]] = field(default_factory=list)

    async def consume(self, team: Team, n: int) -> None:
        self.consumed.append((team.id, n))


@pytest.fixture(scope="session")
def service_db() -> Iterator[str]:
    url = create_database("saasllm_svc_")
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
async def engine(service_db: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=service_db), pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
async def session(engine: AsyncEngine, wakes: Wakes) -> AsyncIterator[AsyncSession]:
    """A session whose every commit is a savepoint of one transaction rolled back at the end."""
    async with engine.connect() as conn:
        outer = await conn.begin()
        s = AsyncSession(
            bind=conn,
            expire_on_commit=False,
            autoflush=False,
            join_transaction_mode="create_savepoint",
            info=wakes.info(),
        )
        try:
            yield s
        finally:
            await s.close()
            await outer.rollback()


@pytest.fixture
def sessionmaker(engine: AsyncEngine, wakes: Wakes) -> SessionMaker:
    """Real transactions, for races; tests clean up what they create."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=wakes.info())


@pytest.fixture
def limiter() -> CountingLimiter:
    return CountingLimiter()


@pytest.fixture
def runtime(engine: AsyncEngine, limiter: CountingLimiter, service_db: str) -> Runtime:
    backend = FakeBackend()
    settings = Settings(database_url=service_db, environment="test")
    return Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=async_sessionmaker(engine),
        queue=cast(Queue, None),  # after-commit work never runs on a rolled-back transaction
        http=cast(httpx.AsyncClient, None),
        backend=backend,
        catalog=ModelCatalog(backend, ttl=60),
        limiter=limiter,
    )


Factory = Callable[..., Awaitable[tuple[Team, Job, list[Call]]]]


@pytest.fixture
def make_job(session: AsyncSession) -> Factory:
    """A team and a job with `calls` calls in the given states (flushed, not committed)."""

    async def make(
        calls: int = 1,
        *,
        status: JobStatus = JobStatus.QUEUED,
        call_status: CallStatus = CallStatus.QUEUED,
        team: Team | None = None,
        db: AsyncSession | None = None,
        **team_fields: Any,
    ) -> tuple[Team, Job, list[Call]]:
        s = db or session
        if team is None:
            team = Team(id="t-" + uuid.uuid4().hex[:10], name="t", **team_fields)
            s.add(team)
            await s.flush()
        style = JobStyle.STEP if status == JobStatus.OPEN else JobStyle.BATCH
        job = Job(id=new_id("job"), team_id=team.id, style=style, status=status, total_calls=calls)
        s.add(job)
        await s.flush()
        rows = [
            Call(
                id=new_id("call"),
                job_id=job.id,
                team_id=team.id,
                seq=i,
                custom_id=f"c{i}",
                model_requested="gpt-4o-mini",
                request={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                status=call_status,
                attempts=1 if call_status == CallStatus.RUNNING else 0,
            )
            for i in range(calls)
        ]
        s.add_all(rows)
        await s.flush()
        return team, job, rows

    return make


ZERO = Decimal(0)
