"""The reconciler against real Postgres and Redis: lost queue entries are found behind a backlog."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shared.config import Settings
from shared.db import create_engine, create_sessionmaker, transaction
from shared.ids import new_id
from shared.jobs import reconciler
from shared.models import Call, Job, Team
from shared.queue import create_queue, enqueue_call, missing_call_tasks
from tests.harness import REDIS_URL, create_database, drop_database


async def _scenario(database_url: str) -> tuple[int, list[tuple[str, int]]]:
    settings = Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        worker_queue_name="saas-llm-reconcile-test:" + uuid.uuid4().hex[:8],
    )
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    queue = await create_queue(settings)
    ids = [new_id("call") for _ in range(5)]
    try:
        async with transaction(sessionmaker) as session:
            session.add(Team(id="t", name="t"))
            await session.flush()  # no ORM relationships: flush parents first
            job = Job(id=new_id("job"), team_id="t", style="batch", status="queued", total_calls=5)
            session.add(job)
            await session.flush()
            for seq, call_id in enumerate(ids):
                session.add(
                    Call(
                        id=call_id,
                        job_id=job.id,
                        team_id="t",
                        seq=seq,
                        custom_id=str(seq),
                        model_requested="m",
                        request={},
                        status="queued",
                    )
                )
        # The first four are waiting in the queue; the last one's entry was lost.
        for call_id in ids[:4]:
            await enqueue_call(queue, call_id)
        report = await reconciler.reconcile(
            sessionmaker, queue, queued_grace_seconds=-60, max_attempts=3
        )
        still_missing = await missing_call_tasks(queue, [(c, 0) for c in ids])
        return report.requeued, still_missing
    finally:
        await queue.delete(
            *[k async for k in queue.scan_iter(settings.worker_queue_name + "*")] or ["x"]
        )
        await queue.aclose()
        await engine.dispose()


def test_a_lost_entry_behind_a_waiting_backlog_is_requeued(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler, "BATCH", 2)  # five due calls: three pages
    database_url = create_database()
    try:
        requeued, still_missing = asyncio.run(_scenario(database_url))
    finally:
        drop_database(database_url)
    assert requeued == 1  # only the lost one; the four waiting entries are left alone
    assert still_missing == []
