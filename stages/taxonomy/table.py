"""The 03 manifest: its schema, reading the upstream rows (02 ok rows joined with 01's verbatim
taxonomy), and building a partition's table from the cached decisions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.ledger import stage_schema
from stages.taxonomy.names import INPUT_FIELDS, RANKS, NameTuple, make_tuple

INGEST_DIR, DOWNLOAD_DIR = "01_ingest", "02_download"

_RESOLVED_TEXT = (
    "scientific_name", "taxon_rank", "common_name", "common_name_rank", "common_name_language",
    "resolution_status", "resolution_strategy", "match_type",
)  # fmt: skip
INPUT_COLUMNS = tuple(f"input_{f}" for f in INPUT_FIELDS)

SCHEMA = stage_schema(
    *[pa.field(rank, pa.string()) for rank in RANKS],
    *[pa.field(name, pa.string()) for name in _RESOLVED_TEXT],
    pa.field("data_source_id", pa.int32()),
    pa.field("record_id", pa.string()),
    pa.field("query_term", pa.string()),
    pa.field("query_rank", pa.string()),
    *[pa.field(name, pa.string()) for name in INPUT_COLUMNS],
)

# Decision key -> output column, for the scalar fields of a decision.
_DECISION_COLUMNS = {
    "scientific_name": "scientific_name", "taxon_rank": "taxon_rank",
    "common_name": "common_name", "common_name_rank": "common_name_rank",
    "common_name_language": "common_name_language", "resolution_status": "resolution_status",
    "strategy": "resolution_strategy", "match_type": "match_type",
    "data_source_id": "data_source_id", "record_id": "record_id", "query_term": "query_term",
    "query_rank": "query_rank",
}  # fmt: skip


def read_upstream(ingest_path: Path, download_path: Path) -> pa.Table:
    """The 02 ok rows of one partition (in 02's order) with 01's uuid and verbatim taxonomy."""
    download = pq.read_table(download_path, columns=["uuid", "status"])
    ok = download.filter(pc.equal(download["status"], "ok"))["uuid"]
    ingest = pq.read_table(ingest_path, columns=["uuid", *INPUT_FIELDS])
    positions = pc.index_in(ok, value_set=ingest["uuid"])
    if positions.null_count:
        missing = ok.filter(pc.is_null(positions))[0].as_py()
        raise InputError(download_path, f"uuid {missing} (an ok row) has no row in {ingest_path}")
    return ingest.take(positions)


def tuples_of(upstream: pa.Table, invalid_tokens: frozenset[str]) -> list[NameTuple]:
    """One NameTuple per upstream row (same order)."""
    columns = [upstream[f].to_pylist() for f in INPUT_FIELDS]
    return [make_tuple(values, invalid_tokens) for values in zip(*columns, strict=True)]


def tuples_from_inputs(table: pa.Table, invalid_tokens: frozenset[str]) -> list[NameTuple]:
    """Tuples rebuilt from a 03 table's input_* columns (for retry)."""
    columns = [table[c].to_pylist() for c in INPUT_COLUMNS]
    return [make_tuple(values, invalid_tokens) for values in zip(*columns, strict=True)]


def build_table(
    uuids: list[str],
    inputs: Mapping[str, list[Any]],
    tuples: list[NameTuple],
    decisions: Mapping[str, Mapping[str, Any]],
) -> pa.Table:
    """One row per uuid: the decision of its tuple, and its verbatim inputs."""
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for uuid, names in zip(uuids, tuples, strict=True):
        decision = decisions.get(names.key)
        if decision is None:
            raise RuntimeError(f"no taxonomy decision cached for uuid {uuid} ({names.values}); "
                               "the stage's plan() resolves every tuple first")  # fmt: skip
        columns["uuid"].append(uuid)
        columns["status"].append(decision["status"])
        columns["reason"].append(decision["reason"])
        columns["detail"].append(decision["detail"])
        ranks = decision["ranks"]
        for rank in RANKS:
            columns[rank].append(ranks.get(rank))
        for key, column in _DECISION_COLUMNS.items():
            columns[column].append(decision[key])
    for field, column in zip(INPUT_FIELDS, INPUT_COLUMNS, strict=True):
        columns[column] = list(inputs[field])
    return pa.table(columns, schema=SCHEMA)
