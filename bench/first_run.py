"""Time from `saas-llm up` to the first finished job, cold (empty data folder) and warm (second
start on the same folder), and the resident memory of each process at idle.

    .venv/bin/python bench/first_run.py [--keep DIR]

Runs with DATABASE_URL/REDIS_URL unset (embedded PostgreSQL and Redis) on free ports, and submits
one job to the offline `demo` model through the Python client.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli.stack import free_port
from saas_llm_client import Client, request

SAAS_LLM = Path(sys.executable).parent / "saas-llm"
KEY = re.compile(r"^Demo key: (sk-\S+)$", re.M)
UNSET = ("DATABASE_URL", "REDIS_URL", "REDIS_HOST", "LITELLM_MASTER_KEY", "ADMIN_API_KEY")
NAMES = (
    ("postgres", "postgres"),
    ("valkey-server", "redis"),
    ("litellm", "proxy"),
    ("uvicorn", "api"),
    ("arq", "worker"),
)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages split between their users (so sums do not double count)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, cmdline) for every process."""
    out: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (
                (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except (OSError, IndexError, ValueError):
            continue
        out[int(stat.parent.name)] = (ppid, cmd)
    return out


def tree_rss(root: int, table: dict[int, tuple[int, str]]) -> tuple[int, int, int]:
    """(RSS of `root`, RSS and PSS of `root` with all its descendants) in KiB."""
    rss, pss, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        try:
            rss += rss_kb(pid)
            pss += pss_kb(pid)
        except OSError:
            pass
        stack += [p for p, (pp, _) in table.items() if pp == pid]
    return rss_kb(root), rss, pss


def run_once(folder: Path, ports: dict[str, int], label: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    argv = [str(SAAS_LLM), "up"] + [
        arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))
    ]
    out_path = folder / f"{label}.out"
    started = time.monotonic()
    with out_path.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = started + 300
    while not (found := KEY.search(out_path.read_text(errors="replace"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"up failed:\n{out_path.read_text()}")
        time.sleep(0.05)
    key_at = time.monotonic() - started
    with Client(f"http://127.0.0.1:{ports['api']}", found.group(1)) as client:
        job = client.submit([request("demo", "Say hello")])
        done = client.wait(job.id, timeout=60, poll_interval=0.05)
    total = time.monotonic() - started
    assert done.status == "succeeded", done.raw
    print(f"{label:5} up -> key printed {key_at:5.1f}s, -> first job done {total:5.1f}s")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", help="use this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="saas-llm-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("api", "proxy", "pg", "redis")}

    cold = run_once(folder, ports, "cold")
    cold.send_signal(signal.SIGINT)
    cold.wait(60)
    warm = run_once(folder, ports, "warm")
    time.sleep(3)  # let the processes settle to idle before reading memory
    table = processes()
    print(f"\nat idle (KiB)          {'VmRSS':>9} {'+children':>10} {'PSS+ch.':>9}")
    grand = rss_kb(warm.pid)
    grand_pss = pss_kb(warm.pid)
    print(f"  {'saas-llm up':20} {grand:9d} {grand:10d} {grand_pss:9d}")
    for pid, (ppid, cmd) in sorted(table.items()):
        if ppid != warm.pid:
            continue
        name = next((n for needle, n in NAMES if needle in cmd), cmd[:20])
        own, total, pss = tree_rss(pid, table)
        grand += total
        grand_pss += pss
        print(f"  {name:20} {own:9d} {total:10d} {pss:9d}")
    print(f"  {'total':20} {'':9} {grand:10d} {grand_pss:9d}")
    print(f"  ({grand / 1024:.0f} MiB summed RSS, {grand_pss / 1024:.0f} MiB PSS)")
    warm.send_signal(signal.SIGINT)
    warm.wait(60)
    print(f"\ndata folder: {folder / '.saas-llm'}")


if __name__ == "__main__":
    main()
