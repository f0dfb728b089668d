"""The one retry helper: delays, in-process retries, and background loops that restart."""

from __future__ import annotations

import asyncio

import pytest

from shared import retry
from shared.retry import backoff, forever, retrying


def test_backoff_grows_caps_and_honours_retry_after() -> None:
    for attempt in range(1, 10):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        delay = backoff(attempt, base=0.5, cap=8.0)
        assert ceiling / 2 <= delay <= ceiling
    assert backoff(1, base=0.5, cap=8.0, retry_after=30) == 30


async def test_retrying_retries_what_it_should_and_reraises_the_last_error() -> None:
    tries: list[int] = []

    async def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("down")
        return "ok"

    async for step in retrying(lambda e: isinstance(e, ConnectionError), attempts=5, base=0.001):
        with step:
            result = await flaky()
    assert result == "ok" and len(tries) == 3

    async def broken() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        async for step in retrying(lambda e: isinstance(e, ConnectionError), attempts=5):
            with step:
                await broken()


async def test_forever_restarts_a_failing_loop_until_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[int] = []
    restarted = asyncio.Event()

    async def loop() -> None:
        runs.append(1)
        if len(runs) == 3:
            restarted.set()
            await asyncio.Event().wait()  # runs until cancelled
        raise ConnectionError("lost")

    monkeypatch.setattr(retry, "backoff", lambda *a, **k: 0.001)
    task = asyncio.create_task(forever(loop, name="test loop", pause=0.001))
    await asyncio.wait_for(restarted.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(runs) == 3
