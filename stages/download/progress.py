"""Progress of one long partition, printed by the worker that runs it.

A partition is one host's batch: at a polite 10 requests/s, 10,000 rows take a quarter of an
hour, during which the driver's partition counter does not move. The worker prints a line every
`interval_s` (to its stderr: the terminal for a local cluster, the job log on Slurm); a partition
that ends within the first interval prints nothing.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RowProgress:
    def __init__(self, label: str, total: int, interval_s: float, enabled: bool = True,
                 stream: TextIO | None = None, clock=time.monotonic):  # fmt: skip
        self.label, self.total = label, total
        self.interval_s, self.enabled = interval_s, enabled
        self.stream = stream or sys.stderr
        self.clock = clock
        self.start = self.last = clock()
        self.statuses: Counter[str] = Counter()

    def decided(self, status: str) -> None:
        self.statuses[status] += 1

    def line(self, now: float) -> str:
        done = sum(self.statuses.values())
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - done) / rate) if rate > 0 else "?"
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.statuses.items()))
        return (f"[{self.label}] {done:,}/{self.total:,} rows decided ({counts or 'none yet'}), "
                f"{rate:,.1f} rows/s, elapsed {_clock(elapsed)}, ETA {eta}")  # fmt: skip

    def tick(self) -> None:
        """Print a line if the interval has passed since the last one (or the start)."""
        now = self.clock()
        if self.enabled and now - self.last >= self.interval_s:
            self.last = now
            print(self.line(now), file=self.stream, flush=True)
