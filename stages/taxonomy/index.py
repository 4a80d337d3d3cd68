"""The on-disk index of a GBIF backbone dump (`Taxon.tsv`, `VernacularName.tsv`; a zip or a
folder), built once by streaming the dump into SQLite, so that lookups against a 900 MB dump
need neither the dump nor its contents in RAM.

The index file is cached in a folder (by default under the work root) and named by a key of
the dump's path, size and mtime plus the index format version; its `meta` table records the
dump's sha256 (the identity that goes into partition inputs). A build writes to a temporary
file under an exclusive lock and renames it when complete, so a killed build leaves nothing
half-made behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import sqlite3
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline import atomic
from pipeline.digest import digest_json
from pipeline.errors import InputError
from stages.taxonomy.names import stem_canonical

# Bump when the index layout or the stemming changes: old index files are then rebuilt.
INDEX_VERSION = 1

TAXON_FILE = "Taxon.tsv"
VERNACULAR_FILE = "VernacularName.tsv"
TAXON_COLUMNS = (
    "taxonID", "parentNameUsageID", "acceptedNameUsageID", "scientificName",
    "scientificNameAuthorship", "canonicalName", "genericName", "specificEpithet", "taxonRank",
    "taxonomicStatus", "kingdom", "phylum", "class", "order", "family", "genus",
)  # fmt: skip
VERNACULAR_COLUMNS = ("taxonID", "vernacularName", "language", "country", "source")
# Rows inserted per executemany call during the build (bounds the build's memory).
INSERT_BATCH = 20_000

SCHEMA_SQL = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE taxa(
    id INTEGER PRIMARY KEY, parent_id INTEGER, accepted_id INTEGER,
    canonical TEXT, stem TEXT, scientific_name TEXT, authorship TEXT, rank TEXT, status TEXT,
    kingdom TEXT, phylum TEXT, class TEXT, "order" TEXT, family TEXT, genus TEXT, species TEXT);
CREATE TABLE vernacular(taxon_id INTEGER, name TEXT, language TEXT, country TEXT, source TEXT);
"""
INDEX_SQL = """
CREATE INDEX taxa_canonical ON taxa(canonical);
CREATE INDEX taxa_stem ON taxa(stem);
CREATE TABLE rstems(rstem TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO rstems SELECT DISTINCT reverse(stem) FROM taxa WHERE stem IS NOT NULL;
CREATE INDEX vernacular_taxon ON vernacular(taxon_id);
"""


def _reverse(text: str | None) -> str | None:
    return None if text is None else text[::-1]


def connect(path: Path, readonly: bool = True) -> sqlite3.Connection:
    """A connection with the functions the index's SQL uses."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False)
    conn.create_function("reverse", 1, _reverse, deterministic=True)
    return conn


# ---------------------------------------------------------------------------------------------
# Reading the dump


class Dump:
    """A backbone dump: a zip holding Taxon.tsv (and optionally VernacularName.tsv) anywhere
    inside, or a folder holding them."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        if not self.path.exists():
            raise InputError(self.path, "backbone dump not found (expected a zip or a folder "
                             f"with {TAXON_FILE})")  # fmt: skip
        self.is_zip = self.path.is_file()
        if self.is_zip and not zipfile.is_zipfile(self.path):
            raise InputError(self.path, f"not a zip file (expected a zip or a folder with {TAXON_FILE})")
        if not self.has(TAXON_FILE):
            raise InputError(self.path, f"no {TAXON_FILE} in the backbone dump")

    def _member(self, name: str) -> str | None:
        with zipfile.ZipFile(self.path) as archive:
            for member in sorted(archive.namelist()):
                if member.rsplit("/", 1)[-1] == name:
                    return member
        return None

    def has(self, name: str) -> bool:
        if self.is_zip:
            return self._member(name) is not None
        return (self.path / name).is_file()

    def files(self) -> list[Path]:
        if self.is_zip:
            return [self.path]
        return [self.path / n for n in (TAXON_FILE, VERNACULAR_FILE) if (self.path / n).is_file()]

    def stat_key(self) -> str:
        """Cheap identity (path, size, mtime of the files): names the cached index."""
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()]
        return digest_json({"files": stats, "version": INDEX_VERSION})[:20]

    def sha256(self) -> str:
        """Content digest of the dump's files (read once, at index build)."""
        digest = hashlib.sha256()
        for path in self.files():
            digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        return digest.hexdigest()

    @contextmanager
    def open_text(self, name: str) -> Iterator[io.TextIOBase]:
        if self.is_zip:
            member = self._member(name)
            assert member is not None
            with zipfile.ZipFile(self.path) as archive, archive.open(member) as raw:
                yield io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        else:
            with open(self.path / name, encoding="utf-8", newline="\n") as handle:
                yield handle

    def rows(self, name: str, wanted: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
        """(line number, values of the `wanted` columns) for each data line of a TSV file."""
        label = f"{self.path}:{name}" if self.is_zip else self.path / name
        with self.open_text(name) as handle:
            header = handle.readline().rstrip("\r\n").split("\t")
            missing = [c for c in wanted if c not in header]
            if missing:
                raise InputError(label, f"header lacks column(s) {missing}; found {header}")
            positions = [header.index(c) for c in wanted]
            width = len(header)
            for number, line in enumerate(handle, start=2):
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) != width:
                    if not line.strip():
                        continue
                    raise InputError(
                        label, f"line {number}: {len(fields)} tab-separated fields, expected {width}"
                    )
                yield number, [fields[p] for p in positions]


