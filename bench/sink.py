"""A webhook sink for benchmarks, in its own process so that the benchmark's own load does not
delay it: records (job id, arrival time) of every POST; `GET /arrivals` returns them."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cli.stack import Proc, free_port, spawn

arrivals: list[tuple[str, str, float]] = []


async def receive(request: Request) -> Response:
    at = time.time()
    data = json.loads(await request.body()).get("data", {})
    arrivals.append((data.get("id", ""), data.get("job_type") or "", at))
    return Response(status_code=204)


async def list_arrivals(request: Request) -> JSONResponse:
    return JSONResponse(arrivals)


app = Starlette(routes=[Route("/", receive, methods=["POST"]), Route("/arrivals", list_arrivals)])


def start_sink(log_dir: Path) -> tuple[Proc, str]:
    """The sink in a process of its own on a free loopback port; returns it and its URL."""
    port = free_port()
    proc = spawn(
        "sink", [sys.executable, "-m", "bench.sink", "--port", str(port)], dict(os.environ), log_dir
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/arrivals")
    return proc, url


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
