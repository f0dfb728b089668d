"""What an idle worker costs at each arq poll delay (`WORKER_POLL_DELAY_SECONDS`): the CPU share
of one core, read from /proc over `--seconds`, with nothing queued. The poll delay is also what a
call waits, on average half of it, between its enqueue and its start at light load (P2).

    python -m bench.poll_idle [--delays 0.05,0.01,0.005] [--seconds 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench.throughput import cpu_seconds
from cli.stack import start_worker
from tests.harness import create_database, drop_database, platform_env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--delays", default="0.05,0.01,0.005", help="poll delays in seconds")
    parser.add_argument("--seconds", type=float, default=20.0, help="idle time measured")
    args = parser.parse_args()
    db = create_database("saasllm_idle_")
    log_dir = Path(tempfile.mkdtemp(prefix="saas-llm-idle-"))
    try:
        print("| poll delay s | idle worker CPU, % of a core |\n|---:|---:|")
        for delay in args.delays.split(","):
            # No proxy is needed: an idle worker never calls it (its health check only logs).
            env = platform_env(db, "saas-llm-idle:" + uuid.uuid4().hex[:6], "http://127.0.0.1:9")
            env["WORKER_POLL_DELAY_SECONDS"] = delay
            worker = start_worker(env, log_dir, name=f"worker-{delay}")
            try:
                # Start-up work (LiteLLM's token counter, the first passes) is not idleness.
                worker.wait_log("token counter ready", timeout=180)
                before = cpu_seconds(worker)
                started = time.monotonic()
                time.sleep(args.seconds)  # the measurement itself: an interval of idleness
                share = (cpu_seconds(worker) - before) / (time.monotonic() - started)
                print(f"| {delay} | {share * 100:.2f} |")
            finally:
                worker.stop()
    finally:
        drop_database(db)


if __name__ == "__main__":
    main()
