"""The garbage collector and a long-lived process's start-up heap.

An API or worker process imports SQLAlchemy, FastAPI, pydantic and (for the worker) LiteLLM:
hundreds of thousands of objects that live as long as the process. CPython's collector walks
all of them in every full (oldest-generation) collection, which it runs whenever enough
objects have survived since the last one: in a worker that was a pause of 200-360 ms on the
event loop every few hundred jobs (`bench/README.md`, "The collector's pauses"), during which
no call starts, ends or renews its lease.

`freeze_heap` moves everything alive at the end of start-up into the permanent generation
(`gc.freeze`, the approach CPython documents for this case): the collector no longer walks it,
and a full collection walks only what the process allocated since. Objects frozen are still
freed when their last reference goes; only a cycle among them would outlive its use, and
start-up objects live for the process anyway.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("saas_llm")


def freeze_heap(what: str) -> int:
    """Collect once, then freeze every object alive now; returns how many were frozen."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info(
        "start-up heap frozen",
        extra={
            "after": what,
            "objects": frozen,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return frozen
