"""A TLS front for a plain TCP server (here: Redis), like a managed Redis's `rediss://` port.

    python -m tests.fakes.tls_tunnel --port 16380 --target 127.0.0.1:6379 --cert c.pem --key k.pem

Each accepted TLS connection is logged as `tls connection N`, so a test can see its client
really spoke TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys

count = 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def main(port: int, target: str, cert: str, key: str) -> None:
    host, _, target_port = target.rpartition(":")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        global count
        count += 1
        print(f"tls connection {count}", flush=True)
        up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.target, args.cert, args.key))
    except KeyboardInterrupt:
        sys.exit(0)
