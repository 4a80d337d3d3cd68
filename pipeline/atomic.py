"""Crash-safe file replacement: write to a unique temp name, fsync, rename, fsync the folder.

Every temporary name under a work root says which run made it: `.tmp-<run tag>-<random>-<name>`.
Only one run holds a root at a time (pipeline.runlock), so the next run can remove every temp
file whose tag is not its own without asking whether some process id is still alive.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path

TEMP_PREFIX = ".tmp-"
# A run tag: UTC start second and 6 random hex digits, e.g. 20261202T041502Z-3fa9c1.
TAG_PATTERN = r"\d{8}T\d{6}Z-[0-9a-f]{6}"
TEMP_NAME = re.compile(rf"^{re.escape(TEMP_PREFIX)}(?P<tag>{TAG_PATTERN})-")
# Test hook: SIGKILL this process right before a publish whose destination name contains this
# text (or at a checkpoint() so named), so tests can force a kill between a temp file's write
# and its rename, or in the middle of a removal.
KILL_BEFORE_PUBLISH_ENV = "TOLPIPE_TEST_KILL_BEFORE_PUBLISH"


def new_run_tag() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


_run_tag = new_run_tag()


def set_run_tag(tag: str) -> None:
    """Set by the run that holds the root (driver) and by every task it maps (workers)."""
    global _run_tag
    if not re.fullmatch(TAG_PATTERN, tag):
        raise ValueError(f"not a run tag: {tag!r}")
    _run_tag = tag


def run_tag() -> str:
    return _run_tag


def tagged(name: str) -> str:
    """`name` as a temporary name of the current run."""
    return f"{TEMP_PREFIX}{_run_tag}-{uuid.uuid4().hex[:12]}-{name}"


def tag_of(name: str) -> str | None:
    """The run tag of a temporary name, or None for any other name."""
    match = TEMP_NAME.match(name)
    return match["tag"] if match else None


def temp_name(dest: Path) -> Path:
    """A unique sibling of dest; '.tmp-' prefixed so listings never take it for a partition."""
    return dest.with_name(tagged(dest.name))


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint(name: str) -> None:
    """Test hook: SIGKILL this process here when the environment names this point (see above)."""
    marker = os.environ.get(KILL_BEFORE_PUBLISH_ENV)
    if marker and marker in name:
        os.kill(os.getpid(), signal.SIGKILL)


def publish(temp: Path, dest: Path) -> None:
    """fsync temp, rename it over dest, fsync dest's folder: dest is either old or new, never torn."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fsync_path(temp)
    checkpoint(dest.name)
    os.replace(temp, dest)
    fsync_path(dest.parent)


def write_bytes(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(dest)
    temp.write_bytes(data)
    publish(temp, dest)


def write_text(dest: Path, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))
