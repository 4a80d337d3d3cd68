"""Crash-safe file replacement: write to a unique temp name, fsync, rename, fsync the folder."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def temp_name(dest: Path) -> Path:
    """A unique sibling of dest; '.tmp-' prefixed so listings never take it for a partition."""
    return dest.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}-{dest.name}")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, dest: Path) -> None:
    """fsync temp, rename it over dest, fsync dest's folder: dest is either old or new, never torn."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fsync_path(temp)
    os.replace(temp, dest)
    fsync_path(dest.parent)


def write_bytes(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(dest)
    temp.write_bytes(data)
    publish(temp, dest)


def write_text(dest: Path, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))
