"""The whole machine's CPU during a measurement, by who spends it (Linux /proc).

`python -m bench.throughput` reads the API's, the worker's and the proxy's CPU per job; on a
2-core box the rest of a job's cost runs on the same cores: the Postgres server's processes, the
Redis server, the benchmark's own client (this process, its threads and its webhook sink) and
the fake provider. `Box.read()` takes all of them at once, so that a run can say what a job
costs the whole machine and what rate the machine could reach at best (cores / CPU per job);
and the share of the window the hypervisor gave to other machines (steal), which is why the same
run's figures move between runs.

Postgres' CPU is its live processes' plus what its exited backends used (the postmaster's
`cutime`/`cstime`, which the kernel adds when it reaps a child), so a connection closed during
the window is still counted.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
SERVICES = {"postgres": "postgres", "redis-server": "redis"}


def _stat(pid: str) -> tuple[str, list[str]] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    return comm, raw[raw.rindex(")") + 2 :].split()


def _ticks(fields: list[str]) -> int:
    """utime + stime of a `_stat` reading, in clock ticks."""
    return int(fields[11]) + int(fields[12])


def pid_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far; FileNotFoundError once it has gone."""
    read = _stat(str(pid))
    if read is None:
        raise FileNotFoundError(f"/proc/{pid}/stat")
    return _ticks(read[1]) / TICK


def services_cpu() -> dict[str, float]:
    """CPU seconds so far of the Postgres and Redis servers on this machine (all their
    processes)."""
    totals = dict.fromkeys(SERVICES.values(), 0.0)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        read = _stat(pid)
        if read is None or read[0] not in SERVICES:
            continue
        comm, fields = read
        # utime, stime; and for the postmaster (its parent is not a postgres process) the
        # reaped children's cutime, cstime.
        seconds = _ticks(fields)
        parent = _stat(fields[1])
        if comm == "postgres" and (parent is None or parent[0] != "postgres"):
            seconds += int(fields[13]) + int(fields[14])
        totals[SERVICES[comm]] += seconds / TICK
    return totals


def machine_ticks() -> tuple[int, int]:
    """(all CPU ticks, steal ticks) of the machine so far, from /proc/stat's `cpu` line."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    return sum(fields[:8]), fields[7]


def self_cpu() -> float:
    """This process's CPU seconds so far, its threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Box:
    """One reading of every share of the machine's CPU a benchmark reports."""

    services: dict[str, float]
    client: float
    ticks: int
    steal: int

    @classmethod
    def read(cls, *client_pids: int) -> Box:
        """Now; `client_pids`: the benchmark's helper processes (its webhook sink)."""
        client = self_cpu()
        for pid in client_pids:
            with contextlib.suppress(FileNotFoundError):
                client += pid_cpu(pid)
        ticks, steal = machine_ticks()
        return cls(services_cpu(), client, ticks, steal)

    def per_job(self, before: Box, n: int) -> dict[str, float]:
        """ms of CPU per job since `before`: postgres, redis, client; and `steal_pct`, the
        share of the machine's time stolen meanwhile."""
        out = {
            name: (seconds - before.services[name]) * 1000 / n
            for name, seconds in self.services.items()
        }
        out["client"] = (self.client - before.client) * 1000 / n
        ticks = max(1, self.ticks - before.ticks)
        out["steal_pct"] = 100 * (self.steal - before.steal) / ticks
        return out
