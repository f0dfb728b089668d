"""Worker CPU per call of the budget worst case before each provider request: LiteLLM's token
counter (`counted_worst_case`, what the worker reserves) against the admission's byte bound
(`worst_case`, what the API computes), for a few prompt sizes and models. Also the one-off cost
of importing litellm and loading its encodings (the worker does it in a thread at start).
Usage:
    python -m bench.worst_case [-n 2000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from shared.billing.prices import counted_worst_case, warm_counter, worst_case
from shared.models import Team

PROMPTS = {
    "1 short message": [{"role": "user", "content": "What is the capital of France?"}],
    "bench one_call (60 words)": [{"role": "user", "content": "bench-0001 " + "a " * 58}],
    "system + 4 turns, 2 KB": [
        {"role": "system", "content": "You are a careful assistant. " * 10},
        *(
            {"role": "user" if i % 2 == 0 else "assistant", "content": "Some text here. " * 25}
            for i in range(4)
        ),
    ],
    "one 20 KB document": [{"role": "user", "content": "lorem ipsum dolor sit amet " * 750}],
}
MODELS = ("gpt-4o-mini", "claude-3-5-sonnet-20241022")


def cpu_per_call(fn: Callable[[], Any], n: int) -> float:
    """Median of 5 runs of n calls, in CPU microseconds per call."""
    runs = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(n):
            fn()
        runs.append((time.process_time() - started) / n * 1e6)
    return sorted(runs)[2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    started, wall = time.process_time(), time.perf_counter()
    warm_counter()
    print(
        f"import litellm + load encodings, once per worker: {time.process_time() - started:.2f} s "
        f"CPU ({time.perf_counter() - wall:.2f} s wall)"
    )
    team = Team(id="bench", name="bench", price_markup_pct=Decimal(10), model_prices={})
    print(f"{'prompt':<28} {'model':<28} {'byte bound µs':>13} {'counter µs':>10} {'added µs':>8}")
    for name, messages in PROMPTS.items():
        for model in MODELS:
            body = {"model": model, "messages": messages, "max_tokens": 64}
            counted_worst_case(team, body)  # the model's tokenizer loaded
            n = args.n if len(str(messages)) < 5000 else max(args.n // 20, 20)
            byte = cpu_per_call(lambda b=body: worst_case(team, b), n)
            counter = cpu_per_call(lambda b=body: counted_worst_case(team, b), n)
            print(f"{name:<28} {model:<28} {byte:13.1f} {counter:10.1f} {counter - byte:8.1f}")


if __name__ == "__main__":
    main()
