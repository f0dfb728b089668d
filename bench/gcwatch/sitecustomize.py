"""The collector's pauses in every Python process started with this directory on PYTHONPATH.

    GCWATCH_DIR=/tmp/gc PYTHONPATH=bench/gcwatch python -m bench.throughput ...
    python -m bench.gcwatch /tmp/gc

Python imports `sitecustomize` at start-up from the path, so the API, the workers and the proxy
that a benchmark starts each time every collection (`gc.callbacks`) and, at a normal exit,
write `<pid>.json` to `GCWATCH_DIR`: each full collection's pause in ms, the objects it walked
(`gc.get_objects(2)` once it ended) and the frozen ones (`gc.get_freeze_count`). A process
stopped by SIGKILL writes nothing. Without `GCWATCH_DIR` it does nothing.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from typing import Any

_DIR = os.environ.get("GCWATCH_DIR")


def _install(out_dir: str) -> None:
    started: list[float] = [0.0]
    pauses: list[tuple[int, float]] = []
    full: list[dict[str, Any]] = []

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        pauses.append((info["generation"], ms))
        if info["generation"] == 2:
            full.append(
                {
                    "at_s": round(time.monotonic() - t0, 1),
                    "ms": round(ms, 1),
                    "walked": len(gc.get_objects(2)),
                    "frozen": gc.get_freeze_count(),
                }
            )

    def dump() -> None:
        by_generation = {}
        for generation in (0, 1, 2):
            ms = sorted(m for g, m in pauses if g == generation)
            if ms:
                by_generation[generation] = {
                    "n": len(ms),
                    "max_ms": round(ms[-1], 1),
                    "sum_ms": round(sum(ms), 1),
                }
        record = {"argv": " ".join(sys.argv)[:120], "by_generation": by_generation, "full": full}
        with open(os.path.join(out_dir, f"{os.getpid()}.json"), "w") as f:
            json.dump(record, f)

    t0 = time.monotonic()
    gc.callbacks.append(timed)
    atexit.register(dump)


if _DIR:
    os.makedirs(_DIR, exist_ok=True)
    _install(_DIR)
