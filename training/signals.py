"""Holding back Slurm's preemption and time-out signals while the model is in a state that must
not be checkpointed (a half-applied update, a projection swapped out for a forward pass).

Submitit answers these signals with a handler that checkpoints and requeues the job. Masking the
signal in the training thread is not enough: the kernel then delivers it to another thread (torch's
intra-op pool) and Python still runs the handler in the main thread at once. So the deferral is
done at the Python level: `install()` wraps the handlers present (submitit's), and a signal that
arrives inside `signals_deferred()` is handed to them when the outermost block exits.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

# The signals Slurm and submitit send before a time-out or preemption (submitit's default is
# USR2); a checkpoint is taken from their handler (training/submit.py TrainJob.checkpoint).
DEFERRED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)

_original: dict[int, Callable[[int, Any], Any]] = {}
_pending: list[int] = []
_depth = 0


def _handler(signum: int, frame: Any) -> None:
    if _depth > 0:
        _pending.append(signum)
        return
    _original[signum](signum, frame)


def install() -> None:
    """Wrap the Python handlers of DEFERRED_SIGNALS (main thread only; signals without a Python
    handler keep their default action)."""
    for signum in DEFERRED_SIGNALS:
        current = signal.getsignal(signum)
        if callable(current) and current is not _handler:
            _original[signum] = current
            signal.signal(signum, _handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Signals that arrive inside are delivered when the outermost block exits (the first one;
    repeats of it in the meantime are one request)."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            signum = _pending[0]
            _pending.clear()
            _original[signum](signum, None)
