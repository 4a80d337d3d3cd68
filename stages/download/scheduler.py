"""Run one partition's rows through a pool of fetch threads: retries with backoff, Retry-After,
the per-host circuit breaker, and a watchdog so that a run always ends.

The calling thread schedules; `concurrency` daemon threads each run one attempt at a time. A
retryable outcome goes back into a heap keyed by the time it may run again. The watchdog
abandons an attempt that runs past its deadline plus its announced politeness waits plus
`watchdog_grace_s` (the row is failed `timeout`; the thread is replaced and its late result
ignored), so a straggler is never waited on forever.
"""

from __future__ import annotations

import heapq
import queue
import random
import threading
import time
import traceback
from collections import defaultdict, deque
from dataclasses import dataclass, field

from stages.download import reasons as R
from stages.download.attempt import Activity, AttemptEnv, Outcome, attempt
from stages.download.circuit import HostCircuit
from stages.download.fetch import close_thread_connections
from stages.download.politeness import backoff_delay
from stages.download.progress import RowProgress
from stages.download.store import Spool

# Longest the scheduler sleeps between looks at its queues (seconds): bounds watchdog latency.
TICK_S = 0.25


@dataclass
class RowTask:
    index: int  # position in the partition
    url: str
    host: str
    prior_attempts: int = 0  # from earlier runs (retry)
    prior_log: list[str] = field(default_factory=list)
    prior_retry_after_s: float = 0.0
    attempts: int = 0  # this run
    log: list[str] = field(default_factory=list)
    retry_after_s: float = 0.0
    wait_s: float = 0.0
    first_start: float | None = None
    fetched_at_ms: int | None = None
    generation: int = 0


@dataclass
class RowFinal:
    """A decided row: its last outcome and the bookkeeping of all its attempts."""

    outcome: Outcome
    attempts: int
    log: list[str]
    retry_after_s: float
    wait_s: float
    elapsed_s: float
    fetched_at_ms: int | None
    spooled: tuple[int, int] | None = None


@dataclass
class _Slot:
    task: RowTask
    generation: int
    activity: Activity


