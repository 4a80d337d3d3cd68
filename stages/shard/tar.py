"""Deterministic WebDataset tars.

The layout is the one webdataset's TarWriter writes through the standard library's tarfile:
members `<key>.<ext>`, a sample's members in sorted order, POSIX (pax) format, uid and gid 0,
one fixed modification time, owner and group name, and permission bits for every member, the
archive closed with two zero blocks and padded to tarfile's 10240-byte records. The same samples
give the same bytes, and webdataset's `TarWriter(..., mtime=M, user=O, group=O, mode=P)` writes
exactly these bytes (tests/test_shard_layout.py checks it).

Headers are not built by tarfile member by member (its TarInfo copying and checks cost more than
the rest of a shard together): every member's header is tarfile's own header for these fixed
fields, made once per shard with tarfile, with only the name, size and checksum filled in. A
member that header could not describe exactly (a non-ASCII name, a name over 100 bytes, 8 GiB or
more) gets its header from tarfile. TarWriter itself is not used: importing webdataset imports
torch (about 600 MB and 2 s more in every worker process that writes shards).

The tar is not hashed here: the ledger hashes it once when it publishes it (its sha256 is in the
partition's commit record); hashing it while writing too cost a third of the writing time.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TAR_FORMAT = tarfile.PAX_FORMAT  # tarfile's default, which webdataset's TarWriter writes
BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: the archive's length is a multiple of it
NAME = slice(0, 100)
SIZE = slice(124, 136)
CHECKSUM = slice(148, 156)
MAX_FAST_SIZE = 8**11  # sizes from here need a pax header
ZEROS = bytes(BLOCK)
WRITE_BUFFER = 1 << 20


@dataclass(frozen=True)
class TarFields:
    mtime: int
    owner: str
    mode: int

    def info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, self.mtime, self.mode
        info.uname = info.gname = self.owner
        return info


class Headers:
    """512-byte member headers for the fixed fields, byte for byte as tarfile writes them."""

    def __init__(self, fields: TarFields):
        self.fields = fields
        template = bytearray(fields.info("", 0).tobuf(TAR_FORMAT, tarfile.ENCODING, "surrogateescape"))
        if len(template) != BLOCK:
            raise ValueError("tar fields need a pax header (owner name not ASCII?)")
        template[NAME] = bytes(100)
        template[SIZE] = bytes(12)
        template[CHECKSUM] = b" " * 8
        self.template = bytes(template)
        self.base = sum(self.template)  # the checksum counts the checksum field as 8 spaces

    @staticmethod
    def fast(name: str, size: int) -> bool:
        """Whether the template describes this member exactly (else tarfile makes its header)."""
        return name.isascii() and len(name) <= 100 and size < MAX_FAST_SIZE

    def block(self, name: bytes, name_sum: int, size: int) -> bytearray:
        """The header of an ASCII `name` (the sum of its bytes given) of `size` bytes."""
        size_field = b"%011o\x00" % size
        block = bytearray(self.template)
        block[: len(name)] = name
        block[SIZE] = size_field
        block[CHECKSUM] = b"%06o\x00 " % (self.base + name_sum + sum(size_field))
        return block

    def header(self, name: str, size: int) -> bytes:
        if not self.fast(name, size):
            return self.fields.info(name, size).tobuf(TAR_FORMAT, tarfile.ENCODING, "surrogateescape")
        encoded = name.encode("ascii")
        return bytes(self.block(encoded, sum(encoded), size))


@dataclass(frozen=True)
class FileSlice:
    """`length` bytes of an open file at `offset`: a member read straight into the sample's
    buffer (no intermediate copy)."""

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length


class ShardTar:
    """Writes samples (key + members by extension) to one tar.

    Headers and small members collect in a buffer that is written when an image comes; the
    image's bytes are copied from the staging file to the tar by the kernel (copy_file_range:
    they never pass through this process), or read and written where the kernel cannot."""

    def __init__(self, path: Path, fields: TarFields):
        self._headers = Headers(fields)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._pending = bytearray()
        self._kernel_copy = hasattr(os, "copy_file_range")
        self.size = 0
        self.samples = 0

    def _flush(self) -> None:
        with memoryview(self._pending) as pending:
            written = 0
            while written < len(pending):
                written += os.write(self._fd, pending[written:])
        self._pending.clear()

    def _copy(self, piece: FileSlice) -> None:
        self._flush()
        done = 0
        while done < piece.length:
            count = piece.length - done
            if self._kernel_copy:
                try:
                    copied = os.copy_file_range(piece.fd, self._fd, count, offset_src=piece.offset + done)
                except OSError:  # another filesystem, or no kernel support: read and write
                    self._kernel_copy = False
                    continue
            else:
                data = os.pread(piece.fd, min(count, WRITE_BUFFER), piece.offset + done)
                copied = len(data)
                self._pending += data
                self._flush()
            if copied == 0:
                raise OSError(f"staging file ends {count} bytes early at offset {piece.offset + done}")
            done += copied

    def write(self, key: str, members: Mapping[str, bytes | FileSlice]) -> None:
        """One sample: its members in sorted order, each a header, the data and zero padding."""
        prefix = f"{key}.".encode()
        prefix_sum = sum(prefix)
        for ext in sorted(members):
            data = members[ext]
            size = len(data)
            name = f"{key}.{ext}"
            if self._headers.fast(name, size):
                suffix = ext.encode("ascii")
                self._pending += self._headers.block(prefix + suffix, prefix_sum + sum(suffix), size)
            else:
                self._pending += self._headers.header(name, size)
            if isinstance(data, FileSlice):
                self._copy(data)
            else:
                self._pending += data
            self._pending += ZEROS[: -size % BLOCK]
            self.size += BLOCK + size + (-size % BLOCK)
        if len(self._pending) >= WRITE_BUFFER:
            self._flush()
        self.samples += 1

    def close(self) -> int:
        """Finish the archive (two zero blocks, padded to a whole record); returns its size."""
        end = 2 * BLOCK + (-(self.size + 2 * BLOCK) % RECORD)
        self._pending += bytes(end)
        self.size += end
        self._flush()
        os.close(self._fd)
        return self.size

    def abandon(self) -> None:
        """Stop after an error elsewhere (the partial file is the caller's to remove)."""
        os.close(self._fd)
