"""The start-up heap leaves the collector's walks (`shared.heap.freeze_heap`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared.heap import freeze_heap


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # this test process goes on as before


def test_objects_alive_at_the_freeze_are_no_longer_walked_and_later_ones_are(
    thawed: None, caplog: pytest.LogCaptureFixture
) -> None:
    kept = [[i] for i in range(1000)]  # lists: tracked by the collector
    with caplog.at_level("INFO", logger="saas_llm"):
        frozen = freeze_heap("a test")
    assert frozen >= len(kept) and gc.get_freeze_count() >= len(kept)
    later = [[i] for i in range(10)]
    walked = {id(o) for o in gc.get_objects()}  # every generation the collector walks
    assert not any(id(o) in walked for o in kept)
    assert all(id(o) in walked for o in later)
    record = next(r for r in caplog.records if r.getMessage() == "start-up heap frozen")
    assert record.__dict__["objects"] == frozen and record.__dict__["after"] == "a test"
