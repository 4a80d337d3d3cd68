"""Decisions from stored scores, shared by the stages that annotate, then decide (04, 05): which
rows a check applies to, and how a row's findings become its status, reason and detail. The same
code runs when a partition is computed and when `tolpipe rethreshold` re-applies thresholds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Scope:
    """Rows a check applies to: by 01's image type and provider (no providers: every provider)."""

    image_types: frozenset[str]
    providers: frozenset[str]

    def covers(self, image_type: str | None, provider: str | None) -> bool:
        if image_type not in self.image_types:
            return False
        return not self.providers or provider in self.providers


def apply_findings(table: pa.Table, findings: Callable[[dict[str, Any]], list[str]]) -> pa.Table:
    """`table` with status, reason and detail set from each row's findings ("reason: evidence",
    in the stage's reason order): none is ok, else dropped with the first reason and all of them
    in detail. Failed rows stay as they are."""
    statuses, reasons, details = [], [], []
    for row in table.to_pylist():
        if row["status"] == "failed":
            statuses.append(row["status"])
            reasons.append(row["reason"])
            details.append(row["detail"])
            continue
        found = findings(row)
        statuses.append("dropped" if found else "ok")
        reasons.append(found[0].split(":", 1)[0] if found else None)
        details.append("; ".join(found) if found else None)
    for name, values in (("status", statuses), ("reason", reasons), ("detail", details)):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))
    return table
