"""Source readers of stage 01: provider exports -> streams of normalized image records.

Sources are given as `KIND:PATH`:

- `gbif`: a Darwin Core Archive (zip or folder with meta.xml): one record per multimedia
  extension row, joined to its occurrence core row (see `dwca.py`); licence and rights holder
  are the media row's, else its occurrence's.
- `eol`: an EOL media manifest CSV (`EOL content ID, EOL page ID, Medium Source URL,
  EOL Full-Size Copy URL, License Name, Copyright Owner`).
  With a taxon file (EOL's Dynamic Hierarchy `taxon.tab`, see `eol_taxa.py`), every row gets
  its page's scientific name and higher classification.
- `table`: any CSV (TSV if named `.tsv`/`.tab`; gzip/bz2/zstd by extension) or Parquet file with
  a `url` column and optional record columns.
- `bioscan`: BIOSCAN-5M's metadata CSV; images read in place from the published zip or its
  extracted folder (`bioscan.py`).
- `fathomnet`: a FathomNet COCO export (`fathomnet.py`).
- `folder`: a CSV of labels whose `file` column names images under the CSV's folder (`folder.py`).

Local images (bioscan, folder) carry `local_root` and `local_member` for 02, and a
`local://` URL (see `pipeline.local_images`). Readers may decide a row's drop themselves
(`reader_reason`, `reader_detail`: an unknown EOL page, a FathomNet image with several
concepts); the rules apply it after the URL checks.

Every reader streams (bounded memory) and yields record batches with exactly `RECORD_SCHEMA`:
all strings, trimmed, blank -> null, plus `source_row` (0-based row in the source file). Bad
input raises `pipeline.errors.InputError` naming the file and the row, column or byte (bytes
that the file's encoding cannot decode: their byte offset and line).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError
from stages.ingest import bioscan, fathomnet, folder
from stages.ingest.dwca import (
    DEFAULT_JOIN_MEMORY_BYTES,
    Opener,
    TextDialect,
    blank_to_null,
    iter_delimited,
    iter_multimedia,
    read_header,
    validate_archive,
)
from stages.ingest.eol_taxa import EolTaxa
from stages.ingest.options import DEFAULT_OPTIONS, ProviderOptions

SOURCE_KINDS = ("gbif", "eol", "table", "bioscan", "fathomnet", "folder")
LOCAL_KINDS = ("bioscan", "folder")

STRING_FIELDS = (
    "provider", "source_kind", "source_file", "source_id", "occurrence_id", "url", "media_type",
    "media_format", "scientific_name", "kingdom", "phylum", "class", "order", "family", "genus",
    "species", "common_name", "license", "rights_holder", "basis_of_record", "publisher",
    "event_remarks", "split", "local_root", "local_member", "reader_reason", "reader_detail",
)  # fmt: skip
RECORD_SCHEMA = pa.schema(
    [pa.field(name, pa.string()) for name in STRING_FIELDS] + [pa.field("source_row", pa.int64())]
)

# Optional columns of a `table` source (matched case-insensitively, surrounding spaces ignored);
# any other column is ignored. `url` is required.
TABLE_COLUMNS = (
    "url", "source_id", "provider", "occurrence_id", "scientific_name", "kingdom", "phylum",
    "class", "order", "family", "genus", "species", "common_name", "license", "rights_holder",
    "basis_of_record", "publisher", "event_remarks", "media_type", "media_format",
)  # fmt: skip
# EOL media manifest header -> record column. The full-size copy on EOL's own server is what the
# original pipeline downloaded; the medium source URL (the provider's copy) is not carried.
EOL_COLUMNS = {
    "EOL content ID": "source_id",
    "EOL page ID": "occurrence_id",
    "EOL Full-Size Copy URL": "url",
    "License Name": "license",
    "Copyright Owner": "rights_holder",
}
EOL_REQUIRED = ("EOL content ID", "EOL Full-Size Copy URL")
PROVIDER_DEFAULTS = {"gbif": "gbif", "eol": "eol", "bioscan": "bioscan", "fathomnet": "fathomnet"}
PARQUET_MAGIC = b"PAR1"
# Rows per chunk of the validation scan (memory/speed only).
VALIDATE_CHUNK_ROWS = 65536


@dataclass(frozen=True)
class SourceSummary:
    """What `validate_source` found: the file's record rows (-1 when not scanned) and, per
    record column (gbif also `specific_epithet` and the core's `occurrence_license` and
    `occurrence_rights_holder` fallbacks), the source column or DwC term it comes from."""

    kind: str
    path: Path
    rows: int
    columns: dict[str, str] = field(default_factory=dict)


def parse_source_spec(spec: str) -> tuple[str, Path]:
    """`"KIND:PATH"` -> (kind, path). Raises InputError for a malformed spec or unknown kind."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise InputError(spec, f"source must be given as KIND:PATH (KIND: {', '.join(SOURCE_KINDS)})")
    _check_kind(kind.strip().lower(), path)
    return kind.strip().lower(), Path(path)


