"""The model catalog rides out a failed refresh with the last list, for a while."""

from __future__ import annotations

from typing import Any

import pytest

from shared.llm.backend import ModelCatalog
from shared.llm.client import LLMResult


class Flaky:
    def __init__(self) -> None:
        self.up = True
        self.asked = 0

    async def complete(self, body: dict[str, Any], *, timeout: float) -> LLMResult:
        raise NotImplementedError

    async def models(self) -> list[str]:
        self.asked += 1
        if not self.up:
            raise ConnectionError("gateway busy")
        return ["b", "a"]


async def test_a_failed_refresh_serves_the_last_list_then_fails() -> None:
    backend = Flaky()
    catalog = ModelCatalog(backend, ttl=0, stale_for=3600)
    assert await catalog.names() == ["b", "a"]
    backend.up = False
    assert await catalog.names() == ["b", "a"]  # stale, but known
    assert backend.asked == 2  # it did try to refresh
    expired = ModelCatalog(backend, ttl=0, stale_for=0)
    with pytest.raises(ConnectionError):
        await expired.names()  # nothing known: the failure is the answer
