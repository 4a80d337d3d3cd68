"""Progress lines on stderr: done/total partitions, rows, rate and ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "partitions",
        enabled: bool = True,
        interval_s: float = 10.0,
        stream: TextIO | None = None,
    ):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else interval_s
        self.done = 0
        self.rows = 0
        self.start = time.monotonic()
        self.last = 0.0

    def advance(self, count: int = 1, rows: int = 0) -> None:
        self.done += count
        self.rows += rows
        now = time.monotonic()
        if self.done >= self.total or now - self.last >= self.interval:
            self.last = now
            self._print(now)

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        rows = f", {self.rows:,} rows ({self.rows / elapsed:,.0f}/s)" if self.rows and elapsed else ""
        return (
            f"[{self.label}] {self.done:,}/{self.total:,} {self.unit}{rows}, "
            f"elapsed {_clock(elapsed)}, ETA {_clock(eta)}"
        )

    def _print(self, now: float) -> None:
        if not self.enabled:
            return
        end = "\n" if (not self.tty or self.done >= self.total) else ""
        prefix = "\r" if self.tty else ""
        print(prefix + self.line(now), end=end, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(f"[{self.label}] {text}", file=self.stream, flush=True)
