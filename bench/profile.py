"""Sampling profiles of the platform's processes (py-spy), summarised by where the time goes.

`Profiler(pid, path)` runs `py-spy record --format raw` against a process until `stop()`; the raw
file has one line per distinct stack (`frame;frame;... count`, root first). `summarise(path)`
attributes each sample to the innermost frame that belongs to a known layer (SQLAlchemy, asyncpg,
httpx, Redis, the event loop, ...) and prints the share of busy samples per layer, plus the
platform functions most often on the stack. Usage on its own:
    python -m bench.profile FILE.txt [FILE.txt ...]
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Innermost match wins; order only matters for frames matching several.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("/logging/", "shared/logs.py", "pythonjsonlogger")),
    ("json (de)serialisation", ("/json/", "orjson", "shared/queue.py:serialize")),
    ("pydantic", ("pydantic/", "pydantic_core")),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("asyncpg (driver)", ("asyncpg/",)),
    (
        "HTTP clients (httpx, aiohttp)",
        ("httpx/", "httpcore/", "h11/", "aiohttp/", "yarl/", "multidict/"),
    ),
    ("anyio (Starlette streams, httpx backend)", ("anyio/",)),
    ("redis / arq", ("redis/", "arq/", "hiredis")),
    ("litellm", ("litellm/",)),
    ("FastAPI / Starlette", ("fastapi/", "starlette/")),
    ("uvicorn (HTTP server)", ("uvicorn/", "httptools")),
    ("event loop (asyncio/uvloop)", ("asyncio/", "uvloop")),
    ("platform code", ("(shared/", "(api/", "(worker/", "/shared/", "/api/", "/worker/")),
)
# A sample whose innermost frame waits in the selector (or, under uvloop, is inside its C loop
# with no Python frame above Runner.run) is idle, whatever the OS said.
IDLE = ("selectors.py", "epoll", "uv_run", "Runner.run (asyncio/runners.py")


PLATFORM = ("(shared/", "(api/", "(worker/", "/shared/", "/api/", "/worker/")


def _short(frame: str) -> str:
    """`fn (/long/path/shared/llm/runner.py:12)` -> `fn (shared/llm/runner.py)`."""
    name, _, where = frame.partition(" (")
    where = re.sub(r":\d+\)$", "", where)
    for root in ("/shared/", "/api/", "/worker/"):
        if root in where:
            where = root.strip("/") + "/" + where.split(root, 1)[1]
            break
    return f"{name} ({where})"


class Profiler:
    """py-spy recording one process into a raw (collapsed-stack) file until stopped."""

    def __init__(self, pid: int, path: Path, *, rate: int = 200) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.path = path
        self.proc = subprocess.Popen(
            [
                *(exe, "record", "--format", "raw", "--rate", str(rate), "--nonblocking"),
                *("--output", str(path), "--pid", str(pid)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> Path:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.path


def _layer(frame: str) -> str | None:
    for name, needles in LAYERS:
        if any(n in frame for n in needles):
            return name
    return None


def summarise(path: Path, top: int = 12) -> str:
    layers: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        if any(n in frames[-1] for n in IDLE):
            idle += count
            continue
        total += count
        for frame in reversed(frames):
            if (layer := _layer(frame)) is not None:
                layers[layer] += count
                break
        else:
            layers["other"] += count
        seen = {
            _short(frame)
            for frame in frames
            if any(p in frame for p in PLATFORM) and "site-packages" not in frame
        }
        for name in seen:
            functions[name] += count
    if not total:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {total} busy samples ({idle} more idle in the selector, left out)"]
    out += [f"  {n * 100 / total:5.1f} %  {name}" for name, n in layers.most_common()]
    out.append("  platform functions on the stack (inclusive):")
    out += [f"  {n * 100 / total:5.1f} %  {name}" for name, n in functions.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summarise(Path(arg)))
