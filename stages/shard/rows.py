"""The rows of one upstream partition as this stage sees them: the rows every earlier stage kept
(pipeline.joined), with 01's provenance, 02's stored-image facts and 03's taxonomy, and what the
stage derives from each (names, order key, split, row digest). Pure and repeatable: the keys
pass and the staging pass derive the same values from the same rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.joined import joined_rows
from stages.shard.assign import ORDER, TRAIN, VAL, held_out, keyed_hashes, row_digests
from stages.shard.captions import RANKS, Names, names_of
from stages.shard.settings import ShardSettings

# What each stage contributes (the upstream stage itself is asked for no column: it only decides
# which rows are kept).
PROVENANCE = ("url", "provider", "license", "rights_holder", "image_type")
STORED = ("stored_md5", "stored_width", "stored_height")
TAXONOMY = (*RANKS, "scientific_name", "common_name")
ROW_COLUMNS = {"01_ingest": list(PROVENANCE), "02_download": list(STORED), "03_taxonomy": list(TAXONOMY)}
FIELD_SEPARATOR = "\x1f"  # between a row's values in its digested text
NULL_TEXT = "\x00"  # a null value there


@dataclass(frozen=True)
class PartitionRows:
    index: int
    table: pa.Table  # uuid, then ROW_COLUMNS' columns, in 01's order
    names: list[Names | None]  # None: no taxon
    h: np.ndarray  # uint64 order key
    split: np.ndarray  # int8 TRAIN / VAL
    digests: np.ndarray  # (n, 2) uint64

    @property
    def captioned(self) -> np.ndarray:
        return np.array([n is not None for n in self.names], dtype=bool)


def read_rows(root: str | Path, index: int, upstream: str, settings: ShardSettings) -> PartitionRows:
    table = joined_rows(root, index, {**ROW_COLUMNS, upstream: []})
    columns = [table[name].to_pylist() for name in TAXONOMY]
    cache: dict[tuple, Names | None] = {}  # rows of one taxon share their names
    names = []
    for values in zip(*columns, strict=True):
        if values not in cache:
            cache[values] = names_of(dict(zip(RANKS, values, strict=False)), values[-2], values[-1],
                                     settings.missing_values)  # fmt: skip
        names.append(cache[values])
    uuids = table["uuid"].to_pylist()
    h = keyed_hashes(uuids, settings.seed, ORDER)
    split = _splits(uuids, names, settings)
    digests = row_digests(row_texts(table, index, split).to_pylist())
    return PartitionRows(index, table, names, h, split, digests)


def row_texts(table: pa.Table, index: int, split: np.ndarray) -> pa.Array:
    """One string per row with everything it contributes to its shard: its upstream partition,
    split and every column read, as text, separated by FIELD_SEPARATOR, nulls as NULL_TEXT."""
    n = table.num_rows
    fields = [pa.array([str(index)] * n, pa.string()), pa.array(split.astype(str).tolist(), pa.string())]
    fields += [pc.cast(table[name], pa.string()) for name in table.column_names]
    return pc.binary_join_element_wise(*fields, FIELD_SEPARATOR, null_handling="replace",
                                       null_replacement=NULL_TEXT)  # fmt: skip


def _splits(uuids: list[str], names: list[Names | None], settings: ShardSettings) -> np.ndarray:
    """VAL for held-out rows (by uuid, or by the scientific name the sci caption uses)."""
    if settings.val_by == "species":
        keys = [n.scientific if n else None for n in names]
    else:
        keys = [u if n else None for u, n in zip(uuids, names, strict=True)]
    held = held_out(keys, settings.seed, settings.val_fraction)
    return np.where(held, VAL, TRAIN).astype(np.int8)