def _check_kind(kind: str, path: object) -> None:
    if kind not in SOURCE_KINDS:
        raise InputError(path, f"unknown source kind {kind!r} (expected {', '.join(SOURCE_KINDS)})")


def _check_path(kind: str, path: Path) -> None:
    _check_kind(kind, path)
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_dir():
        if kind != "gbif":
            raise InputError(path, f"is a folder; a {kind} source must be a file")
        return
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")


def validate_source(
    kind: str, path: Path, *, deep: bool = True, options: ProviderOptions = DEFAULT_OPTIONS
) -> SourceSummary:
    """Check a source before anything is written; raise InputError naming the problem.

    Always: known kind, path exists, not a zero-byte file, required columns (table: `url`;
    eol: `EOL content ID`, `EOL Full-Size Copy URL`), Parquet column types, DwC-A meta.xml and
    its multimedia extension. With `deep` the columns that ingest reads are streamed once more
    (bounded memory), which finds non-UTF-8 bytes and malformed rows anywhere in the file.
    """
    path = Path(path)
    _check_path(kind, path)
    if kind == "gbif":
        return _validate_dwca(path, deep)
    if kind == "eol":
        mapping = _eol_mapping(path)
    elif kind == "bioscan":
        mapping = bioscan.mapping(path)
        bioscan.image_type(bioscan.image_root(path, options), options)
    elif kind == "fathomnet":
        mapping = {}
    elif kind == "folder":
        mapping = folder.mapping(path)
    elif _is_parquet(path):
        mapping = _parquet_mapping(path)
    else:
        mapping = _table_mapping(path)
    rows = -1
    if deep:
        rows = sum(b.num_rows for b in iter_source(kind, path, VALIDATE_CHUNK_ROWS, options=options))
    return SourceSummary(kind, path, rows, dict(mapping))


def _validate_dwca(path: Path, deep: bool) -> SourceSummary:
    rows, columns = validate_archive(path, deep, VALIDATE_CHUNK_ROWS)
    return SourceSummary("gbif", path, rows, columns)


