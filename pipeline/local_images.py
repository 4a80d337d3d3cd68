"""Images that live on this machine: members of a zip archive (read without extracting it) or
files under a folder. Shared by stage 01 (which checks member names and names the rows) and
stage 02 (which reads the bytes), so neither stage imports the other.

A local row is named by its *root* (the archive file or the folder, an absolute path) and its
*member* (a relative, '/'-separated path inside the root). Only paths under the root are
readable: a member that is empty, absolute, contains a `..` component, a backslash or a NUL, is a
symbolic link inside a zip, or resolves (following symlinks) outside a folder root is refused
with `unsafe_path` and never opened.

Its `url` in the manifests is `local://<root file or folder name>/<member>`: it names the image
without the machine's absolute path, so sample ids do not change when the data moves, and the
root's name is the partitioning host of 01.
"""

from __future__ import annotations

import os
import stat
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path, PurePosixPath

from pipeline.digest import digest_json

LOCAL_SCHEME = "local"
URL_PREFIX = f"{LOCAL_SCHEME}://"

# Reason codes (documented in manifests/README.md, 01 and 02).
UNSAFE_PATH = "unsafe_path"  # the member would read outside its root
LOCAL_MISSING = "local_missing"  # no such member in the archive / file under the folder
LOCAL_READ_ERROR = "local_read_error"  # the archive or file could not be read (corrupt zip, I/O)
LOCAL_TOO_LARGE = "too_large_body"  # same code as a too large download

# Opened archives kept per process (a zip's central directory is parsed once per worker, not once
# per partition: BIOSCAN-5M's archives list millions of members).
OPEN_ARCHIVES_KEPT = 4


class LocalReadError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def is_local_url(url: str | None) -> bool:
    return bool(url) and url.startswith(URL_PREFIX)


def local_url(root: Path, member: str) -> str:
    return f"{URL_PREFIX}{Path(root).name}/{member}"


def member_problem(member: str | None) -> str | None:
    """Why a member name may not be read (lexical check), or None when it is a plain relative
    path under the root."""
    if member is None or not member.strip():
        return "no image path"
    if "\x00" in member or "\\" in member:
        return f"image path {member!r} contains a NUL or a backslash"
    if member.startswith("/") or (len(member) > 1 and member[1] == ":"):
        return f"image path {member!r} is absolute"
    parts = PurePosixPath(member).parts
    if ".." in parts:
        return f"image path {member!r} climbs out of its root ('..')"
    return None


def join_member(*parts: str | None) -> str:
    """'/'-joined non-empty parts (a part may itself contain '/')."""
    return "/".join(p.strip("/") for p in parts if p is not None and p.strip("/"))


def is_zip(root: Path) -> bool:
    return Path(root).is_file() and zipfile.is_zipfile(root)


def root_identity(root: Path) -> str:
    """A digest that changes when the images under a root change. Zip: its central directory
    (every member's name, CRC-32 and size: content-sensitive without reading the images).
    Folder: every file's relative path, size and modification time (reading every image of a
    big folder on each run would cost more than the run)."""
    root = Path(root)
    if is_zip(root):
        with zipfile.ZipFile(root) as archive:
            listing = [(i.filename, i.CRC, i.file_size) for i in archive.infolist()]
        return digest_json({"zip": listing})
    entries = []
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(dirpath) / name
            info = path.lstat()
            entries.append((str(path.relative_to(root)), info.st_size, info.st_mtime_ns))
    return digest_json({"folder": sorted(entries)})


class _Archives:
    """Per-process cache of open zip files (thread-safe: zipfile serialises reads of one file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple, zipfile.ZipFile] = OrderedDict()

    def get(self, root: Path) -> zipfile.ZipFile:
        info = root.stat()
        key = (str(root), info.st_size, info.st_mtime_ns)
        with self._lock:
            archive = self._open.get(key)
            if archive is not None:
                self._open.move_to_end(key)
                return archive
            archive = zipfile.ZipFile(root)
            self._open[key] = archive
            while len(self._open) > OPEN_ARCHIVES_KEPT:
                _, old = self._open.popitem(last=False)
                old.close()
            return archive


_ARCHIVES = _Archives()


class LocalReader:
    """Reads members of one root; `read` raises LocalReadError with a reason code."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_absolute():
            raise LocalReadError(UNSAFE_PATH, f"image root {root!r} is not an absolute path")
        if not self.root.exists():
            raise LocalReadError(LOCAL_MISSING, f"image root {self.root} does not exist")
        self.zipped = self.root.is_file()
        self._real_root = os.path.realpath(self.root) if not self.zipped else ""

    def read(self, member: str | None, max_bytes: int) -> bytes:
        problem = member_problem(member)
        if problem is not None:
            raise LocalReadError(UNSAFE_PATH, problem)
        assert member is not None
        return self._read_zip(member, max_bytes) if self.zipped else self._read_file(member, max_bytes)

    def _read_zip(self, member: str, max_bytes: int) -> bytes:
        try:
            archive = _ARCHIVES.get(self.root)
            info = archive.getinfo(member)
        except KeyError:
            raise LocalReadError(LOCAL_MISSING, f"{member} is not in {self.root.name}") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise LocalReadError(LOCAL_READ_ERROR, f"{self.root}: {exc}") from None
        if stat.S_ISLNK(info.external_attr >> 16):
            raise LocalReadError(UNSAFE_PATH, f"{member} is a symbolic link inside {self.root.name}")
        if info.is_dir():
            raise LocalReadError(LOCAL_MISSING, f"{member} is a folder in {self.root.name}")
        if info.file_size > max_bytes:
            raise LocalReadError(LOCAL_TOO_LARGE, f"{member}: {info.file_size} bytes > {max_bytes}")
        try:
            with archive.open(info) as handle:
                return handle.read(max_bytes + 1)[: max_bytes + 1]
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise LocalReadError(LOCAL_READ_ERROR, f"{member} in {self.root.name}: {exc}") from None

    def _read_file(self, member: str, max_bytes: int) -> bytes:
        path = self.root / member
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            raise LocalReadError(UNSAFE_PATH, f"{member} resolves outside {self.root} (symlink)")
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise LocalReadError(LOCAL_MISSING, f"{member} does not exist under {self.root}") from None
        except OSError as exc:
            raise LocalReadError(LOCAL_READ_ERROR, f"{member}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise LocalReadError(LOCAL_MISSING, f"{member} is not a regular file")
            if info.st_size > max_bytes:
                raise LocalReadError(LOCAL_TOO_LARGE, f"{member}: {info.st_size} bytes > {max_bytes}")
            return handle.read(max_bytes + 1)

