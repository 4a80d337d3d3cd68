"""The 02 download manifest: schema and the table built from decided rows."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipeline.ledger import stage_schema
from stages.download import reasons as R
from stages.download.scheduler import RowFinal

SCHEMA = stage_schema(
    pa.field("url", pa.string()),
    pa.field("host", pa.string()),
    pa.field("http_status", pa.int32()),
    pa.field("final_url", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("bytes", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("stored_width", pa.int32()),
    pa.field("stored_height", pa.int32()),
    pa.field("stored_bytes", pa.int64()),
    pa.field("md5", pa.string()),
    pa.field("stored_md5", pa.string()),
    pa.field("attempts", pa.int32()),
    pa.field("attempt_log", pa.string()),
    pa.field("robots", pa.string()),
    pa.field("x_robots_tag", pa.string()),
    pa.field("retry_after_s", pa.float64()),
    pa.field("wait_s", pa.float64()),
    pa.field("elapsed_s", pa.float64()),
    pa.field("fetched_at", pa.timestamp("ms", tz="UTC")),
)

# Columns that depend on timing: everything else is the same on a rerun against the same server.
VOLATILE_COLUMNS: tuple[str, ...] = ("wait_s", "elapsed_s", "fetched_at")


@dataclass(frozen=True)
class RowInput:
    uuid: str
    url: str
    host: str
    # Local images (pipeline.local_images): the archive or folder, and the path inside it.
    local_root: str | None = None
    local_member: str | None = None


def manifest_row(row: RowInput, final: RowFinal) -> dict:
    out = final.outcome
    reason = out.reason
    return {
        "uuid": row.uuid,
        "status": "ok" if reason is None else R.status_of(reason),
        "reason": reason,
        "detail": out.detail,
        "url": row.url,
        "host": row.host,
        "http_status": out.http_status,
        "final_url": out.final_url,
        "content_type": out.content_type,
        "bytes": out.body_bytes,
        "width": out.width,
        "height": out.height,
        "stored_width": out.stored_width,
        "stored_height": out.stored_height,
        "stored_bytes": out.stored_bytes,
        "md5": out.md5,
        "stored_md5": out.stored_md5,
        "attempts": final.attempts,
        "attempt_log": " ".join(final.log) or None,
        "robots": out.robots,
        "x_robots_tag": out.x_robots_tag,
        "retry_after_s": final.retry_after_s,
        "wait_s": round(final.wait_s, 3),
        "elapsed_s": round(final.elapsed_s, 3),
        "fetched_at": final.fetched_at_ms,
    }


def build_table(rows: list[dict]) -> pa.Table:
    columns = {name: [r[name] for r in rows] for name in SCHEMA.names}
    return pa.table([pa.array(columns[f.name], f.type) for f in SCHEMA], schema=SCHEMA)