class Scheduler:
    def __init__(
        self, tasks: list[RowTask], env: AttemptEnv, spool: Spool, progress: RowProgress | None = None
    ):
        self.env = env
        self.progress = progress
        self.settings = env.settings
        self.spool = spool
        self.tasks = {t.index: t for t in tasks}
        self.pending: deque[RowTask] = deque(tasks)
        self.retries: list[tuple[float, int]] = []  # (not_before, index)
        self.held: dict[str, list[RowTask]] = defaultdict(list)  # waiting on a suspected host
        self.final: dict[int, RowFinal] = {}
        self.final_reasons: dict[int, str | None] = {}
        self.circuits: dict[str, HostCircuit] = {}
        for task in tasks:
            circuit = self.circuits.setdefault(task.host, HostCircuit(self.settings.circuit_failures))
            circuit.rows.append(task.index)
        self.results: queue.Queue[tuple[int, int, Outcome, tuple[int, int] | None]] = queue.Queue()
        self.work: queue.Queue[_Slot | None] = queue.Queue()
        self.slots: dict[int, _Slot] = {}  # worker id -> what it runs
        self.abandoned: set[int] = set()
        self.threads: dict[int, threading.Thread] = {}
        self.rng = random.Random()
        self.lock = threading.Lock()

    # ---- worker side ---------------------------------------------------------------------------
    def _worker(self, wid: int) -> None:
        try:
            while True:
                slot = self.work.get()
                if slot is None:
                    return
                with self.lock:
                    self.slots[wid] = slot
                outcome = self._attempt(slot)
                spooled = None
                if outcome.image is not None:
                    try:
                        spooled = self.spool.append(outcome.image.jpeg)
                    except ValueError:  # spool closed: this result came too late
                        return
                    outcome.image = None
                self.results.put((slot.task.index, slot.generation, outcome, spooled))
                with self.lock:
                    self.slots.pop(wid, None)
                    if wid in self.abandoned:
                        return
        finally:
            close_thread_connections()

    def _attempt(self, slot: _Slot) -> Outcome:
        try:
            return attempt(slot.task.url, self.env, slot.activity)
        except Exception as exc:  # noqa: BLE001 - recorded on the row, never lost
            where = traceback.extract_tb(exc.__traceback__)[-1]
            detail = f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
            return Outcome(R.INTERNAL_ERROR, detail)

    def _start_worker(self) -> None:
        wid = len(self.threads)
        thread = threading.Thread(target=self._worker, args=(wid,), name=f"fetch-{wid}", daemon=True)
        self.threads[wid] = thread
        thread.start()

    # ---- scheduler side ------------------------------------------------------------------------
    def run(self) -> dict[int, RowFinal]:
        if not self.tasks:
            return {}
        workers = min(self.settings.concurrency, len(self.tasks))
        for _ in range(workers):
            self._start_worker()
        try:
            while len(self.final) < len(self.tasks):
                self._dispatch(workers)
                self._collect(self._sleep_time())
                self._watchdog(workers)
                if self.progress is not None:
                    self.progress.tick()
        finally:
            for _ in self.threads:
                self.work.put(None)
            for wid, thread in self.threads.items():
                if wid not in self.abandoned:
                    thread.join(timeout=1.0)
        return self.final

    def _busy(self) -> int:
        with self.lock:
            return self.work.qsize() + len([w for w in self.slots if w not in self.abandoned])

    def _eligible(self, task: RowTask) -> bool:
        circuit = self.circuits[task.host]
        return not circuit.suspected or circuit.frontier() == task.index

    def _next_task(self, now: float) -> RowTask | None:
        while self.retries and self.retries[0][0] <= now:
            _, index = heapq.heappop(self.retries)
            task = self.tasks[index]
            if index in self.final:
                continue
            if self._eligible(task):
                return task
            self.held[task.host].append(task)
        while self.pending:
            task = self.pending.popleft()
            if task.index in self.final:
                continue
            if self._eligible(task):
                return task
            self.held[task.host].append(task)
        return None

    def _dispatch(self, workers: int) -> None:
        now = time.monotonic()
        while self._busy() < workers:
            task = self._next_task(now)
            if task is None:
                return
            task.generation += 1
            if task.first_start is None:
                task.first_start = now
            task.fetched_at_ms = int(time.time() * 1000)
            allowance = self.settings.deadline_s + self.settings.watchdog_grace_s
            self.work.put(_Slot(task, task.generation, Activity(allowance)))

    def _sleep_time(self) -> float:
        if self.retries:
            return max(0.0, min(TICK_S, self.retries[0][0] - time.monotonic()))
        return TICK_S

    def _collect(self, timeout: float) -> None:
        try:
            item = self.results.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(*item)
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                return

    def _handle(self, index: int, generation: int, outcome: Outcome, spooled: tuple[int, int] | None) -> None:
        task = self.tasks[index]
        if generation != task.generation or index in self.final:
            return  # abandoned by the watchdog, or cut by the circuit breaker
        s = self.settings
        task.attempts += 1
        task.log.append(outcome.log_code)
        task.wait_s += outcome.wait_s
        if outcome.retry_after_s is not None:
            task.retry_after_s += outcome.retry_after_s
        self.circuits[task.host].attempt_finished(outcome.reason)
        too_long = outcome.retry_after_s is not None and outcome.retry_after_s > s.max_retry_after_s
        if too_long:
            outcome.detail = (
                f"{outcome.detail}; Retry-After {outcome.retry_after_s:g} s exceeds "
                f"download.max_retry_after_s={s.max_retry_after_s:g}"
            )
        if outcome.final or too_long or task.attempts >= s.max_attempts:
            self._finalize(task, outcome, spooled)
        else:
            if outcome.immediate:
                delay = 0.0
            elif outcome.retry_after_s is not None:
                delay = outcome.retry_after_s
            else:
                delay = backoff_delay(task.attempts, s, self.rng)
            heapq.heappush(self.retries, (time.monotonic() + delay, index))
        self._release(task.host)

    def _finalize(self, task: RowTask, outcome: Outcome, spooled: tuple[int, int] | None) -> None:
        started = task.first_start if task.first_start is not None else time.monotonic()
        self.final[task.index] = RowFinal(
            outcome,
            task.prior_attempts + task.attempts,
            task.prior_log + task.log,
            task.prior_retry_after_s + task.retry_after_s,
            task.wait_s,
            time.monotonic() - started,
            task.fetched_at_ms,
            spooled,
        )
        self._decided(task.index, outcome.reason)
        circuit = self.circuits[task.host]
        for row in circuit.advance(self.final_reasons):
            self._cut(self.tasks[row], circuit)

    def _cut(self, task: RowTask, circuit: HostCircuit) -> None:
        """The in-order rule opened the host's circuit before this row: no attempts of this run
        count for it (whether or not one was made), so the outcome does not depend on timing."""
        outcome = Outcome(
            R.HOST_CIRCUIT_OPEN,
            f"{circuit.threshold} consecutive rows of {task.host} failed transiently before this one",
        )
        self.final[task.index] = RowFinal(
            outcome, task.prior_attempts, list(task.prior_log), task.prior_retry_after_s,
            task.wait_s, 0.0, None,
        )  # fmt: skip
        self._decided(task.index, outcome.reason)

    def _decided(self, index: int, reason: str | None) -> None:
        self.final_reasons[index] = reason
        if self.progress is not None:
            self.progress.decided("ok" if reason is None else R.status_of(reason))

    def _release(self, host: str) -> None:
        """Tasks held back while their host was suspected go back into the queue."""
        waiting = self.held.pop(host, [])
        now = time.monotonic()
        for task in waiting:
            if task.index not in self.final:
                heapq.heappush(self.retries, (now, task.index))

    def _watchdog(self, workers: int) -> None:
        now = time.monotonic()
        with self.lock:
            overdue = [
                (wid, slot)
                for wid, slot in self.slots.items()
                if wid not in self.abandoned and slot.activity.overdue(now)
            ]
            for wid, _ in overdue:
                self.abandoned.add(wid)
        for _, slot in overdue:
            task = slot.task
            if slot.generation == task.generation and task.index not in self.final:
                task.attempts += 1
                task.log.append(R.TIMEOUT)
                budget = slot.activity.allowance_s
                detail = f"attempt still running after {budget:.1f} s; abandoned by the watchdog"
                self._finalize(task, Outcome(R.TIMEOUT, detail), None)
                self._release(task.host)
            # Keep the pool at strength; abandoned threads exit when (if) their attempt returns.
            if len(self.threads) - len(self.abandoned) < workers:
                self._start_worker()
