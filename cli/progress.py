"""A plain-text progress bar on stderr for `jobs submit --wait` (no dependencies)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from saas_llm_client import Job


class ProgressBar:
    """Redraws one line on a terminal; elsewhere prints a line each time the counts change."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last = ""

    def render(self, job: Job) -> str:
        counts = job.request_counts
        total = max(counts.total, 1)
        filled = round(self.width * counts.done / total)
        bar = "#" * filled + "." * (self.width - filled)
        extra = f", {counts.failed} failed" if counts.failed else ""
        return (
            f"[{bar}] {counts.done}/{counts.total} calls done "
            f"({counts.running} running{extra}) {job.status} {time.monotonic() - self.started:.1f}s"
        )

    def __call__(self, job: Job) -> None:
        line = self.render(job)
        key = line.rsplit(" ", 1)[0]  # elapsed time alone is no change
        if self.tty:
            self.stream.write("\r" + line)
        elif key != self._last:
            self.stream.write(line + "\n")
        self._last = key
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
