"""Decisions from stored columns: the same code decides when a partition is computed and when
`tolpipe rethreshold dedup` re-applies another PDQ radius (nothing is hashed or searched)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.decisions import apply_findings
from stages.dedup import schema as S


def row_findings(row: dict[str, Any], max_distance: int) -> list[str]:
    """'reason: evidence' of every rule that drops the row, in reason order."""
    found = []
    if row["md5_leak_test_id"] is not None:
        found.append(f"{S.TEST_LEAK_MD5}: same bytes as test image "
                     f"{row['md5_leak_testset']}/{row['md5_leak_test_id']}")  # fmt: skip
    distance = row["pdq_min_distance"]
    if row["pdq_state"] == S.APPLIED and distance is not None and distance <= max_distance:
        found.append(f"{S.TEST_LEAK_PDQ}: PDQ distance {distance} (<= {max_distance}) to test image "
                     f"{row['leak_testset']}/{row['leak_test_id']}")  # fmt: skip
    kept = row["md5_kept"]
    if kept is not None and kept != row["uuid"]:
        found.append(f"{S.DUPLICATE_MD5}: same original bytes as {kept} (kept; {row['md5_copies']} copies)")
    return found


def decide(table: pa.Table, params: dict[str, Any]) -> pa.Table:
    """`table` with status, reason and detail set from its columns (failed rows stay failed)."""
    max_distance = int(params["pdq_max_distance"])
    return apply_findings(table, lambda row: row_findings(row, max_distance))
