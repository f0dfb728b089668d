"""Client CPU per request of the worker's call to the model: httpx against aiohttp to the proxy,
and LiteLLM's Router in the process (in-process mode), same run.

Starts the fake provider on loopback and sends it the same chat completion from one process,
`--concurrency` at a time, with httpx (what the worker used), with aiohttp (what it uses:
`shared.llm.client.proxy_session`) and through `InProcessBackend` (LiteLLM's Router built from
a config naming the fake provider, logging as in the worker), the last both on LiteLLM's own
Router class ("stock") and on the worker's (`worker_router_class`: no usage count for a
deployment without a limit), alternating `--rounds` times.
Prints this process's CPU (user + system, getrusage) per request and the rate of each, and the
ratios. The provider's own CPU is not counted: the figure is what the client costs the worker
per call. (In proxy mode the proxy's own CPU per request comes on top: `bench.throughput`.)

    python -m bench.http_client [--requests 1500] [--concurrency 16] [--rounds 2]

Each round runs the clients in turn, the order reversed every other round; the figures are the
best of the rounds (and, for the two Routers, the median too: this box's noise between rounds
is larger than their difference in a single pair).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvloop

from shared import logs
from shared.heap import freeze_heap
from shared.llm.client import chat_completion, proxy_session
from shared.llm.inprocess import InProcessBackend
from tests.harness import fake_proxy_config, start_fake_provider

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "bench http client"}]}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _timed(one: Callable[[], Awaitable[None]], n: int, c: int) -> tuple[float, float]:
    await asyncio.gather(*(one() for _ in range(c)))  # warm: connections, imports
    # As the worker does after its warm-up and first in-process call: without it, a full
    # collection walks LiteLLM's whole start-up heap and each allocation-heavy step pays for it.
    freeze_heap("bench warm-up")
    cpu, wall = _cpu(), time.perf_counter()
    for _ in range(n // c):
        await asyncio.gather(*(one() for _ in range(c)))
    done = (n // c) * c
    return (_cpu() - cpu) / done * 1000, done / (time.perf_counter() - wall)


async def with_httpx(url: str, n: int, c: int) -> tuple[float, float]:
    """The worker's old request: httpx's `post`, JSON in and out, as `chat_completion` did."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False) as http:

        async def one() -> None:
            r = await http.post(
                url + "/v1/chat/completions",
                json=BODY,
                headers={"Authorization": "Bearer bench"},
                timeout=30,
            )
            r.raise_for_status()
            r.json()

        return await _timed(one, n, c)


async def with_aiohttp(url: str, n: int, c: int) -> tuple[float, float]:
    """The worker's request now: `chat_completion` on a `proxy_session`."""
    session = proxy_session()
    try:

        async def one() -> None:
            await chat_completion(session, base_url=url, master_key="bench", body=BODY, timeout=30)

        return await _timed(one, n, c)
    finally:
        await session.close()


class StockRouterBackend(InProcessBackend):
    """`InProcessBackend` on LiteLLM's own Router class, which counts every deployment's usage
    after each answer (the baseline of the worker's Router, which skips deployments without a
    limit)."""

    def router_class(self) -> type:
        from litellm.router import Router

        return Router


async def with_inprocess(
    config: Path, n: int, c: int, backend_class: type[InProcessBackend] = InProcessBackend
) -> tuple[float, float]:
    """In-process mode's request: LiteLLM's Router in this process (`InProcessBackend`)."""
    backend = backend_class(config)

    async def one() -> None:
        await backend.complete(BODY, timeout=30)

    try:
        return await _timed(one, n, c)
    finally:
        await backend.aclose()  # its callbacks would run on the next backend's calls too


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logs.configure("INFO")  # as in the worker: LiteLLM's records go through this handler
    log_dir = Path(tempfile.mkdtemp(prefix="saas-llm-http-"))
    proc, url = start_fake_provider(log_dir)
    config = fake_proxy_config(log_dir, url)
    clients: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
        "httpx": lambda: with_httpx(url, args.requests, args.concurrency),
        "aiohttp": lambda: with_aiohttp(url, args.requests, args.concurrency),
        "stock": lambda: with_inprocess(
            config, args.requests, args.concurrency, StockRouterBackend
        ),
        "inprocess": lambda: with_inprocess(config, args.requests, args.concurrency),
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    try:
        for round_ in range(args.rounds):
            order = list(clients.items())
            for name, run in order if round_ % 2 == 0 else order[::-1]:  # no place favoured
                ms, rate = uvloop.run(run())
                figures[name].append((ms, rate))
                print(f"{name:9s} client CPU {ms:5.2f} ms per request, {rate:7.0f} requests/s")
    finally:
        proc.stop()
    best = {name: min(ms for ms, _ in runs) for name, runs in figures.items()}
    print(json.dumps({f"{name}_ms": round(ms, 3) for name, ms in best.items()}))
    print(f"aiohttp / httpx client CPU per request: {best['aiohttp'] / best['httpx']:.2f}")
    print(
        f"in-process Router / aiohttp client CPU per request: {best['inprocess'] / best['aiohttp']:.1f}"
    )
    median = {name: statistics.median(ms for ms, _ in runs) for name, runs in figures.items()}
    print(
        "the worker's Router / LiteLLM's own Router (stock), CPU per request: best "
        f"{best['inprocess'] / best['stock']:.2f}, median {median['inprocess'] / median['stock']:.2f}"
        f" ({median['inprocess']:.2f} / {median['stock']:.2f} ms)"
    )


if __name__ == "__main__":
    main()