# ---------------------------------------------------------------------------------------------
# Building


def _int_or_none(value: str, label: str, number: int, column: str) -> int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(label, f"line {number}: {column} {value!r} is not an integer id") from None


def _taxon_records(dump: Dump) -> Iterator[tuple]:
    label = f"{dump.path}:{TAXON_FILE}"
    for number, v in dump.rows(TAXON_FILE, TAXON_COLUMNS):
        (tid, parent, accepted, sci, auth, canonical, generic, epithet, rank, status,
         kingdom, phylum, class_, order, family, genus) = v  # fmt: skip
        canonical = canonical.strip() or None
        species = f"{generic} {epithet}" if generic and epithet else None
        yield (
            _int_or_none(tid, label, number, "taxonID"),
            _int_or_none(parent, label, number, "parentNameUsageID"),
            _int_or_none(accepted, label, number, "acceptedNameUsageID"),
            canonical, stem_canonical(canonical) if canonical else None, sci, auth,
            rank.lower() or None, status.lower() or None, kingdom or None, phylum or None,
            class_ or None, order or None, family or None, genus or None, species,
        )  # fmt: skip


def _vernacular_records(dump: Dump) -> Iterator[tuple]:
    label = f"{dump.path}:{VERNACULAR_FILE}"
    for number, (tid, name, language, country, source) in dump.rows(
        VERNACULAR_FILE, VERNACULAR_COLUMNS
    ):
        if name.strip():
            yield (_int_or_none(tid, label, number, "taxonID"), name.strip(),
                   language.strip().lower(), country.strip(), source.strip())  # fmt: skip


def _insert(conn: sqlite3.Connection, sql: str, records: Iterator[tuple],
            on_rows: Callable[[int], None]) -> int:  # fmt: skip
    total, batch = 0, []
    for record in records:
        batch.append(record)
        if len(batch) >= INSERT_BATCH:
            conn.executemany(sql, batch)
            total += len(batch)
            on_rows(total)
            batch = []
    if batch:
        conn.executemany(sql, batch)
        total += len(batch)
        on_rows(total)
    return total


def build_index(dump: Dump, dest: Path, on_rows: Callable[[int], None] = lambda n: None) -> dict:
    """Stream the dump into a new SQLite file at `dest` (overwritten). Returns its meta."""
    dest.unlink(missing_ok=True)
    start = time.monotonic()
    conn = connect(dest, readonly=False)
    try:
        # The file is disposable until renamed into place: no journal, no syncs while building;
        # a bounded page cache and on-disk temp b-trees keep memory flat for index creation.
        conn.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536; "
            "PRAGMA temp_store=FILE;"
        )
        conn.executescript(SCHEMA_SQL)
        taxa = _insert(conn, "INSERT INTO taxa VALUES (" + ",".join("?" * 16) + ")",
                       _taxon_records(dump), on_rows)  # fmt: skip
        vernaculars = 0
        if dump.has(VERNACULAR_FILE):
            vernaculars = _insert(conn, "INSERT INTO vernacular VALUES (?,?,?,?,?)",
                                  _vernacular_records(dump), lambda n: on_rows(taxa + n))  # fmt: skip
        conn.executescript(INDEX_SQL)
        meta = {
            "version": str(INDEX_VERSION), "dump": str(dump.path), "dump_sha256": dump.sha256(),
            "taxa": str(taxa), "vernaculars": str(vernaculars),
            "build_seconds": f"{time.monotonic() - start:.1f}",
        }  # fmt: skip
        conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
        conn.commit()
    except sqlite3.IntegrityError as exc:
        raise InputError(f"{dump.path}:{TAXON_FILE}", f"duplicate taxonID ({exc})") from None
    finally:
        conn.close()
    return meta


def ensure_index(
    dump_path: str | Path, index_dir: str | Path, on_rows: Callable[[int], None] = lambda n: None
) -> Path:
    """The cached index of a dump, built first if there is none for its current size/mtime."""
    dump = Dump(dump_path)
    folder = Path(index_dir)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"backbone-{dump.stat_key()}.sqlite"
    if dest.exists():
        return dest
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same index
        if dest.exists():
            return dest
        # Holding the build lock, no other process is building here: earlier builders' temp
        # files are from killed processes.
        for old in folder.glob(f"{atomic.TEMP_PREFIX}*"):
            old.unlink(missing_ok=True)
        temp = atomic.temp_name(dest)
        try:
            build_index(dump, temp, on_rows)
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)
    return dest


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())
