"""`enqueue_new_calls` writes the queue entries arq's `enqueue_job` writes (one round trip per
batch instead of three per call), and `last_statement_alone` turns autocommit on only for a
session that has run no statement, for that session only."""

from __future__ import annotations

import asyncio
import socket
import uuid

import psycopg
import pytest
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import deserialize_job
from redis.asyncio import Redis
from sqlalchemy import text

from shared import queue as queues
from shared.config import Settings
from shared.db import create_engine, create_sessionmaker, last_statement_alone
from shared.queue import call_task_id, create_queue, deserialize, enqueue_call, enqueue_new_calls
from tests.harness import REDIS_URL, create_database, drop_database


async def _entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queues, "_ENQUEUE_CHUNK", 2)  # five calls: three scripts
    name = "saas-llm-enqueue-test:" + uuid.uuid4().hex[:8]
    settings = Settings(redis_url=REDIS_URL, worker_queue_name=name)
    queue = await create_queue(settings)
    tag = uuid.uuid4().hex[:8]
    new = [f"call_new{tag}{i}" for i in range(5)]
    old = f"call_old{tag}"
    done = f"call_done{tag}"
    keys = [job_key_prefix + call_task_id(c, 0) for c in [*new, old, done]]
    wakes = queue.pubsub()
    await wakes.subscribe(queues.wake_channel(queue))
    assert (await wakes.get_message(timeout=5))["type"] == "subscribe"

    async def woken() -> list[bytes]:
        """The wake-ups published so far: Redis answers the PING after every message it
        published to this connection before it, so no wait on time decides what is seen."""
        await wakes.ping()
        got = []
        while (message := await wakes.get_message(timeout=10)) is not None:
            if message["type"] == "pong":
                return got
            got.append(message["data"])
        raise AssertionError("no answer to the PING")

    try:
        await queue.set(result_key_prefix + call_task_id(done, 0), b"{}", px=60_000)
        await enqueue_call(queue, old)
        await woken()
        await enqueue_new_calls(queue, [*new, done])
        # Three scripts (chunks of two), each added entries: each woke the workers once.
        assert await woken() == [name.encode()] * 3
        first = await queue.zrange(name, 0, -1, withscores=True)
        await enqueue_new_calls(queue, new)  # again: nothing changes, nobody is woken
        assert await queue.zrange(name, 0, -1, withscores=True) == first
        assert await woken() == []
        queued = {member.decode(): score for member, score in first}
        assert set(queued) == {call_task_id(c, 0) for c in [*new, old]}  # not the finished one
        reference = deserialize_job(
            await queue.get(job_key_prefix + call_task_id(old, 0)), deserializer=deserialize
        )
        for call_id in new:
            job_id = call_task_id(call_id, 0)
            job = deserialize_job(
                await queue.get(job_key_prefix + job_id), deserializer=deserialize
            )
            assert (job.function, list(job.args), job.kwargs, job.job_try) == (
                reference.function,
                [call_id],
                reference.kwargs,
                reference.job_try,
            )
            assert queued[job_id] == job.enqueue_time.timestamp() * 1000
            ttl = await queue.pttl(job_key_prefix + job_id)
            assert queue.expires_extra_ms - 60_000 < ttl <= queue.expires_extra_ms
    finally:
        await wakes.aclose()
        await queue.delete(name, result_key_prefix + call_task_id(done, 0), *keys)
        await queue.aclose()


def test_enqueue_new_calls_writes_what_arq_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(_entries(monkeypatch))


async def _sessions(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url, redis_url=REDIS_URL))
    sessionmaker = create_sessionmaker(engine)
    try:
        async with sessionmaker() as session:
            await session.execute(text("CREATE TABLE t (n int)"))
            await session.commit()

        def seen() -> list[int]:
            with psycopg.connect(database_url) as conn:
                return [r[0] for r in conn.execute("SELECT n FROM t ORDER BY n").fetchall()]

        async with sessionmaker() as session:
            assert await last_statement_alone(session)
            await session.execute(text("INSERT INTO t VALUES (1)"))
            assert seen() == [1]  # committed by itself, before any COMMIT
        async with sessionmaker() as session:
            await session.execute(text("SELECT 1"))
            assert not await last_statement_alone(session)  # the transaction is already open
            await session.execute(text("INSERT INTO t VALUES (2)"))
            assert seen() == [1]
            await session.commit()
        assert seen() == [1, 2]
        async with sessionmaker() as session:  # the pooled connection is transactional again
            await session.execute(text("INSERT INTO t VALUES (3)"))
            assert seen() == [1, 2]
            await session.rollback()
        assert seen() == [1, 2]
    finally:
        await engine.dispose()