def iter_source(
    kind: str,
    path: Path,
    chunk_rows: int,
    default_provider: str | None = None,
    *,
    join_memory_bytes: int = DEFAULT_JOIN_MEMORY_BYTES,
    temp_dir: Path | None = None,
    options: ProviderOptions = DEFAULT_OPTIONS,
    eol_taxa: EolTaxa | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a source as record batches of at most `chunk_rows` rows with `RECORD_SCHEMA`.

    `provider`: gbif -> "gbif", eol -> "eol", table -> its `provider` column where set, else
    `default_provider`, else the file name up to its first dot. A non-None `default_provider`
    also replaces "gbif"/"eol". `source_kind` is `kind`; `source_file` the file read (for a
    DwC-A, `<archive>!/<member>` or `<folder>/<member>`). `eol_taxa`: the taxon file that names
    an eol source's pages (None: the manifest's own columns only). `options`: provider settings.

    Row order is deterministic: file order for eol and table sources; for gbif, see
    `dwca.iter_multimedia` (file order unless the join spilled to `temp_dir` because the
    archive's core + multimedia files exceed `join_memory_bytes`). Raises InputError.
    """
    path = Path(path)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    _check_path(kind, path)
    provider = default_provider or PROVIDER_DEFAULTS.get(kind) or path.name.split(".")[0] or path.name
    if kind == "gbif":
        tables = iter_multimedia(path, chunk_rows, join_memory_bytes=join_memory_bytes, temp_dir=temp_dir)
    elif kind == "eol":
        tables = _iter_csv(path, _eol_mapping(path), _csv_dialect(path), chunk_rows)
        if eol_taxa is not None:
            tables = (eol_taxa.annotate(t) for t in tables)
    elif kind == "bioscan":
        tables = bioscan.iter_tables(path, chunk_rows, options)
    elif kind == "fathomnet":
        tables = fathomnet.iter_tables(path, chunk_rows, options)
    elif kind == "folder":
        tables = folder.iter_tables(path, chunk_rows)
    elif _is_parquet(path):
        tables = _iter_parquet(path, _parquet_mapping(path), chunk_rows)
    else:
        tables = _iter_csv(path, _table_mapping(path), _csv_dialect(path), chunk_rows)
    for table in tables:
        yield _to_record_batch(table, kind, provider)


def _to_record_batch(table: pa.Table, kind: str, provider: str) -> pa.RecordBatch:
    n = table.num_rows
    names = set(table.column_names)
    columns = []
    for name in RECORD_SCHEMA.names:
        if name == "source_kind":
            column = pa.array([kind] * n, pa.string())
        elif name == "provider":
            given = table.column("provider") if "provider" in names else pa.nulls(n, pa.string())
            column = pc.coalesce(given, provider)
        elif name in names:
            column = table.column(name)
        else:
            column = pa.nulls(n, RECORD_SCHEMA.field(name).type)
        columns.append(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    return pa.RecordBatch.from_arrays(columns, schema=RECORD_SCHEMA)


# ---------------------------------------------------------------------------------------------
# CSV (eol, table)
# ---------------------------------------------------------------------------------------------


def _opener(path: Path) -> Opener:
    # Decompresses .gz, .bz2, .zst... by extension.
    return lambda: pa.input_stream(str(path), compression="detect")


def _csv_dialect(path: Path) -> TextDialect:
    suffixes = [s.lower() for s in path.suffixes]
    tab = any(s in (".tsv", ".tab") for s in suffixes)
    return TextDialect(delimiter="\t" if tab else ",", quote_char='"', header=True)


def _match_columns(path: Path, header: list[str], wanted: dict[str, str]) -> dict[str, str]:
    """Map record column -> header name; `wanted` maps lower-cased source name -> record column.
    A source name found twice (ignoring case and spaces) is an error."""
    seen: dict[str, str] = {}
    for name in header:
        key = name.strip().lower()
        if key in wanted:
            if key in seen:
                raise InputError(path, f"column {name.strip()!r} appears twice in the header")
            seen[key] = name
    return {wanted[key]: name for key, name in seen.items()}


def _table_mapping(path: Path) -> dict[str, str]:
    header = read_header(_opener(path), str(path), _csv_dialect(path))
    mapping = _match_columns(path, header, {c: c for c in TABLE_COLUMNS})
    if "url" not in mapping:
        shown = ", ".join(repr(h) for h in header[:20])
        raise InputError(path, f"missing required column 'url' (columns: {shown})")
    return mapping


def _eol_mapping(path: Path) -> dict[str, str]:
    header = read_header(_opener(path), str(path), _csv_dialect(path))
    # The EOL headers win over record-named columns that would fill the same record column.
    wanted = {c: c for c in TABLE_COLUMNS if c not in EOL_COLUMNS.values()}
    wanted.update({name.lower(): column for name, column in EOL_COLUMNS.items()})
    mapping = _match_columns(path, header, wanted)
    present = {h.strip().lower() for h in header}
    for required in EOL_REQUIRED:
        if required.lower() not in present:
            raise InputError(path, f"missing required EOL manifest column {required!r}")
    return mapping


def _iter_csv(
    path: Path, mapping: dict[str, str], dialect: TextDialect, chunk_rows: int
) -> Iterator[pa.Table]:
    tables = iter_delimited(_opener(path), str(path), dialect, mapping, chunk_rows)
    for table in tables:
        yield table.append_column("source_file", pa.array([str(path)] * table.num_rows))


# ---------------------------------------------------------------------------------------------
# Parquet (table)
# ---------------------------------------------------------------------------------------------


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == PARQUET_MAGIC


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(path, f"not a readable Parquet file: {exc}") from None


def _string_like(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _parquet_mapping(path: Path) -> dict[str, str]:
    """Record column -> Parquet column. `url` must be a string column; other record columns
    may be strings or integers (ids are often stored as int64), which are cast to strings."""
    schema = _parquet_file(path).schema_arrow
    mapping = _match_columns(path, schema.names, {c: c for c in TABLE_COLUMNS})
    if "url" not in mapping:
        shown = ", ".join(repr(n) for n in schema.names[:20])
        raise InputError(path, f"missing required column 'url' (columns: {shown})")
    for column, name in mapping.items():
        dtype = schema.field(name).type
        ok = _string_like(dtype) or (column != "url" and pa.types.is_integer(dtype))
        if not ok:
            expected = "string" if column == "url" else "string or integer"
            raise InputError(path, f"column {name!r} has type {dtype}, expected {expected}")
    return mapping


def _iter_parquet(path: Path, mapping: dict[str, str], chunk_rows: int) -> Iterator[pa.Table]:
    reader = _parquet_file(path)
    row = 0
    try:
        for batch in reader.iter_batches(batch_size=chunk_rows, columns=list(mapping.values())):
            try:
                batch.validate(full=True)  # catches invalid UTF-8 in string columns
            except pa.ArrowInvalid as exc:
                last = row + batch.num_rows - 1
                raise InputError(path, f"rows {row}-{last}: invalid data: {exc}") from None
            out = {}
            for column, name in mapping.items():
                values = batch.column(name)
                if pa.types.is_dictionary(values.type):
                    values = values.dictionary_decode()
                out[column] = blank_to_null(values.cast(pa.string()))
            n = batch.num_rows
            out["source_file"] = pa.array([str(path)] * n, pa.string())
            out["source_row"] = pa.array(range(row, row + n), pa.int64())
            row += n
            yield pa.table(out)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(path, f"cannot read Parquet data: {exc}") from None
