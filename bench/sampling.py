"""What the benchmarks measure of the processes they start: RSS and CPU of a process tree,
sampled from a thread, CPU seconds of this process and its reaped children, and the work folder."""

from __future__ import annotations

import contextlib
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Proc:
    """What sampling saw of one process of the tree."""

    started: float  # epoch seconds
    peak_rss: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (epoch seconds, CPU seconds)

    def cpu_at(self, when: float) -> float:
        """User + system seconds at the last sample taken by `when`."""
        return max((cpu for at, cpu in self.samples if at <= when), default=0.0)


class TreeSampler:
    """Samples RSS and CPU of a process and (unless `descendants` is false) all its descendants
    every `interval` seconds; `peak` is the largest summed RSS seen."""

    def __init__(self, pid: int, interval: float = 0.1, descendants: bool = True):
        self.pid, self.interval, self.descendants = pid, interval, descendants
        self.peak = 0
        self.procs: dict[int, Proc] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            with contextlib.suppress(psutil.Error):
                tree = [root, *root.children(recursive=True)] if self.descendants else [root]
                for proc in tree:
                    with contextlib.suppress(psutil.Error), proc.oneshot():
                        seen = self.procs.setdefault(proc.pid, Proc(proc.create_time()))
                        rss, times = proc.memory_info().rss, proc.cpu_times()
                        seen.peak_rss = max(seen.peak_rss, rss)
                        seen.samples.append((time.time(), times.user + times.system))
                        total += rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def finish(self, launched: float | None = None) -> int:
        """Stop; returns the peak. With `launched` (epoch seconds), shift start times so that the
        root process started then (psutil's start times rest on the boot time in whole seconds:
        up to 1 s off time.time())."""
        self._stop.set()
        self._thread.join()
        if launched is not None and self.pid in self.procs:
            shift = self.procs[self.pid].started - launched
            for proc in self.procs.values():
                proc.started -= shift
        return self.peak


def children_cpu() -> float:
    """User + system seconds of this process's reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    """User + system seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def workdir(path: Path | None, prefix: str) -> Iterator[Path]:
    """`path` (created, kept) or a temporary folder removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
