"""A webhook sink for benchmarks, in its own process so that the benchmark's own load does not
delay it: records (job id, arrival time) of every POST; `GET /arrivals` returns them (`?job_type=`
only that run's), `GET /wait/{job_id}` answers once that job's webhook has arrived and `GET
/wait-count/{job_type}?n=N` once N webhooks of jobs of that type have (204; 504 after `timeout`
seconds), so a benchmark can wait for its jobs' ends without polling the API, or the sink, during
them: a poll of every arrival so far every 50 ms cost the benchmark's process ~5 ms of CPU per
job, on the cores the platform it measures runs on."""

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
by_type: dict[str, list[tuple[str, str, float]]] = {}
jobs_by_type: dict[str, set[str]] = {}
counted = asyncio.Condition()


async def receive(request: Request) -> Response:
    at = time.time()
    data = json.loads(await request.body()).get("data", {})
    job_id = data.get("id", "")
    job_type = data.get("job_type") or ""
    arrivals.append((job_id, job_type, at))
    by_type.setdefault(job_type, []).append((job_id, job_type, at))
    jobs_by_type.setdefault(job_type, set()).add(job_id)
    arrived.setdefault(job_id, asyncio.Event()).set()
    async with counted:
        counted.notify_all()
    return Response(status_code=204)


async def wait_for(request: Request) -> Response:
    event = arrived.setdefault(request.path_params["job_id"], asyncio.Event())
    try:
        await asyncio.wait_for(event.wait(), float(request.query_params.get("timeout", "60")))
    except TimeoutError:
        return Response(status_code=504)
    return Response(status_code=204)


async def wait_count(request: Request) -> Response:
    """Answer once `n` webhooks of jobs of this `job_type` have arrived (distinct jobs)."""
    job_type, n = request.path_params["job_type"], int(request.query_params.get("n", "1"))

    def enough() -> bool:
        return len(jobs_by_type.get(job_type, ())) >= n

    try:
        async with counted:
            await asyncio.wait_for(
                counted.wait_for(enough), float(request.query_params.get("timeout", "300"))
            )
    except TimeoutError:
        return Response(status_code=504)
    return Response(status_code=204)


async def list_arrivals(request: Request) -> JSONResponse:
    job_type = request.query_params.get("job_type")
    return JSONResponse(arrivals if job_type is None else by_type.get(job_type, []))


app = Starlette(
    routes=[
        Route("/", receive, methods=["POST"]),
        Route("/arrivals", list_arrivals),
        Route("/wait/{job_id}", wait_for),
        Route("/wait-count/{job_type}", wait_count),
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
