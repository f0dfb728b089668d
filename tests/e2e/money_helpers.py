"""Shared steps of the money tests: concurrent one-call jobs against a budget."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx

from shared.billing.prices import worst_case
from shared.models import Team

MODEL = "gpt-4o-mini"
MAX_TOKENS = 64  # more than the fake provider's answers below (it ignores max_tokens)


def one_call(tag: str, i: int) -> dict[str, Any]:
    # About 60 words: the answer echoes them, so the real price is close to the worst case.
    words = " ".join(["a"] * 58)
    content = f"{tag}-{i:04d} [[delay:100]] {words}"
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 64}


def worst_usd(markup_pct: Decimal, body: dict[str, Any]) -> Decimal:
    """The worst case the platform reserves for `body` (same function, same prices)."""
    team = Team(id="x", name="x", price_markup_pct=markup_pct, model_prices={})
    sent = {"model": body["model"], "messages": body["messages"], "max_tokens": MAX_TOKENS}
    usd = worst_case(team, sent)[1]
    assert usd is not None
    return usd


def submit_concurrently(
    base_url: str | list[str],
    key: str,
    bodies: list[dict[str, Any]],
    connections: int,
    job_type: str = "",
) -> list[httpx.Response]:
    """POST one job per body from `connections` client connections at once (spread over the
    API processes at `base_url`)."""
    urls = [base_url] if isinstance(base_url, str) else base_url
    clients = [
        httpx.Client(
            base_url=urls[i % len(urls)], headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        for i in range(connections)
    ]

    def post(i: int) -> httpx.Response:
        client = clients[i % connections]
        payload: dict[str, Any] = {"requests": [bodies[i]]}
        if job_type:
            payload["job_type"] = job_type
        return client.post("/api/jobs", json=payload)

    try:
        with ThreadPoolExecutor(max_workers=connections) as pool:
            return list(pool.map(post, range(len(bodies))))
    finally:
        for c in clients:
            c.close()
