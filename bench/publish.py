"""The CPU of a job wake-up in the process that sends it: a PUBLISH awaited after each commit
(the after-commit hook as it was, through `asyncio.wait_for`) against `shared.queue.Publisher`
(noted, sent by a task as one pipeline per turn of the event loop), in one process, alternating.

`--together K`: K wake-ups become due in the same turn of the loop (K commits answered by
Postgres in one read of the event loop, as under load); 1 is light load. Figures: this process's
CPU (user + system, getrusage) per wake-up, best of `--rounds`, and the ratio; Redis' own CPU is
not in it. Every PUBLISH goes to a channel nobody listens on.

    python -m bench.publish [-n 3000] [--together 1,4,16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import uuid

import uvloop

from shared.config import Settings
from shared.queue import Publisher, create_queue, job_channel
from tests.harness import REDIS_URL


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(n: int, together: list[int], rounds: int) -> None:
    settings = Settings(redis_url=REDIS_URL, worker_queue_name="saas-llm-bench-publish")
    queue = await create_queue(settings)
    publisher = Publisher(queue)
    channels = [job_channel(settings, f"job_{uuid.uuid4().hex}") for _ in range(64)]

    async def awaited(channel: str) -> None:
        # what `notify_job` did, run as `run_after_commit` ran it
        async def publish() -> None:
            await queue.publish(channel, "changed")

        await asyncio.wait_for(publish(), timeout=5)

    async def noted(channel: str) -> None:
        publisher.publish(channel)

    async def run(way: str, k: int) -> float:
        hook = awaited if way == "awaited" else noted
        start = _cpu()
        for i in range(0, n, k):
            # k commits that end in the same turn, each running its hook
            await asyncio.gather(*(hook(channels[(i + j) % 64]) for j in range(k)))
            await publisher.aclose()  # the noted ones sent before the next batch
        return (_cpu() - start) / n * 1e6

    try:
        await run("awaited", 4)  # warm both
        await run("noted", 4)
        print(f"CPU per job wake-up, µs (best of {rounds} alternating rounds, {n} each)")
        print(f"{'together':>8} | {'awaited':>8} | {'Publisher':>9} | ratio")
        for k in together:
            best = {"awaited": float("inf"), "noted": float("inf")}
            for _ in range(rounds):
                for way in best:
                    best[way] = min(best[way], await run(way, k))
            print(
                f"{k:>8} | {best['awaited']:8.1f} | {best['noted']:9.1f} | "
                f"{best['noted'] / best['awaited']:.2f}"
            )
        print(
            f"(pipelines sent by the Publisher: {publisher.sends}, PUBLISHes in them: "
            f"{publisher.published})"
        )
    finally:
        await queue.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--together", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(main(args.n, [int(k) for k in args.together.split(",")], args.rounds))
