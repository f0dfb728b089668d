"""A webhook sink for benchmarks, in its own process so that the benchmark's own load does not
delay it: records (job id, arrival time) of every POST; `GET /arrivals` returns them, and
`GET /wait/{job_id}` answers once that job's webhook has arrived (204; 504 after `timeout`
seconds), so a benchmark can wait for a job's end without polling the API during it."""

from __future__ import annotations

import argparse
import asyncio
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
arrived: dict[str, asyncio.Event] = {}


async def receive(request: Request) -> Response:
    at = time.time()
    data = json.loads(await request.body()).get("data", {})
    job_id = data.get("id", "")
    arrivals.append((job_id, data.get("job_type") or "", at))
    arrived.setdefault(job_id, asyncio.Event()).set()
    return Response(status_code=204)


async def wait_for(request: Request) -> Response:
    event = arrived.setdefault(request.path_params["job_id"], asyncio.Event())
    try:
        await asyncio.wait_for(event.wait(), float(request.query_params.get("timeout", "60")))
    except TimeoutError:
        return Response(status_code=504)
    return Response(status_code=204)


async def list_arrivals(request: Request) -> JSONResponse:
    return JSONResponse(arrivals)


app = Starlette(
    routes=[
        Route("/", receive, methods=["POST"]),
        Route("/arrivals", list_arrivals),
        Route("/wait/{job_id}", wait_for),
    ]
)


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
