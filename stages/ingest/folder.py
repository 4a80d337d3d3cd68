"""A folder of images with a CSV of labels (`folder:labels.csv`): the images live under the CSV's
own folder (its root), one CSV row per image.

Columns (header names, case-insensitive): `file` (required: the image's path relative to the
root, '/'-separated), and optionally the `table` record columns (source_id, provider,
scientific_name, kingdom ... species, common_name, license, rights_holder, occurrence_id,
basis_of_record, publisher, split). source_id defaults to `file`. A path that is absolute or
contains `..` is dropped `unsafe_path` here; one that resolves outside the root through a
symlink is dropped by 02 when it would read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError
from pipeline.local_images import local_url
from stages.ingest.dwca import TextDialect, iter_delimited, read_header

DIALECT = TextDialect(delimiter=",", quote_char='"', header=True)
OPTIONAL = (
    "source_id", "provider", "occurrence_id", "scientific_name", "kingdom", "phylum", "class",
    "order", "family", "genus", "species", "common_name", "license", "rights_holder",
    "basis_of_record", "publisher", "split",
)  # fmt: skip


def _opener(path: Path):
    return lambda: pa.input_stream(str(path), compression="detect")


def mapping(path: Path) -> dict[str, str]:
    header = read_header(_opener(path), str(path), DIALECT)
    present = {h.strip().lower(): h for h in header}
    if "file" not in present:
        shown = ", ".join(repr(h) for h in header[:20])
        raise InputError(
            path, f"missing required column 'file' (the image path under {path.parent}; columns: {shown})"
        )
    out = {"_file": present["file"]}
    out.update({name: present[name] for name in OPTIONAL if name in present})
    return out


def iter_tables(path: Path, chunk_rows: int) -> Iterator[pa.Table]:
    root = Path(path).resolve().parent
    for table in iter_delimited(_opener(path), str(path), DIALECT, mapping(path), chunk_rows):
        files = table["_file"]
        out = {name: table[name] for name in table.column_names if not name.startswith("_")}
        n = table.num_rows
        given = out.get("source_id", pa.nulls(n, pa.string()))
        out["source_id"] = pc.coalesce(given, files)
        out["local_root"] = pa.array([str(root)] * n, pa.string())
        out["local_member"] = files
        out["url"] = pa.array([local_url(root, f) if f else None for f in files.to_pylist()], pa.string())
        out["source_file"] = pa.array([str(path)] * n, pa.string())
        yield pa.table(out)
