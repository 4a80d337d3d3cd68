"""One run at a time per work root: an exclusive `flock` on <root>/tolpipe.lock, held for the
whole life of the run.

The kernel releases the lock when the holding process dies, however it dies (kill -9, node
crash, a zombie that was never reaped: its file descriptors are closed at exit). Whether an
earlier run is still alive is therefore never guessed from process ids, which other processes
reuse. The lock file also holds who has it (run tag, host, pid, start, command), so a refused
run can name the holder.

Partition runs of one stage (`tolpipe run STAGE --partitions ...`, the tasks of a Slurm job
array) share the root instead: each holds a shared flock on <root>/tolpipe.lock (so no exclusive
run starts while any of them runs, and none starts during an exclusive run) and a shared flock on
<root>/.tolpipe-locks/<stage>.lock. Under a short exclusive flock on .tolpipe-locks/acquire.lock,
a new partition run checks that no other stage's file is held, so only runs of the same stage
ever share the root. Shared holders do not tidy the root (another holder's temp files are live).

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
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.errors import RootBusyError, RootNotWritableError

LOCK_NAME = "tolpipe.lock"
# Folder of the per-stage files that partition runs share, and of the file that serialises
# taking them.
STAGE_LOCKS_DIR = ".tolpipe-locks"
ACQUIRE_NAME = "acquire.lock"
# Seconds a partition run waits for another to finish taking its locks (microseconds normally).
ACQUIRE_TIMEOUT_S = 30.0


class RootLock:
    """The held lock of one root; `tag` names the run in every temp file it writes."""

    def __init__(self, root: Path, fd: int, tag: str, previous: dict[str, Any] | None,
                 shared_stage: str | None = None, stage_fd: int | None = None):  # fmt: skip
        self.root, self.fd, self.tag = root, fd, tag
        # Holder info left by a run that died holding the lock (its lock is gone, its note not).
        self.took_over_from = previous
        self.depth = 1
        # Partition runs of this stage share the root (see the module's doc); None: exclusive.
        self.shared_stage, self.stage_fd = shared_stage, stage_fd

    @property
    def shared(self) -> bool:
        return self.shared_stage is not None


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
    if "shared_stages" in info:
        return info["command"]
    return (f"run {info.get('run_tag')} (host {info.get('host')}, pid {info.get('pid')}, "
            f"started {info.get('started_utc')}: {info.get('command')})")  # fmt: skip


def _open_lock_file(root: Path) -> int:
    try:
        root.mkdir(parents=True, exist_ok=True)
        return os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RootNotWritableError(root, exc) from None


def _busy(root: Path, holder: str) -> RootBusyError:
    return RootBusyError(
        f"{root}: work root in use by {holder}; wait for it to end or stop it "
        "(a killed run's lock is released by the kernel, and the next run takes over)"
    )


def _flock(fd: int, root: Path, mode: int) -> bool:
    """flock without blocking: False when another process holds a conflicting lock."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise RootBusyError(
                f"{root}: this filesystem does not support file locks ({exc.strerror}); on Lustre "
                "mount with -o flock, or use a work root on a filesystem that has them"
            ) from None
        raise


def _lock(fd: int, root: Path) -> None:
    try:
        if _flock(fd, root, fcntl.LOCK_EX):
            return
    except BaseException:
        os.close(fd)
        raise
    holder = _read_info(fd)
    os.close(fd)
    shared = shared_holders(root)
    raise _busy(root, describe(holder) if holder or not shared else _describe_shared(shared))


def _describe_shared(stages: list[str]) -> str:
    return f"partition runs of {', '.join(stages)} (e.g. the tasks of a Slurm job array)"


def _stage_lock_path(root: Path, stage: str) -> Path:
    return root / STAGE_LOCKS_DIR / f"{stage}.lock"


def shared_holders(root: str | Path) -> list[str]:
    """Stages whose partition runs share the root now. Never blocks, never keeps a lock."""
    found = []
    folder = Path(root) / STAGE_LOCKS_DIR
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        if path.name == ACQUIRE_NAME:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _flock(fd, root, fcntl.LOCK_EX):
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                found.append(path.stem)
        finally:
            os.close(fd)
    return found


def _open(path: Path, root: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RootNotWritableError(root, exc) from None


def _acquire_serialised(root: Path) -> int:
    """The short exclusive lock under which partition runs take their shared locks."""
    fd = _open(root / STAGE_LOCKS_DIR / ACQUIRE_NAME, root)
    deadline = time.monotonic() + ACQUIRE_TIMEOUT_S
    while not _flock(fd, root, fcntl.LOCK_EX):
        if time.monotonic() > deadline:
            os.close(fd)
            raise _busy(root, f"a run taking {root / STAGE_LOCKS_DIR / ACQUIRE_NAME} for over "
                        f"{ACQUIRE_TIMEOUT_S:.0f} s")  # fmt: skip
        time.sleep(0.01)
    return fd


def _lock_shared(root: Path, stage: str) -> tuple[int, int]:
    """(root fd, stage fd), both share-locked; refused while an exclusive run or partition runs of
    another stage hold the root."""
    gate = _acquire_serialised(root)
    fds: list[int] = []
    try:
        fd = _open_lock_file(root)
        fds.append(fd)
        if not _flock(fd, root, fcntl.LOCK_SH):
            raise _busy(root, describe(_read_info(fd)))
        others = [s for s in shared_holders(root) if s != stage]
        if others:
            raise _busy(root, _describe_shared(others) + f"; partition runs of {stage} wait for them")
        stage_fd = _open(_stage_lock_path(root, stage), root)
        fds.append(stage_fd)
        deadline = time.monotonic() + 1.0  # `tolpipe status` may be looking at it this instant
        while not _flock(stage_fd, root, fcntl.LOCK_SH):
            if time.monotonic() > deadline:
                raise _busy(root, f"a process holding {_stage_lock_path(root, stage)}")
            time.sleep(0.01)
        return fd, stage_fd
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        os.close(gate)  # closing releases the gate


@contextlib.contextmanager
def hold_root(root: str | Path, command: str = "", shared_stage: str | None = None) -> Iterator[RootLock]:
    """Hold the root's lock (re-entrant within a process, e.g. for `run all`). `shared_stage`:
    share the root with other partition runs of that stage (see the module's doc)."""
    root = Path(root).resolve()
    held = _held.get(root)
    if held is not None:
        if held.shared and held.shared_stage != shared_stage:
            raise RootBusyError(f"{root}: this process shares the root for partition runs of "
                                f"{held.shared_stage}; it cannot also run {command or 'more'}")  # fmt: skip
        held.depth += 1
        try:
            yield held
        finally:
            held.depth -= 1
        return
    if shared_stage is not None:
        with _hold_shared(root, shared_stage) as lock:
            yield lock
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


@contextlib.contextmanager
def _hold_shared(root: Path, stage: str) -> Iterator[RootLock]:
    fd, stage_fd = _lock_shared(root, stage)
    tag = atomic.new_run_tag()
    atomic.set_run_tag(tag)
    lock = _held[root] = RootLock(root, fd, tag, None, shared_stage=stage, stage_fd=stage_fd)
    try:
        yield lock
    finally:
        del _held[root]
        os.close(stage_fd)
        os.close(fd)  # closing releases both flocks


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
    finally:
        os.close(fd)
    shared = shared_holders(root)
    return {"shared_stages": shared, "command": _describe_shared(shared)} if shared else None
