"""/docs, /redoc and /openapi.json: on in development, off in production unless DOCS_ENABLED."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from api.main import create_app
from shared.config import Settings

GOOD = {
    "litellm_master_key": "sk-" + "Q7v2Lk9xPz4Rw8Tn3Yb6Hc1Jm5Sd0Fg",
    "webhook_secrets_key": "hkG0_6v1bq3m4PqKXbLw2mVY1bT3Cq9iV8zrH7nV1mQ=",
}


@pytest.mark.parametrize(
    ("environment", "docs_enabled", "served"),
    [
        ("development", None, True),
        ("production", None, False),
        ("production", True, True),
        ("development", False, False),
    ],
)
def test_docs_follow_the_environment_unless_set(
    environment: str, docs_enabled: bool | None, served: bool
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        app = create_app(Settings(environment=environment, docs_enabled=docs_enabled, **GOOD))
    finally:
        root.handlers[:], root.level = handlers, level

    async def statuses() -> dict[str, int]:
        transport = httpx.ASGITransport(app=app)  # no lifespan: nothing connects
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return {
                p: (await client.get(p)).status_code for p in ("/docs", "/redoc", "/openapi.json")
            }

    for path, status in asyncio.run(statuses()).items():
        assert status == (200 if served else 404), (path, status)
