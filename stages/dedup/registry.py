"""Registered test sets: `<root>/testsets/<NAME>/hashes.parquet` (one row per test image: id, MD5
of the file bytes, PDQ hash and quality, or why it could not be decoded) and `testset.json` (its
provenance: source, counts, date, the hashing settings, and the digest of its hashes).

`testset.json` is written last, so a set exists only once it is complete; a folder without it
(a killed `testsets add`) is listed as incomplete and replaced by the next `add` of that name.
The digest covers the hashes' content (ids, MD5s, PDQ hashes, qualities), not the file's bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import atomic
from pipeline.errors import ConfigError

FOLDER = "testsets"
META = "testset.json"
HASHES = "hashes.parquet"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SCHEMA = pa.schema([
    pa.field("test_id", pa.string(), nullable=False),
    pa.field("md5", pa.string(), nullable=False),
    pa.field("pdq", pa.string()),  # 64 hex digits; null when the image could not be decoded
    pa.field("pdq_quality", pa.int32()),
    pa.field("error", pa.string()),  # why the image could not be decoded
])  # fmt: skip


@dataclass(frozen=True)
class TestSet:
    name: str
    meta: dict[str, Any]
    folder: Path

    @property
    def digest(self) -> str:
        return str(self.meta["digest"])

    @property
    def hasher(self) -> dict[str, Any]:
        return dict(self.meta["hasher"])

    def hashes(self) -> pa.Table:
        return pq.read_table(self.folder / HASHES, schema=SCHEMA)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ConfigError(f"test set name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return name


def folder_of(root: Path, name: str) -> Path:
    return Path(root) / FOLDER / check_name(name)


def content_digest(table: pa.Table) -> str:
    """sha256 over the rows in test id order: id, md5, pdq, quality."""
    digest = hashlib.sha256()
    ordered = table.sort_by("test_id")
    for row in zip(*(ordered[c].to_pylist() for c in ("test_id", "md5", "pdq", "pdq_quality")), strict=True):
        digest.update(("\t".join("" if v is None else str(v) for v in row) + "\n").encode())
    return digest.hexdigest()


def read(root: Path, name: str) -> TestSet | None:
    folder = folder_of(root, name)
    try:
        meta = json.loads((folder / META).read_text())
    except FileNotFoundError:
        return None
    return TestSet(name, meta, folder)


def registered(root: Path) -> list[TestSet]:
    """Complete test sets, by name."""
    top = Path(root) / FOLDER
    if not top.is_dir():
        return []
    found = [read(root, p.name) for p in sorted(top.iterdir()) if p.is_dir() and NAME.match(p.name)]
    return [s for s in found if s is not None]


def incomplete(root: Path) -> list[str]:
    """Names of set folders without their testset.json (a killed `testsets add`)."""
    top = Path(root) / FOLDER
    if not top.is_dir():
        return []
    return [p.name for p in sorted(top.iterdir()) if p.is_dir() and not (p / META).exists()]


def write(root: Path, name: str, table: pa.Table, meta: dict[str, Any]) -> TestSet:
    """Publish the hashes, then the metadata that makes the set exist."""
    from pipeline.ledger import write_parquet

    folder = folder_of(root, name)
    (folder / META).unlink(missing_ok=True)
    write_parquet(table.sort_by("test_id").cast(SCHEMA), folder / HASHES)
    atomic.write_text(folder / META, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return TestSet(name, meta, folder)


def remove(root: Path, name: str) -> None:
    """The metadata first (the set stops existing), then the folder."""
    folder = folder_of(root, name)
    if (folder / META).exists():
        (folder / META).unlink()
        atomic.fsync_path(folder)
    shutil.rmtree(folder, ignore_errors=True)
