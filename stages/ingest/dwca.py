"""Delimited text and Darwin Core Archives: meta.xml parsing and streaming reads.

A Darwin Core Archive (DwC-A) is a zip file or a folder holding `meta.xml`, one core data file
(for GBIF downloads: `occurrence.txt`, rowType Occurrence) and extension files linked to the core
by a `coreid` column (GBIF: `multimedia.txt`, rowType Multimedia). `meta.xml` gives each file's
dialect (delimiter, quote character, header lines, encoding) and maps column indexes to terms.

`iter_multimedia` emits one record per multimedia extension row joined to its core row. The join
is a Grace hash join: when the core and extension files are larger than `join_memory_bytes`, both
sides are hash-partitioned on the core id into temporary Arrow IPC files and each partition is
joined on its own, so memory stays bounded by the budget (not by the number of occurrences).

`iter_delimited` is the streaming reader used for every delimited file (DwC-A data files, EOL
manifests, CSV tables): all columns read as strings (never type-inferred), values trimmed, blank
values null, malformed input turned into `InputError` naming the file, row or byte offset.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import math
import tempfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc

from pipeline.errors import InputError

# rowType URIs of the extensions whose rows are media records (GBIF's and Audubon Core's).
MULTIMEDIA_ROW_TYPES = (
    "http://rs.gbif.org/terms/1.0/Multimedia",
    "http://rs.tdwg.org/ac/terms/Multimedia",
)
DWC_TEXT_NS = "http://rs.tdwg.org/dwc/text/"
# Bytes handed to the CSV parser at a time. Changes speed and memory, never the output (batches
# are re-cut to `chunk_rows`). A single row must fit in one block.
READ_BLOCK_BYTES = 4 << 20
# Default memory budget of the core/extension join (`[ingest] dwca_join_memory_mb`).
DEFAULT_JOIN_MEMORY_BYTES = 1024 << 20

# Output column -> term local names, in order of preference; per row the first non-null wins.
CORE_TERMS: dict[str, tuple[str, ...]] = {
    "occurrence_id": ("occurrenceID",),
    "basis_of_record": ("basisOfRecord",),
    "scientific_name": ("scientificName",),
    "kingdom": ("kingdom",),
    "phylum": ("phylum",),
    "class": ("class",),
    "order": ("order",),
    "family": ("family",),
    "genus": ("genus",),
    "species": ("species",),
    "specific_epithet": ("specificEpithet",),
    "common_name": ("vernacularName",),
    "publisher": ("publisher", "institutionCode", "datasetName"),
    "event_remarks": ("eventRemarks",),
    # The occurrence's licence and rights holder: what a media row without its own falls back to.
    "occurrence_license": ("license",),
    "occurrence_rights_holder": ("rightsHolder",),
}
MEDIA_TERMS: dict[str, tuple[str, ...]] = {
    # Audubon Core puts the fetchable URL in accessURI; GBIF Multimedia in identifier.
    "url": ("accessURI", "identifier"),
    "media_type": ("type",),
    "media_format": ("format",),
    "license": ("license", "UsageTerms", "rights"),
    "rights_holder": ("rightsHolder", "Owner"),
}
RECORD_COLUMNS = (
    "source_file", "source_row", "source_id", "occurrence_id", "url", "media_type",
    "media_format", "scientific_name", "kingdom", "phylum", "class", "order", "family", "genus",
    "species", "common_name", "license", "rights_holder", "basis_of_record", "publisher",
    "event_remarks",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Delimited text
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDialect:
    """How a delimited file is written."""

    delimiter: str = ","
    quote_char: str | None = '"'  # None: no quoting (GBIF's tab-separated files)
    skip_rows: int = 0  # leading rows to ignore (DwC-A ignoreHeaderLines)
    encoding: str = "utf-8"
    header: bool = True  # column names come from the first row after skip_rows


Opener = Callable[[], IO[bytes]]


def blank_to_null(array: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Trim whitespace; empty strings become null."""
    trimmed = pc.utf8_trim_whitespace(array)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def rebatch(tables: Iterable[pa.Table | pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into tables of exactly `rows` rows (the last may be shorter)."""
    pending: list[pa.Table] = []
    count = 0
    for item in tables:
        table = pa.Table.from_batches([item]) if isinstance(item, pa.RecordBatch) else item
        if table.num_rows == 0:
            continue
        pending.append(table)
        count += table.num_rows
        while count >= rows:
            merged = pa.concat_tables(pending)
            yield merged.slice(0, rows)
            rest = merged.slice(rows)
            pending, count = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if count:
        yield pa.concat_tables(pending)


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


class UndecodableBytes(ValueError):
    """Bytes that a file's encoding cannot decode: their byte offset and 1-based line."""

    def __init__(self, offset: int, line: int):
        super().__init__(f"invalid byte at offset {offset} (line {line})")
        self.offset = offset
        self.line = line


class _DecodeTracker:
    """Decodes a byte stream piece by piece, keeping the byte offset and line it has reached."""

    def __init__(self, encoding: str):
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._offset = 0  # bytes fed before the current piece
        self._lines = 1

    def feed(self, data: bytes) -> None:
        """Decode the next piece (b"" at the end); raise UndecodableBytes at a bad sequence."""
        state = self._decoder.getstate()
        pending = len(state[0])  # an incomplete sequence carried over from the previous piece
        try:
            text = self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:  # exc.start counts from the carried-over bytes
            self._decoder.setstate(state)
            valid = self._decoder.decode(data[: max(0, exc.start - pending)])
            line = self._lines + valid.count("\n")
            raise UndecodableBytes(self._offset - pending + exc.start, line) from None
        self._lines += text.count("\n")
        self._offset += len(data)


class _CheckedStream(io.RawIOBase):
    """A byte stream that decodes what it passes on, so that bytes the file's encoding cannot
    decode raise UndecodableBytes before the CSV parser sees them. The parser must not get
    them: pyarrow decodes a malformed row's text for the invalid-row handler, and when that
    fails it prints an "Exception ignored" traceback and the raw bytes instead of raising."""

    def __init__(self, raw: IO[bytes], encoding: str):
        super().__init__()
        self._raw = raw
        self._tracker = _DecodeTracker(encoding)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        self._tracker.feed(data)
        return data

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _open_checked(opener: Opener, dialect: TextDialect) -> IO[bytes]:
    return _CheckedStream(opener(), dialect.encoding)


def locate_undecodable(
    opener: Opener, encoding: str = "utf-8", chunk_bytes: int = 1 << 20
) -> UndecodableBytes | None:
    """Where the first bytes that `encoding` cannot decode are, or None if the file decodes."""
    tracker = _DecodeTracker(encoding)
    with opener() as handle:
        while True:
            chunk = handle.read(chunk_bytes)
            try:
                tracker.feed(chunk)
            except UndecodableBytes as found:
                return found
            if not chunk:
                return None


def _undecodable_error(label: str, encoding: str, found: UndecodableBytes) -> InputError:
    what = "UTF-8" if _is_utf8(encoding) else f"text in encoding {encoding}"
    return InputError(label, f"not valid {what}: {found}")


def _one_line(message: str) -> str:
    # Parser messages can quote raw row text; the CLI promises a single line.
    return " ".join(message.split())


class _RowProblem:
    """Captures the first malformed row the CSV parser reports (row number, text)."""

    def __init__(self) -> None:
        self.row: Any = None

    def __call__(self, row: Any) -> str:
        if self.row is None:
            self.row = row
        return "error"


def _input_error(label: str, opener: Opener, dialect: TextDialect, exc: Exception,
                 problem: _RowProblem) -> InputError:  # fmt: skip
    message = str(exc)
    if problem.row is not None:
        row = problem.row
        text = row.text if len(row.text) <= 80 else row.text[:77] + "..."
        where = f"row {row.number}" if row.number is not None else "a row"
        return InputError(
            label,
            f"{where} (counting header lines): expected {row.expected_columns} columns, "
            f"got {row.actual_columns}: {text!r}",
        )
    if isinstance(exc, UnicodeDecodeError) or "UTF8" in message.upper().replace("-", ""):
        found = locate_undecodable(opener, dialect.encoding)
        if found is not None:
            return _undecodable_error(label, dialect.encoding, found)
        return InputError(label, f"not valid text in encoding {dialect.encoding}: {_one_line(message)}")
    return InputError(label, f"cannot parse as delimited text: {_one_line(message)}")


def read_header(opener: Opener, label: str, dialect: TextDialect) -> list[str]:
    """Column names of a delimited file with a header row (reads only the first block).

    Undecodable bytes in the header lines are an error; later ones are left to the full read
    (`iter_delimited`), and the names come from the whole lines before them."""
    try:
        return _header_names(_open_checked(opener, dialect), label, opener, dialect)
    except UndecodableBytes as found:
        if found.line <= dialect.skip_rows + 1:
            raise _undecodable_error(label, dialect.encoding, found) from None
        valid_bytes = found.offset
    with opener() as handle:
        head = handle.read(valid_bytes)
    # Whole lines only: a row cut at the bad bytes would look malformed.
    return _header_names(io.BytesIO(head[: head.rfind(b"\n") + 1]), label, opener, dialect)


def _header_names(handle: IO[bytes], label: str, opener: Opener, dialect: TextDialect) -> list[str]:
    problem = _RowProblem()
    try:
        with handle:
            reader = pacsv.open_csv(
                handle,
                read_options=_read_options(dialect),
                parse_options=_parse_options(dialect, problem),
                convert_options=pacsv.ConvertOptions(include_columns=[]),
            )
            return list(reader.schema.names)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise InputError(label, "empty file (no header row)") from None
        raise _input_error(label, opener, dialect, exc, problem) from None
    except UnicodeDecodeError as exc:  # column names are decoded when read
        raise _input_error(label, opener, dialect, exc, problem) from None


def _read_options(dialect: TextDialect, *, autogenerate: bool = False) -> pacsv.ReadOptions:
    # use_threads=False makes the parser report the number of a malformed row.
    options: dict[str, Any] = {
        "block_size": READ_BLOCK_BYTES,
        "use_threads": False,
        "skip_rows": dialect.skip_rows,
        "autogenerate_column_names": autogenerate,
    }
    if not _is_utf8(dialect.encoding):
        options["encoding"] = dialect.encoding
    return pacsv.ReadOptions(**options)


def _parse_options(dialect: TextDialect, problem: _RowProblem) -> pacsv.ParseOptions:
    quote = dialect.quote_char if dialect.quote_char else False
    return pacsv.ParseOptions(
        delimiter=dialect.delimiter,
        quote_char=quote,
        double_quote=bool(quote),
        newlines_in_values=bool(quote),
        invalid_row_handler=problem,
    )


def iter_delimited(
    opener: Opener,
    label: str,
    dialect: TextDialect,
    columns: Mapping[str, int | str],
    chunk_rows: int,
) -> Iterator[pa.Table]:
    """Stream selected columns of a delimited file as string tables of `chunk_rows` rows.

    `columns` maps output name -> column: a 0-based index (files read without header names, as
    DwC-A data files are) or a header name (`dialect.header`). A missing index gives nulls (rows
    shorter than the first); a missing header name is the caller's job to check. Each table also
    has `source_row`: the 0-based data row number in the file. Raises InputError.
    """
    if dialect.header:
        names = {name: str(col) for name, col in columns.items()}
        read_options = _read_options(dialect)
    else:
        names = {name: f"f{col}" for name, col in columns.items()}
        read_options = _read_options(dialect, autogenerate=True)
    wanted = sorted(set(names.values()))
    problem = _RowProblem()
    convert = pacsv.ConvertOptions(
        column_types={col: pa.string() for col in wanted},
        include_columns=wanted,
        include_missing_columns=not dialect.header,
        strings_can_be_null=False,
        check_utf8=True,
    )

    def batches() -> Iterator[pa.RecordBatch]:
        with _open_checked(opener, dialect) as handle:
            try:
                reader = pacsv.open_csv(
                    handle,
                    read_options=read_options,
                    parse_options=_parse_options(dialect, problem),
                    convert_options=convert,
                )
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" in str(exc):  # header lines only: zero rows
                    return
                raise
            yield from reader

    row = 0
    try:
        for table in rebatch(batches(), chunk_rows):
            out = {name: blank_to_null(table.column(col)) for name, col in names.items()}
            out["source_row"] = pa.array(np.arange(row, row + table.num_rows, dtype=np.int64))
            row += table.num_rows
            yield pa.table(out)
    except UndecodableBytes as found:
        raise _undecodable_error(label, dialect.encoding, found) from None
    except pa.ArrowInvalid as exc:
        raise _input_error(label, opener, dialect, exc, problem) from None
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise InputError(label, f"cannot read: {exc}") from None


# ---------------------------------------------------------------------------------------------
# meta.xml
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One <field>: a column index and/or a constant default value for a term."""

    term: str
    index: int | None
    default: str | None

    @property
    def name(self) -> str:
        """The term's local name: `http://rs.tdwg.org/dwc/terms/basisOfRecord` -> basisOfRecord."""
        return self.term.rstrip("/#").replace("#", "/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DataFile:
    """A <core> or <extension> of meta.xml."""

    row_type: str
    locations: tuple[str, ...]
    dialect: TextDialect
    key_index: int | None  # <id> of the core, <coreid> of an extension
    fields: tuple[Field, ...]

    def fields_named(self, *names: str) -> list[Field]:
        """Fields whose term local name is one of `names`, in preference then file order."""
        return [f for name in names for f in self.fields if f.name == name]


@dataclass(frozen=True)
class ArchiveMeta:
    core: DataFile
    extensions: tuple[DataFile, ...]

    def multimedia(self) -> list[DataFile]:
        return [ext for ext in self.extensions if ext.row_type in MULTIMEDIA_ROW_TYPES]


_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\r": "\r", "\\r\\n": "\r\n", "\\\\": "\\", '\\"': '"'}


def _unescape(value: str) -> str:
    return _ESCAPES.get(value, value)


def _int_attr(elem: ET.Element, name: str, source: str, default: int | None = None) -> int | None:
    raw = elem.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(
            source, f"meta.xml: {elem.tag.split('}')[-1]} {name}={raw!r} is not an integer"
        ) from None
    if value < 0:
        raise InputError(source, f"meta.xml: {name}={raw!r} is negative")
    return value


def _data_file(elem: ET.Element, source: str, key_tag: str) -> DataFile:
    def find(tag: str) -> list[ET.Element]:
        return elem.findall(f"{{{DWC_TEXT_NS}}}{tag}") + elem.findall(tag)

    what = elem.tag.split("}")[-1]
    row_type = (elem.get("rowType") or "").strip()
    locations = tuple(
        (loc.text or "").strip()
        for files in find("files")
        for loc in files.findall(f"{{{DWC_TEXT_NS}}}location") + files.findall("location")
        if (loc.text or "").strip()
    )
    if not locations:
        raise InputError(source, f"meta.xml: <{what} rowType={row_type!r}> lists no file location")
    delimiter = _unescape(elem.get("fieldsTerminatedBy", ","))
    if len(delimiter) != 1:
        raise InputError(source, f"meta.xml: fieldsTerminatedBy={delimiter!r} must be one character")
    lines = _unescape(elem.get("linesTerminatedBy", "\\n"))
    if lines not in ("\n", "\r\n", "\r"):
        raise InputError(source, f"meta.xml: linesTerminatedBy={lines!r} is not a line break")
    quote = _unescape(elem.get("fieldsEnclosedBy", '"'))
    if len(quote) > 1:
        raise InputError(source, f"meta.xml: fieldsEnclosedBy={quote!r} must be one character")
    encoding = elem.get("encoding", "UTF-8").strip() or "UTF-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(source, f"meta.xml: unknown encoding {encoding!r}") from None
    dialect = TextDialect(
        delimiter=delimiter,
        quote_char=quote or None,
        skip_rows=_int_attr(elem, "ignoreHeaderLines", source, 0) or 0,
        encoding=encoding,
        header=False,
    )
    keys = find(key_tag)
    key_index = _int_attr(keys[0], "index", source) if keys else None
    fields = []
    for field in find("field"):
        term = (field.get("term") or "").strip()
        index = _int_attr(field, "index", source)
        default = field.get("default")
        if not term or (index is None and default is None):
            raise InputError(source, f"meta.xml: <field> in <{what}> needs a term and an index or default")
        fields.append(Field(term, index, default))
    return DataFile(row_type, locations, dialect, key_index, tuple(fields))


def parse_meta(xml: bytes, source: str) -> ArchiveMeta:
    """Parse meta.xml; `source` names the archive in errors."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InputError(source, f"meta.xml is not well-formed XML: {exc}") from None
    cores = root.findall(f"{{{DWC_TEXT_NS}}}core") + root.findall("core")
    if len(cores) != 1:
        raise InputError(source, f"meta.xml: expected one <core>, found {len(cores)}")
    extensions = root.findall(f"{{{DWC_TEXT_NS}}}extension") + root.findall("extension")
    return ArchiveMeta(
        core=_data_file(cores[0], source, "id"),
        extensions=tuple(_data_file(ext, source, "coreid") for ext in extensions),
    )


# ---------------------------------------------------------------------------------------------
# Archive access (zip or folder)
# ---------------------------------------------------------------------------------------------


class Archive:
    """A DwC-A opened from a zip file or a folder. Use as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.label = str(path)
        self._zip: zipfile.ZipFile | None = None
        self._base = ""
        if self.path.is_dir():
            if not (self.path / "meta.xml").is_file():
                raise InputError(self.label, "not a Darwin Core Archive: no meta.xml in the folder")
            meta_bytes = (self.path / "meta.xml").read_bytes()
        else:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(self.label, f"not a zip file or folder: {exc}") from None
            metas = sorted(
                (n for n in self._zip.namelist() if n.rsplit("/", 1)[-1] == "meta.xml"),
                key=lambda n: (n.count("/"), n),
            )
            if not metas:
                self.close()
                raise InputError(self.label, "not a Darwin Core Archive: no meta.xml in the zip")
            self._base = metas[0][: -len("meta.xml")]
            meta_bytes = self._zip.read(metas[0])
        self.meta = parse_meta(meta_bytes, self.label)
        for data_file in (self.meta.core, *self.meta.extensions):
            for location in data_file.locations:
                if not self.exists(location):
                    self.close()
                    raise InputError(self.label, f"meta.xml names {location!r}, not in the archive")

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def exists(self, location: str) -> bool:
        if self._zip is None:
            return (self.path / location).is_file()
        try:
            self._zip.getinfo(self._base + location)
        except KeyError:
            return False
        return True

    def size(self, location: str) -> int:
        """Uncompressed size in bytes."""
        if self._zip is None:
            return (self.path / location).stat().st_size
        return self._zip.getinfo(self._base + location).file_size

    def describe(self, location: str) -> str:
        """How records name this file in `source_file`: `<folder>/<file>` or `<zip>!/<file>`."""
        if self._zip is None:
            return str(self.path / location)
        return f"{self.path}!/{self._base}{location}"

    def opener(self, location: str) -> Opener:
        if self._zip is None:
            path = self.path / location
            return lambda: open(path, "rb")
        archive = self._zip
        name = self._base + location
        return lambda: archive.open(name)


# ---------------------------------------------------------------------------------------------
# Multimedia records: extension rows joined to their core rows
# ---------------------------------------------------------------------------------------------


def _coalesce(arrays: list[pa.Array]) -> pa.Array:
    return arrays[0] if len(arrays) == 1 else pc.coalesce(*arrays)


def _column_plan(data_file: DataFile, terms: Mapping[str, tuple[str, ...]]) -> dict[str, list[Field]]:
    return {out: data_file.fields_named(*names) for out, names in terms.items()}


def _terms_schema(key: str, plan: Mapping[str, list[Field]]) -> pa.Schema:
    names = [key, *plan]
    return pa.schema([(n, pa.string()) for n in names] + [("source_row", pa.int64())])


def _read_terms(
    archive: Archive,
    data_file: DataFile,
    location: str,
    key: str,
    plan: Mapping[str, list[Field]],
    chunk_rows: int,
) -> Iterator[pa.Table]:
    """Stream the key column and every planned term of one data file, coalesced per output."""
    columns: dict[str, int] = {}
    if data_file.key_index is not None:
        columns[key] = data_file.key_index
    defaults: dict[Field, str | None] = {}
    for fields in plan.values():
        for field in fields:
            if field.index is not None:
                columns[f"f{field.index}"] = field.index
            default = (field.default or "").strip()
            defaults[field] = default or None
    label = archive.describe(location)
    schema = _terms_schema(key, plan)
    for table in iter_delimited(archive.opener(location), label, data_file.dialect, columns, chunk_rows):
        n = table.num_rows
        out: dict[str, pa.Array] = {key: table.column(key) if key in columns else pa.nulls(n, pa.string())}
        for name, fields in plan.items():
            arrays = []
            for field in fields:
                default = defaults[field]
                if field.index is None:
                    arrays.append(pa.array([default] * n, pa.string()))
                elif default is not None:
                    arrays.append(pc.coalesce(table.column(f"f{field.index}"), default))
                else:
                    arrays.append(table.column(f"f{field.index}"))
            out[name] = _coalesce(arrays) if arrays else pa.nulls(n, pa.string())
        out["source_row"] = table.column("source_row")
        yield pa.table(out, schema=schema)


def _read_core(archive: Archive, plan: Mapping[str, list[Field]], chunk_rows: int) -> Iterator[pa.Table]:
    core = archive.meta.core
    for location in core.locations:
        yield from _read_terms(archive, core, location, "_id", plan, chunk_rows)


_HASH_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1 64-bit prime


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads similar keys (consecutive ids) over all partitions."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def key_hashes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint64 hash per string, the same in every process and run (null hashes as "").

    Computed on the Arrow buffers (polynomial hash of the UTF-8 bytes, then mixed), so no
    Python string objects are created."""
    array = pc.fill_null(keys, "")
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = array.cast(pa.large_string())
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + n + 1]
    lengths = np.diff(offsets).astype(np.uint64)
    hashes = lengths * np.uint64(0x9E3779B97F4A7C15)
    if offsets[-1] > offsets[0]:
        data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        starts = offsets[:-1] - offsets[0]
        position = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths.astype(np.int64))
        powers = np.cumprod(np.full(int(lengths.max()), _HASH_MULTIPLIER, dtype=np.uint64))
        terms = data.astype(np.uint64) * powers[position]
        filled = lengths > 0
        hashes[filled] += np.add.reduceat(terms, starts[filled])
    return _mix64(hashes)


def _key_hash_partition(keys: pa.ChunkedArray | pa.Array, parts: int) -> np.ndarray:
    return (key_hashes(keys) % np.uint64(parts)).astype(np.int64)


class _Spill:
    """Hash-partitioned Arrow IPC files of one side of the join."""

    def __init__(self, folder: Path, side: str, parts: int, schema: pa.Schema):
        self.paths = [folder / f"{side}-{i:04d}.arrow" for i in range(parts)]
        self.schema = schema

    def write_all(self, tables: Iterable[pa.Table], key: str) -> None:
        """Write every table's rows to the partition of their key; files are always created."""
        parts = len(self.paths)
        with contextlib.ExitStack() as stack:
            writers = [stack.enter_context(ipc.new_stream(str(p), self.schema)) for p in self.paths]
            for table in tables:
                part = _key_hash_partition(table.column(key), parts)
                order = np.argsort(part, kind="stable")
                grouped = table.take(pa.array(order))
                bounds = np.searchsorted(part[order], np.arange(parts + 1))
                for i, writer in enumerate(writers):
                    if bounds[i + 1] > bounds[i]:
                        writer.write_table(grouped.slice(bounds[i], bounds[i + 1] - bounds[i]))

    def read(self, i: int) -> pa.Table:
        with ipc.open_stream(str(self.paths[i])) as reader:
            return reader.read_all()


def _joined_batches(media: pa.Table, core: pa.Table, source_file: str, chunk_rows: int) -> Iterator[pa.Table]:
    """Left join media rows (in file order) to core rows on coreid = id, `chunk_rows` at a time.

    Only the row index of each media row's core row is computed for the whole side (one hash
    of the core ids); core columns are gathered per output chunk, so the join never
    materializes the (media rows x core columns) product at once. `index_in` returns the first
    match, so a duplicated core id joins its first row; null ids never match.
    """
    ids = core.column("_id").combine_chunks()
    positions = pc.index_in(media.column("_coreid"), value_set=ids)
    core = core.drop_columns(["_id", "source_row"])
    for start in range(0, media.num_rows, chunk_rows):
        rows = media.slice(start, chunk_rows)
        gathered = core.take(positions.slice(start, chunk_rows))
        yield _finish(rows, gathered, source_file)


def _finish(media: pa.Table, core: pa.Table, source_file: str) -> pa.Table:
    """Record columns from matching media and core rows: source id, occurrence id fallback,
    species binomial, licence and rights holder of the media row, else of its occurrence."""
    n = media.num_rows
    coreid = media.column("_coreid")
    binomial = pc.binary_join_element_wise(core.column("genus"), core.column("specific_epithet"), " ")
    columns = {
        "source_file": pa.array([source_file] * n, pa.string()),
        "source_id": coreid,
        "occurrence_id": pc.coalesce(core.column("occurrence_id"), coreid),
        "species": pc.coalesce(core.column("species"), binomial),  # null if either part is null
        "license": pc.coalesce(media.column("license"), core.column("occurrence_license")),
        "rights_holder": pc.coalesce(media.column("rights_holder"), core.column("occurrence_rights_holder")),
    }
    for name in media.column_names:
        columns.setdefault(name, media.column(name))
    for name in core.column_names:
        columns.setdefault(name, core.column(name))
    return pa.table({c: columns[c] for c in RECORD_COLUMNS})


def multimedia_files(archive: Archive) -> list[tuple[DataFile, str]]:
    """The (extension, location) pairs that hold media rows; InputError when there are none
    or when one cannot be joined or lacks a URL term."""
    found = []
    for ext in archive.meta.multimedia():
        if ext.key_index is None:
            raise InputError(archive.label, f"meta.xml: extension {ext.row_type} has no <coreid>")
        if not ext.fields_named(*MEDIA_TERMS["url"]):
            raise InputError(
                archive.label,
                f"meta.xml: extension {ext.row_type} has no identifier or accessURI field",
            )
        found.extend((ext, location) for location in ext.locations)
    if not found:
        known = " or ".join(MULTIMEDIA_ROW_TYPES)
        raise InputError(archive.label, f"meta.xml: no multimedia extension (rowType {known})")
    if archive.meta.core.key_index is None:
        raise InputError(archive.label, "meta.xml: the core has no <id> column to join on")
    return found


def validate_archive(path: Path, deep: bool, chunk_rows: int) -> tuple[int, dict[str, str]]:
    """Check meta.xml, its multimedia extension and (if `deep`) stream every column the join
    reads. Returns (multimedia rows or -1 when not deep, record column -> term used)."""
    with Archive(path) as archive:
        targets = multimedia_files(archive)
        core = archive.meta.core
        columns = {}
        for terms, data_file in ((CORE_TERMS, core), (MEDIA_TERMS, targets[0][0])):
            for out, names in terms.items():
                found = data_file.fields_named(*names)
                if found:
                    columns[out] = found[0].term
        if not deep:
            return -1, columns
        for _ in _read_core(archive, _column_plan(core, CORE_TERMS), chunk_rows):
            pass
        rows = 0
        for ext, location in targets:
            plan = _column_plan(ext, MEDIA_TERMS)
            for table in _read_terms(archive, ext, location, "_coreid", plan, chunk_rows):
                rows += table.num_rows
        return rows, columns


def _parts_needed(archive: Archive, core_locs: Iterable[str], media_loc: str, budget: int) -> int:
    """Partitions so that each holds about `budget` bytes of input text (an upper bound on the
    Arrow memory of the few columns read)."""
    total = sum(archive.size(loc) for loc in core_locs) + archive.size(media_loc)
    return max(1, math.ceil(total / max(1, budget)))


def iter_multimedia(
    path: Path,
    chunk_rows: int,
    *,
    join_memory_bytes: int = DEFAULT_JOIN_MEMORY_BYTES,
    temp_dir: Path | None = None,
) -> Iterator[pa.Table]:
    """Stream one record per multimedia extension row of a DwC-A, joined to its core row.

    Tables have the columns of `RECORD_COLUMNS` (strings; `source_row` int64). Rows come per
    extension file, then per hash partition, each partition in file order; with a single
    partition (files smaller than `join_memory_bytes`) that is exactly file order. An extension
    row whose coreid matches no core row keeps null core fields; a duplicated core id joins its
    first row. A media row's blank licence or rights holder is taken from its core row.
    Temporary partition files go to `temp_dir` (the system default if None).
    """
    with Archive(path) as archive:
        targets = multimedia_files(archive)
        core = archive.meta.core
        core_plan = _column_plan(core, CORE_TERMS)
        core_schema = _terms_schema("_id", core_plan)
        for ext, location in targets:
            media_plan = _column_plan(ext, MEDIA_TERMS)
            media_schema = _terms_schema("_coreid", media_plan)
            parts = _parts_needed(archive, core.locations, location, join_memory_bytes)
            media_tables = _read_terms(archive, ext, location, "_coreid", media_plan, chunk_rows)
            label = archive.describe(location)
            if parts == 1:
                media = _concat(media_tables, media_schema)
                core_table = _concat(_read_core(archive, core_plan, chunk_rows), core_schema)
                yield from _joined_batches(media, core_table, label, chunk_rows)
                continue
            with tempfile.TemporaryDirectory(prefix="dwca-join-", dir=temp_dir) as tmp:
                folder = Path(tmp)
                media_spill = _Spill(folder, "media", parts, media_schema)
                media_spill.write_all(media_tables, "_coreid")
                core_spill = _Spill(folder, "core", parts, core_schema)
                core_spill.write_all(_read_core(archive, core_plan, chunk_rows), "_id")
                for i in range(parts):
                    yield from _joined_batches(media_spill.read(i), core_spill.read(i), label, chunk_rows)


def _concat(tables: Iterable[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = list(tables)
    return pa.concat_tables(tables) if tables else schema.empty_table()
