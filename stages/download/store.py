"""The image store: store/images/part-NNNNN.parquet, uuid + JPEG bytes of the ok rows, in the
order of the partition's manifest.

Images arrive out of order from the fetch threads; they are appended to a spool file (so a
partition's images never have to fit in memory) and written to Parquet in manifest order at the
end, with fixed writer settings and fixed row-group sizes: the same images give the same bytes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STORE_DIR = "store/images"
STORE_SCHEMA = pa.schema(
    [pa.field("uuid", pa.string(), nullable=False), pa.field("jpeg", pa.binary(), nullable=False)]
)
# JPEG does not compress further; statistics on image bytes are useless.
STORE_OPTIONS = {
    "compression": "none",
    "use_dictionary": False,
    "write_statistics": False,
    "data_page_version": "2.0",
}


def store_rel_path(index: int) -> str:
    """Root-relative path of a partition's image store file (the side-file key)."""
    return f"{STORE_DIR}/part-{index:05d}.parquet"


class Spool:
    """Append-only scratch file of JPEG blobs; thread-safe; removed by close(). Writers only
    reserve their offset under the lock and write outside it (pwrite releases the GIL)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._cond = threading.Condition()
        self._size = 0
        self._writing = 0  # writes in progress: close() waits for them (the fd is never reused
        # under a late writer's feet)

    def append(self, data: bytes) -> tuple[int, int]:
        with self._cond:
            if self._fd is None:
                raise ValueError("spool closed")
            fd, offset = self._fd, self._size
            self._size += len(data)
            self._writing += 1
        try:
            os.pwrite(fd, data, offset)
        finally:
            with self._cond:
                self._writing -= 1
                self._cond.notify_all()
        return offset, len(data)

    def read(self, offset: int, length: int) -> bytes:
        assert self._fd is not None, "spool closed"
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        with self._cond:
            fd, self._fd = self._fd, None
            self._cond.wait_for(lambda: self._writing == 0)
        if fd is not None:
            os.close(fd)
        self.path.unlink(missing_ok=True)


def write_store(dest: Path, images: Iterable[tuple[str, bytes]], row_group_rows: int) -> int:
    """Write (uuid, jpeg) pairs in the given order; returns the row count. Always writes a file
    (possibly with no rows) so that every manifest partition has its store partition."""
    rows = 0
    with pq.ParquetWriter(dest, STORE_SCHEMA, **STORE_OPTIONS) as writer:
        batch_ids: list[str] = []
        batch_jpegs: list[bytes] = []
        for uuid, jpeg in images:
            batch_ids.append(uuid)
            batch_jpegs.append(jpeg)
            if len(batch_ids) == row_group_rows:
                writer.write_table(_table(batch_ids, batch_jpegs), row_group_size=row_group_rows)
                rows += len(batch_ids)
                batch_ids, batch_jpegs = [], []
        if batch_ids or rows == 0:
            writer.write_table(_table(batch_ids, batch_jpegs), row_group_size=row_group_rows)
            rows += len(batch_ids)
    with open(dest, "rb") as handle:
        os.fsync(handle.fileno())
    return rows


def _table(ids: list[str], jpegs: list[bytes]) -> pa.Table:
    return pa.table([pa.array(ids, pa.string()), pa.array(jpegs, pa.binary())], schema=STORE_SCHEMA)


def iter_store(path: Path, batch_rows: int = 256) -> Iterator[tuple[str, bytes]]:
    """(uuid, jpeg) of a store file, in order, a few row groups in memory at a time."""
    with pq.ParquetFile(path) as handle:
        for batch in handle.iter_batches(batch_size=batch_rows):
            yield from zip(batch.column("uuid").to_pylist(), batch.column("jpeg").to_pylist(),
                           strict=True)  # fmt: skip


def read_image(root: Path, index: int, uuid: str) -> bytes | None:
    """One image from a store partition (for audits and tests); None if absent."""
    table = pq.read_table(root / store_rel_path(index), filters=[("uuid", "=", uuid)])
    return table.column("jpeg")[0].as_py() if table.num_rows else None
