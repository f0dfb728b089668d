"""What SQLAlchemy pays to compute the cache key of the hot statements from scratch, in µs
(best of 5 rounds of `-n`): the price of every execution of a statement whose key is not
kept, such as an ORM UPDATE (the ORM marks it afresh on each execution). The job's end was
one until it became a Core UPDATE loaded as `Job` rows (`shared.jobs.lifecycle._END`);
`tests/service/test_finish.py` checks that ending a job computes no key again.

    python -m bench.cache_keys [-n 300]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from shared.jobs import fairness, lifecycle
from shared.webhooks import repository as webhooks


def fresh_key_us(stmt: Any, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            stmt._annotate({"bench": True})._generate_cache_key()  # a new object, a new key
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=300)
    n = parser.parse_args().n
    statements: dict[str, Any] = {
        f"job end, team change shape {shape}{', with shares' if shares else ''}": stmt
        for (shape, shares), stmt in lifecycle._END.items()
    }
    statements["one-call finish (_FINISH_LAST)"] = lifecycle._FINISH_LAST
    statements["fair choice and claim (_CHOOSE_CLAIM)"] = fairness._CHOOSE_CLAIM
    statements["webhook claim (_CLAIM_DUE)"] = webhooks._CLAIM_DUE
    print(f"{'statement':<45} | fresh cache key µs")
    for name, stmt in statements.items():
        print(f"{name:<45} | {fresh_key_us(stmt, n):8.1f}")


if __name__ == "__main__":
    main()
