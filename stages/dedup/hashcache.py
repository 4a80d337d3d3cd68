"""PDQ hashes of one partition's stored images, cached on disk so that a new test set, another
radius or a changed 04 decision recomputes stage 05 without decoding any image again.

`work/05_dedup/pdq/<hasher digest>/part-NNNNN-<image store sha256>.parquet` holds uuid, pdq (hex),
pdq_quality and error (an undecodable image) of every image of that store file hashed so far; a
lookup hashes the missing ones (streaming the store a row group at a time, through
pipeline.joined.iter_images) and rewrites the file with them. The key is the store file's own
sha256 and the hashing settings, so a cached hash always belongs to the bytes it was made from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.digest import digest_json
from pipeline.joined import iter_images
from pipeline.ledger import write_parquet
from stages.dedup.pdq import try_hash
from stages.dedup.settings import HashSettings

SCHEMA = pa.schema([
    pa.field("uuid", pa.string(), nullable=False),
    pa.field("pdq", pa.string()),
    pa.field("pdq_quality", pa.int32()),
    pa.field("error", pa.string()),
])  # fmt: skip


@dataclass(frozen=True)
class Hashed:
    pdq: str | None  # hex
    quality: int | None
    error: str | None


def cache_path(work: Path, settings: HashSettings, index: int, store_sha256: str) -> Path:
    folder = work / "pdq" / digest_json(settings.identity())[:16]
    return folder / f"part-{index:05d}-{store_sha256[:16]}.parquet"


def _read(path: Path) -> dict[str, Hashed]:
    if not path.is_file():
        return {}
    table = pq.read_table(path, schema=SCHEMA)
    columns = [table[c].to_pylist() for c in ("uuid", "pdq", "pdq_quality", "error")]
    return {u: Hashed(p, q, e) for u, p, q, e in zip(*columns, strict=True)}


def _write(path: Path, found: dict[str, Hashed]) -> None:
    uuids = sorted(found)
    table = pa.table({"uuid": uuids, "pdq": [found[u].pdq for u in uuids],
                      "pdq_quality": [found[u].quality for u in uuids],
                      "error": [found[u].error for u in uuids]}, schema=SCHEMA)  # fmt: skip
    write_parquet(table, path)
    for stale in path.parent.glob(f"{path.name[:10]}-*.parquet"):  # "part-NNNNN-": other store files
        if stale != path:
            stale.unlink(missing_ok=True)


def hash_store(root: Path, index: int, wanted: set[str], settings: HashSettings) -> dict[str, Hashed]:
    """Hashes of the wanted uuids' stored images, decoded one at a time."""
    found: dict[str, Hashed] = {}
    for uuid, jpeg in iter_images(root, index, wanted):
        pdq, error = try_hash(jpeg, settings)
        found[uuid] = Hashed(pdq.hex if pdq else None, pdq.quality if pdq else None, error)
    missing = wanted - set(found)
    if missing:
        raise FileNotFoundError(f"image store of partition {index} lacks {len(missing)} image(s), "
                                f"e.g. {sorted(missing)[0]}")  # fmt: skip
    return found


def hashes(root: Path, work: Path, index: int, store_sha256: str, wanted: set[str],
           settings: HashSettings) -> dict[str, Hashed]:  # fmt: skip
    """uuid -> Hashed for the wanted uuids, from the cache, hashing and caching what is missing."""
    path = cache_path(work, settings, index, store_sha256)
    cached = _read(path)
    missing = wanted - set(cached)
    if missing:
        cached.update(hash_store(root, index, missing, settings))
        _write(path, cached)
    return {u: cached[u] for u in wanted}
