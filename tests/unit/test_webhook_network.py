"""Webhook sending against real sockets: the name lookup runs on the event loop under a
deadline, answers are never decompressed, and pools are keyed by host name and pinned address."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.config import Settings
from shared.webhooks.delivery import BODY_LOG_BYTES, PinnedTransport, WebhookSender, send

BOMB = gzip.compress(b"A" * 1_000_000)  # ~1 KB on the wire, 1 MB decoded


class Server:
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.body = b"ok"
        self.headers: dict[str, str] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                for k, v in outer.headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def silent_nameserver() -> Iterator[str]:
    """A UDP socket that receives DNS queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_a_compressed_answer_is_kept_raw_and_capped_never_decoded(server: Server) -> None:
    server.body = BOMB
    server.headers = {"content-encoding": "gzip", "content-type": "text/plain"}

    async def run() -> None:
        sender = WebhookSender(Settings(environment="test"))
        try:
            result = await send(
                sender,
                f"http://127.0.0.1:{server.port}/hook",
                "{}",
                {},
                timeout_seconds=5,
                allow_private=True,
            )
        finally:
            await sender.aclose()
        assert result.status_code == 200
        body = result.response_body or ""
        assert "AAAA" not in body  # not decompressed
        assert len(body.encode("utf-8", errors="surrogatepass")) <= 3 * BODY_LOG_BYTES
        assert body.startswith("\x1f")  # the gzip magic number, as sent
        raw_prefix = BOMB[:BODY_LOG_BYTES].decode("utf-8", errors="replace").replace("\x00", "")
        assert body == raw_prefix

    asyncio.run(run())
    assert server.requests[0]["accept-encoding"] == "identity"


def test_pools_are_keyed_by_host_name_and_pinned_address(server: Server) -> None:
    async def run() -> PinnedTransport:
        sender = WebhookSender(Settings(environment="test"))
        transport = sender.http._transport
        assert isinstance(transport, PinnedTransport)
        for host in ("localhost", "127.0.0.1", "localhost"):
            result = await send(
                sender,
                f"http://{host}:{server.port}/",
                "{}",
                {},
                timeout_seconds=5,
                allow_private=True,
            )
            assert result.ok, result
        keys = set(transport._pools)
        await sender.aclose()
        assert keys == {
            ("http", "localhost", server.port, "127.0.0.1"),
            ("http", "127.0.0.1", server.port, "127.0.0.1"),
        }
        return transport

    asyncio.run(run())
    # the pinned connection still told the server the host name it was sent to
    assert [r["host"] for r in server.requests] == [
        f"localhost:{server.port}",
        f"127.0.0.1:{server.port}",
        f"localhost:{server.port}",
    ]


def test_a_hanging_dns_lookup_times_out_inside_the_attempt_and_blocks_nothing(
    server: Server, silent_nameserver: str
) -> None:
    settings = Settings(
        environment="test",
        webhook_dns_nameservers=silent_nameserver,
        webhook_dns_timeout_seconds=3,
    )

    async def run() -> None:
        sender = WebhookSender(settings)
        try:
            hanging = [
                asyncio.create_task(
                    send(
                        sender,
                        f"http://hang-{i}.invalid-dns.test/",
                        "{}",
                        {},
                        timeout_seconds=10,
                        allow_private=True,
                    )
                )
                for i in range(40)  # far more than the default executor's threads
            ]
            # while all of them wait on DNS, another host's delivery goes through at once
            other = await send(
                sender,
                f"http://localhost:{server.port}/",
                "{}",
                {},
                timeout_seconds=10,
                allow_private=True,
            )
            assert other.ok
            assert not any(task.done() for task in hanging)
            results = await asyncio.gather(*hanging)
        finally:
            await sender.aclose()
        for result in results:
            assert result.status_code is None and not result.refused
            assert "DNS lookup of hang-" in (result.error or "")
            assert "timed out after 3s" in (result.error or "")

    asyncio.run(run())
