"""EOL's taxon file: names and higher classification for the page ids of an EOL media manifest.

The file is the `taxon.tab` of EOL's Dynamic Hierarchy (DH 1.1, `dh_v1.1.zip`): tab-separated,
one header line, no quoting, one row per taxon. Columns read (others are ignored):

- `taxonID`: the DH's own id of the row; `parentNameUsageID` names the parent row's taxonID.
- `eolID`: the EOL page id, which the media manifest's `EOL page ID` joins on.
- `scientificName`: the name with authorship -> the record's `scientific_name` (the verbatim
  name 03 resolves); `canonicalName` (the name without authorship) is used for the ranks.
- `taxonRank`: the rank of the row; walking the parents gives kingdom, phylum, class, order,
  family, genus (and species when the page itself is a species).
- `acceptedNameUsageID`, `taxonomicStatus` (optional): rows that are synonyms (an accepted id
  other than their own, or a status other than accepted/valid) never name a page.

A manifest row whose page id is not in the file is dropped `eol_page_not_in_taxa`: an image
without a name cannot be used for training. Memory grows with the file's rows (about 2.3 M for
the full DH 1.1: a few hundred MiB of Python objects in the driver).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError
from stages.ingest.dwca import TextDialect, iter_delimited, read_header

REASON_PAGE_NOT_IN_TAXA = "eol_page_not_in_taxa"
DIALECT = TextDialect(delimiter="\t", quote_char=None, header=True)
REQUIRED = ("taxonID", "parentNameUsageID", "scientificName", "taxonRank", "eolID")
OPTIONAL = ("canonicalName", "acceptedNameUsageID", "taxonomicStatus")
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
ACCEPTED_STATUSES = frozenset({"", "accepted", "valid"})
NAME_COLUMNS = ("scientific_name", *RANKS, "species")
READ_ROWS = 262_144
# Deepest parent chain followed: a cycle in a broken file ends here instead of looping forever.
MAX_DEPTH = 200


def _opener(path: Path):
    return lambda: pa.input_stream(str(path), compression="detect")


class EolTaxa:
    """The taxon file in memory, indexed by page id; lineages computed on demand and cached."""

    def __init__(self, path: Path):
        self.path = Path(path)
        header = read_header(_opener(self.path), str(self.path), DIALECT)
        present = {h.strip(): h for h in header}
        missing = [c for c in REQUIRED if c not in present]
        if missing:
            raise InputError(
                self.path,
                f"not an EOL taxon file: missing column(s) {', '.join(missing)} "
                f"(expected the Dynamic Hierarchy taxon.tab: {', '.join(REQUIRED)}, ...)",
            )
        mapping = {c: present[c] for c in (*REQUIRED, *OPTIONAL) if c in present}
        self._index: dict[str, int] = {}
        self._pages: dict[str, int] = {}
        self._parent_ids: list[str | None] = []
        self._rank: list[str] = []
        self._canonical: list[str | None] = []
        self._scientific: list[str | None] = []
        for table in iter_delimited(_opener(self.path), str(self.path), DIALECT, mapping, READ_ROWS):
            self._add(table)
        self._cache: dict[str, dict[str, str | None] | None] = {}

    def _add(self, table: pa.Table) -> None:
        def col(name: str) -> list:
            return table[name].to_pylist() if name in table.column_names else [None] * table.num_rows

        ids, pages, parents = col("taxonID"), col("eolID"), col("parentNameUsageID")
        accepted_ids, statuses = col("acceptedNameUsageID"), col("taxonomicStatus")
        ranks, canonical, scientific = col("taxonRank"), col("canonicalName"), col("scientificName")
        for i, taxon in enumerate(ids):
            if taxon is None:
                continue
            row = len(self._rank)
            self._index[taxon] = row
            self._parent_ids.append(parents[i])
            self._rank.append((ranks[i] or "").strip().lower())
            self._canonical.append(canonical[i] or scientific[i])
            self._scientific.append(scientific[i] or canonical[i])
            synonym = accepted_ids[i] not in (None, taxon)
            if pages[i] and not synonym and (statuses[i] or "").strip().lower() in ACCEPTED_STATUSES:
                self._pages.setdefault(pages[i], row)

    @property
    def pages(self) -> int:
        return len(self._pages)

    def names(self, page: str | None) -> dict[str, str | None] | None:
        """scientific_name, kingdom ... genus, species of a page; None when the page is unknown."""
        if page is None:
            return None
        if page not in self._cache:
            self._cache[page] = self._lineage(page)
        return self._cache[page]

    def _lineage(self, page: str) -> dict[str, str | None] | None:
        row = self._pages.get(page)
        if row is None:
            return None
        out: dict[str, str | None] = dict.fromkeys(NAME_COLUMNS)
        out["scientific_name"] = self._scientific[row]
        if self._rank[row] == "species":
            out["species"] = self._canonical[row]
        current: int | None = row
        for _ in range(MAX_DEPTH):
            if current is None:
                break
            rank = self._rank[current]
            if rank in RANKS and out[rank] is None:
                out[rank] = self._canonical[current]
            parent = self._parent_ids[current]
            current = self._index.get(parent) if parent else None
        return out

    def annotate(self, table: pa.Table) -> pa.Table:
        """Fill the name columns of manifest records (page id in `occurrence_id`) where the
        manifest leaves them empty; mark rows whose page is unknown."""
        pages = table["occurrence_id"].to_pylist()
        found = [self.names(p) for p in pages]
        for name in NAME_COLUMNS:
            values = pa.array([f[name] if f else None for f in found], pa.string())
            if name in table.column_names:
                index = table.schema.get_field_index(name)
                table = table.set_column(index, name, pc.coalesce(table[name], values))
            else:
                table = table.append_column(name, values)
        reasons = [None if f else REASON_PAGE_NOT_IN_TAXA for f in found]
        details = [
            None if f else f"EOL page {p!r} is not in {self.path.name}"
            for p, f in zip(pages, found, strict=True)
        ]
        table = table.append_column("reader_reason", pa.array(reasons, pa.string()))
        return table.append_column("reader_detail", pa.array(details, pa.string()))
