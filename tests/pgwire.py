"""A loopback relay to PostgreSQL that counts a client's round trips and names its statements.

A round trip is a message after which the client waits for the server: a simple query (`Q`:
asyncpg's BEGIN, COMMIT, ROLLBACK) or a `Sync` closing an extended-protocol statement. Each
statement is named by its SQL (from its `Parse` message, remembered per connection for the
prepared statements asyncpg binds again later). The relay refuses TLS (it must read the
messages), so clients connect through it in the clear, on loopback only.

Used by `bench.round_trips` and by the test that keeps the hot paths' round trips bounded.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104


class WireCounter:
    """A loopback relay to Postgres that counts the client's round trips and statements."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.round_trips = 0
        self.statements: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    def start(self) -> int:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)
        return self.port

    def reset(self) -> None:
        self.round_trips = 0
        self.statements = Counter()

    def route(self, database_url: str) -> str:
        """`database_url` (a server on loopback) through this relay."""
        parts = urlsplit(database_url)
        assert parts.hostname in ("127.0.0.1", "localhost"), database_url
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        back = asyncio.ensure_future(self._pipe(up_reader, writer))
        try:
            await self._client_side(reader, writer, up_writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            back.cancel()
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _client_side(
        self,
        reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
        upstream: asyncio.StreamWriter,
    ) -> None:
        names: dict[bytes, str] = {}  # prepared statement name -> its SQL, on this connection
        pending: list[str] = []  # statements of the extended-protocol batch before its Sync
        while True:  # the startup phase: messages without a type byte
            head = await reader.readexactly(4)
            (length,) = struct.unpack("!i", head)
            payload = await reader.readexactly(length - 4)
            code = struct.unpack("!i", payload[:4])[0]
            if code in (SSL_REQUEST, GSS_REQUEST):
                client.write(b"N")  # no encryption: the relay must read the messages
                await client.drain()
                continue
            upstream.write(head + payload)
            break
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            payload = await reader.readexactly(length - 4)
            upstream.write(head + payload)
            await upstream.drain()
            if kind == b"Q":
                self.round_trips += 1
                self.statements[_label(payload.rstrip(b"\0").decode(errors="replace"))] += 1
            elif kind == b"P":
                name, _, rest = payload.partition(b"\0")
                sql = rest.split(b"\0", 1)[0].decode(errors="replace")
                if name:
                    names[name] = sql
                else:
                    pending.append(sql)
            elif kind == b"B":
                _portal, _, rest = payload.partition(b"\0")
                name = rest.split(b"\0", 1)[0]
                if name:
                    pending.append(names.get(name, "?"))
            elif kind == b"S":
                self.round_trips += 1
                for sql in pending or ["(sync)"]:
                    self.statements[_label(sql)] += 1
                pending = []
            elif kind == b"X":
                return


def _label(sql: str) -> str:
    words = " ".join(sql.split())
    return words[:110]
