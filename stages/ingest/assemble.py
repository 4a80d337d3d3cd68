"""Final touches on one host sub-bucket (unique ids, URL dedup) and reading a partition back."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DUPLICATE_URL = "duplicate_url"
COPY_TAG = "#copy"


def finish_sub_bucket(table: pa.Table) -> pa.Table:
    """Rows sorted by `_seq`: the first of each URL stays; later ones are dropped, and records
    repeated exactly (same provider, record id and URL, hence same uuid) get derived ids."""
    frame = pd.DataFrame({
        "uuid": table["uuid"].to_pandas(),
        "status": table["status"].to_pandas(),
        "reason": table["reason"].to_pandas(),
        "detail": table["detail"].to_pandas(),
        "url": table["url"].to_pandas(),
    })  # fmt: skip
    _drop_repeated_records(frame)
    _drop_duplicate_urls(frame)
    for name in ("uuid", "status", "reason", "detail"):
        values = pa.array(frame[name], pa.string(), from_pandas=True)
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def _drop_repeated_records(frame: pd.DataFrame) -> None:
    copy_number = frame.groupby("uuid").cumcount().to_numpy()
    repeats = np.flatnonzero(copy_number > 0)
    if not len(repeats):
        return
    ok = frame["status"].to_numpy()[repeats] == "ok"
    dropping = repeats[ok]
    frame.loc[dropping, "status"] = "dropped"
    frame.loc[dropping, "reason"] = DUPLICATE_URL
    frame.loc[dropping, "detail"] = "repeat of sample " + frame.loc[dropping, "uuid"]
    frame.loc[repeats, "uuid"] = [
        str(uuidlib.uuid5(uuidlib.UUID(frame.at[i, "uuid"]), f"{COPY_TAG}{copy_number[i]}")) for i in repeats
    ]


def _drop_duplicate_urls(frame: pd.DataFrame) -> None:
    ok = frame.index[frame["status"] == "ok"]
    urls = frame.loc[ok, "url"]
    later = urls.duplicated(keep="first")
    if not later.any():
        return
    first_uuid = frame.loc[ok, "uuid"].groupby(urls).transform("first")
    dropping = later.index[later.to_numpy()]
    frame.loc[dropping, "status"] = "dropped"
    frame.loc[dropping, "reason"] = DUPLICATE_URL
    frame.loc[dropping, "detail"] = "same URL as sample " + first_uuid.loc[dropping]


def read_partition(staging: Path, file: str, row_group: int, schema: pa.Schema) -> pa.Table:
    table = pq.ParquetFile(staging / file).read_row_group(row_group)
    return table.select(schema.names).cast(schema)
