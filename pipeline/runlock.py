"""One run at a time per work root: an exclusive `flock` on <root>/tolpipe.lock, held for the
whole life of the run.

The kernel releases the lock when the holding process dies, however it dies (kill -9, node
crash, a zombie that was never reaped: its file descriptors are closed at exit). Whether an
earlier run is still alive is therefore never guessed from process ids, which other processes
reuse. The lock file also holds who has it (run tag, host, pid, start, command), so a refused
run can name the holder.

Shared filesystems: NFSv4 and GPFS support flock across nodes; Lustre needs the `flock` mount
option (without it flock fails, and the run stops with an error saying so).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.errors import RootBusyError, RootNotWritableError

LOCK_NAME = "tolpipe.lock"


class RootLock:
    """The held lock of one root; `tag` names the run in every temp file it writes."""

    def __init__(self, root: Path, fd: int, tag: str, previous: dict[str, Any] | None):
        self.root, self.fd, self.tag = root, fd, tag
        # Holder info left by a run that died holding the lock (its lock is gone, its note not).
        self.took_over_from = previous
        self.depth = 1


_held: dict[Path, RootLock] = {}


def _holder_info(tag: str, command: str) -> dict[str, Any]:
    return {
        "run_tag": tag, "host": socket.gethostname(), "pid": os.getpid(),
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
    }  # fmt: skip


def _read_info(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        info = json.loads(raw) if raw.strip() else None
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _write_info(fd: int, info: dict[str, Any] | None) -> None:
    os.ftruncate(fd, 0)
    if info is not None:
        os.pwrite(fd, json.dumps(info, sort_keys=True).encode(), 0)
    os.fsync(fd)


def describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another run (starting up)"
    return (f"run {info.get('run_tag')} (host {info.get('host')}, pid {info.get('pid')}, "
            f"started {info.get('started_utc')}: {info.get('command')})")  # fmt: skip


def _open_lock_file(root: Path) -> int:
    try:
        root.mkdir(parents=True, exist_ok=True)
        return os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RootNotWritableError(root, exc) from None


def _lock(fd: int, root: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_info(fd)
        os.close(fd)
        raise RootBusyError(
            f"{root}: work root in use by {describe(holder)}; wait for it to end or stop it "
            "(a killed run's lock is released by the kernel, and the next run takes over)"
        ) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise RootBusyError(
                f"{root}: this filesystem does not support file locks ({exc.strerror}); on Lustre "
                "mount with -o flock, or use a work root on a filesystem that has them"
            ) from None
        raise


@contextlib.contextmanager
def hold_root(root: str | Path, command: str = "") -> Iterator[RootLock]:
    """Hold the root's lock (re-entrant within a process, e.g. for `run all`)."""
    root = Path(root).resolve()
    held = _held.get(root)
    if held is not None:
        held.depth += 1
        try:
            yield held
        finally:
            held.depth -= 1
        return
    fd = _open_lock_file(root)
    _lock(fd, root)
    previous = _read_info(fd)
    tag = atomic.new_run_tag()
    try:
        _write_info(fd, _holder_info(tag, command or " ".join(sys.argv)))
    except OSError as exc:
        os.close(fd)
        raise RootNotWritableError(root, exc) from None
    atomic.set_run_tag(tag)
    lock = _held[root] = RootLock(root, fd, tag, previous)
    try:
        yield lock
    finally:
        del _held[root]
        with contextlib.suppress(OSError):
            _write_info(fd, None)  # a clean release leaves no holder
        os.close(fd)  # closing releases the flock


def current_holder(root: str | Path) -> dict[str, Any] | None:
    """Who holds the root now (None when nobody does). Never blocks, never takes the lock."""
    path = Path(root) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_info(fd) or {}
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