def test_last_statement_alone_only_before_the_first_statement() -> None:
    database_url = create_database()
    try:
        asyncio.run(_sessions(database_url))
    finally:
        drop_database(database_url)


async def _startable() -> None:
    from arq.constants import in_progress_key_prefix

    name = "saas-llm-startable-test:" + uuid.uuid4().hex[:8]
    settings = Settings(redis_url=REDIS_URL, worker_queue_name=name)
    queue = queues.open_queue(settings, long_poll=True)
    assert isinstance(queue, queues.LongPollQueue)
    entries = [f"task{i}-{uuid.uuid4().hex[:6]}" for i in range(7)]
    running = entries[:3]  # the oldest, as running tasks are: started elsewhere, still queued
    later = "later-" + uuid.uuid4().hex[:6]
    try:
        await queue.zadd(name, {e: 1000 + i for i, e in enumerate(entries)})
        await queue.zadd(name, {later: 10**15})  # deferred: not due
        for e in running:
            await queue.set(in_progress_key_prefix + e, b"1", px=60_000)
        ids = lambda found: [e.decode() for e, _ in found]  # noqa: E731
        # As many as asked for, past the running ones (a plain LIMIT 0 2 gave none here).
        assert ids(await queue._startable(name, "-inf", 10**13, 0, 2)) == entries[3:5]
        found = await queue._startable(name, "-inf", 10**13, 0, 3)
        assert found == [(e.encode(), float(1003 + i)) for i, e in enumerate(entries[3:6])]
        assert ids(await queue._startable(name, "-inf", 10**13, 0, 100)) == entries[3:]
        assert ids(await queue._startable(name, "-inf", 10**13, None, None)) == entries[3:]
        assert await queue._startable(name, "-inf", 10**13, 0, 0) == []
        await queue.delete(in_progress_key_prefix + running[1])  # its worker died
        assert ids(await queue._startable(name, "-inf", 10**13, 0, 2)) == [running[1], entries[3]]
    finally:
        await queue.delete(name, *(in_progress_key_prefix + e for e in running))
        await queue.aclose()


def test_queue_reads_skip_running_entries_and_fill_the_limit_past_them() -> None:
    asyncio.run(_startable())


async def _published() -> None:
    settings = Settings(redis_url=REDIS_URL, worker_queue_name="saas-llm-pub-test")
    queue = await create_queue(settings)
    a, b = (queues.job_channel(settings, f"job_{uuid.uuid4().hex[:8]}") for _ in range(2))
    listener = queue.pubsub()
    await listener.subscribe(a, b)
    for _ in range(2):
        assert (await listener.get_message(timeout=5))["type"] == "subscribe"

    async def heard() -> list[str]:
        """What was published to `a` and `b` so far (the PING technique of `_entries`)."""
        await listener.ping()
        got = []
        while (message := await listener.get_message(timeout=10)) is not None:
            if message["type"] == "pong":
                return got
            got.append(message["channel"].decode())
        raise AssertionError("no answer to the PING")

    publisher = queues.Publisher(queue)
    try:
        # Three wake-ups in one turn of the loop, two of them for the same job: one pipeline,
        # one message per job.
        publisher.publish(a)
        publisher.publish(b)
        publisher.publish(a)
        assert (publisher.sends, publisher.published) == (0, 0)  # nothing awaited yet
        await publisher.aclose()
        assert (publisher.sends, publisher.published) == (1, 2)
        assert sorted(await heard()) == sorted([a, b])
        publisher.publish(b)  # a later wake-up is a send of its own
        await publisher.aclose()
        assert (publisher.sends, publisher.published) == (2, 3)
        assert await heard() == [b]
    finally:
        await listener.aclose()
        await queue.aclose()
    # Redis unreachable: the wake-up is dropped (the streams also poll), nothing is raised.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        dead = queues.Publisher(Redis(host="127.0.0.1", port=port))
        dead.publish(a)
        await dead.aclose()
        assert (dead.sends, dead.published) == (0, 0)
    # Redis frozen (connections accepted by the kernel, never answered): the send is cut short
    # at the Publisher's timeout and dropped.
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)
        host, port = frozen.getsockname()
        stuck = queues.Publisher(Redis(host=host, port=port), timeout=0.2)
        stuck.publish(a)
        assert stuck._task is not None
        # The send gives up by itself (the bound only fails the test if it never does).
        await asyncio.wait_for(asyncio.shield(stuck._task), timeout=60)
        assert (stuck.sends, stuck.published) == (0, 0)
        await stuck.aclose()


def test_publisher_sends_a_turns_wake_ups_in_one_pipeline_and_drops_them_quietly() -> None:
    asyncio.run(_published())
