"""The worker's own health: its master key checked at start, and an optional HTTP health port.

`start()` (from the worker's startup) first asks the proxy whether `LITELLM_MASTER_KEY` is
accepted: a 401/403 stops the worker (it raises, arq exits non-zero, the log names the setting);
a proxy that cannot be reached yet only logs a warning (services deploy in parallel).

With `WORKER_HEALTH_PORT` set, a small HTTP server answers `GET /health` (any path) with the
event loop's heartbeat lag, the last task picked and whether Redis (the queue) answers, and
`503` when the loop has not beaten for `WORKER_HEALTH_MAX_LAG_SECONDS` or Redis is unreachable.
The server runs in its own thread and reads a timestamp the loop writes, so it still answers
while the loop is blocked: that is exactly when it must say so. It pings Redis with its own
blocking client for the same reason.

In development and tests only, `SIGUSR1` blocks the event loop for
`WORKER_HEALTH_BLOCK_SECONDS` (a real block, for the test that proves the 503).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import redis

from shared.config import Settings
from shared.llm.keycheck import MasterKeyRejected, check_master_key

log = logging.getLogger("saas_llm.worker.health")
BEAT_SECONDS = 0.5


@dataclass
class Health:
    """What the loop writes and the health thread reads (plain attributes, atomic under the GIL)."""

    settings: Settings
    started: float = field(default_factory=time.monotonic)
    beat: float = field(default_factory=time.monotonic)
    last_task_id: str | None = None
    last_task_at: float | None = None
    tasks_started: int = 0
    server: ThreadingHTTPServer | None = None
    redis_client: redis.Redis | None = None
    beater: asyncio.Task[None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self) -> tuple[int, dict[str, Any]]:
        now = time.monotonic()
        lag = now - self.beat
        alive = lag < self.settings.worker_health_max_lag_seconds
        queue = "ok"
        try:
            assert self.redis_client is not None
            with self.lock:  # one ping at a time; the client is shared by handler threads
                self.redis_client.ping()
        except Exception as exc:
            queue = f"error: {type(exc).__name__}"
        healthy = alive and queue == "ok"
        last = None
        if self.last_task_at is not None:
            last = {"id": self.last_task_id, "seconds_ago": round(now - self.last_task_at, 3)}
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "service": "saas-llm-worker",
            "loop": {"alive": alive, "lag_seconds": round(lag, 3)},
            "last_task": last,
            "tasks_started": self.tasks_started,
            "queue": queue,
            "uptime_seconds": round(now - self.started, 1),
        }
        return (200 if healthy else 503), body


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = health.report()
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # no access log: Railway polls it

    return Handler


async def _beat(health: Health) -> None:
    while True:
        health.beat = time.monotonic()
        await asyncio.sleep(BEAT_SECONDS)


def _block_loop(seconds: float) -> None:
    log.warning("SIGUSR1: blocking the event loop (development only)", extra={"seconds": seconds})
    time.sleep(seconds)  # on purpose: this is the hung worker the health port must report


async def verify_master_key(settings: Settings, http: httpx.AsyncClient) -> None:
    """Refuse to start when the proxy rejects our master key; carry on if it cannot be asked."""
    try:
        await check_master_key(http, settings.litellm_proxy_url, settings.litellm_master_key)
    except MasterKeyRejected as exc:
        log.error("refusing to start: %s", exc)
        raise RuntimeError(f"refusing to start: {exc}") from None
    except httpx.HTTPError as exc:
        log.warning(
            "could not check LITELLM_MASTER_KEY against the proxy (%s); starting anyway",
            type(exc).__name__,
        )


async def start(ctx: dict[str, Any], settings: Settings, http: httpx.AsyncClient) -> None:
    """From the worker's startup: check the key, then start the heartbeat and the health port."""
    await verify_master_key(settings, http)
    health = Health(settings)
    ctx["health"] = health
    health.beater = asyncio.create_task(_beat(health))
    if settings.is_development:
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGUSR1, _block_loop, settings.worker_health_block_seconds
        )
    if settings.worker_health_port is None:
        return
    health.redis_client = redis.Redis.from_url(
        settings.effective_redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
    )
    server = ThreadingHTTPServer(
        (settings.worker_health_host, settings.worker_health_port), _handler(health)
    )
    server.daemon_threads = True
    health.server = server
    threading.Thread(target=server.serve_forever, name="worker-health", daemon=True).start()
    log.info("worker health port", extra={"port": server.server_address[1]})


async def job_started(ctx: dict[str, Any]) -> None:
    """arq's `on_job_start`: remember the last task picked."""
    health: Health | None = ctx.get("health")
    if health is not None:
        health.last_task_id = str(ctx.get("job_id"))
        health.last_task_at = time.monotonic()
        health.tasks_started += 1


async def stop(ctx: dict[str, Any]) -> None:
    """From the worker's shutdown."""
    health: Health | None = ctx.get("health")
    if health is None:
        return
    if health.beater is not None:
        health.beater.cancel()
    if health.server is not None:
        await asyncio.to_thread(health.server.shutdown)
        health.server.server_close()
    if health.redis_client is not None:
        health.redis_client.close()
