"""A total deadline per request, enforced even against servers that dribble bytes.

A socket timeout only bounds each recv; a server sending one byte a second never trips it. The
reaper thread shuts down the socket of any request whose deadline passed, which makes the
blocked recv return at once, whatever the server does.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class Deadline:
    """A budget of seconds that runs while a request is in progress and can be paused (while the
    request waits for its host's token bucket between redirects, which is politeness, not the
    server's slowness)."""

    def __init__(self, budget_s: float, clock=time.monotonic):
        self.clock = clock
        self.budget_s = budget_s
        self._spent = 0.0
        self._since: float | None = clock()

    def spent(self) -> float:
        running = 0.0 if self._since is None else self.clock() - self._since
        return self._spent + running

    def remaining(self) -> float:
        return self.budget_s - self.spent()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def end(self) -> float | None:
        """Monotonic time at which the budget runs out, None while paused."""
        return None if self._since is None else self._since + self.budget_s - self._spent

    @contextmanager
    def paused(self) -> Iterator[None]:
        if self._since is None:
            yield
            return
        self._spent += self.clock() - self._since
        self._since = None
        try:
            yield
        finally:
            self._since = self.clock()


class Watch:
    __slots__ = ("sock", "fired", "active")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fired = False
        self.active = True


class Reaper:
    """One daemon thread per process: shuts down sockets whose deadline passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, end: float) -> Watch:
        item = Watch(sock)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="deadline-reaper", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (end, next(self._counter), item))
            self._cond.notify()
        return item

    def unwatch(self, item: Watch) -> None:
        with self._cond:
            item.active = False

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                end, _, item = self._heap[0]
                delay = end - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                item.fired = True
                item.active = False
            with suppress(OSError):
                item.sock.shutdown(socket.SHUT_RDWR)


REAPER = Reaper()
