"""Darwin Core Archives (occurrence core + multimedia extension, zip or folder) and EOL media
manifests, written the way GBIF and EOL publish them: the demo's provider-style inputs, and the
ingest tests' inputs.

Rows are dicts keyed by Darwin Core / Dublin Core local term names (`gbifID`, `basisOfRecord`,
`identifier`, ...); `TERM_URIS` gives the full term written to meta.xml.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GBIF_MULTIMEDIA = "http://rs.gbif.org/terms/1.0/Multimedia"
AC_MULTIMEDIA = "http://rs.tdwg.org/ac/terms/Multimedia"
OCCURRENCE = "http://rs.tdwg.org/dwc/terms/Occurrence"

_DWC = "http://rs.tdwg.org/dwc/terms/"
_DC = "http://purl.org/dc/terms/"
_GBIF = "http://rs.gbif.org/terms/1.0/"
TERM_URIS = {
    "gbifID": _GBIF + "gbifID",
    "species": _GBIF + "species",
    "publisher": _DC + "publisher",
    "type": _DC + "type",
    "format": _DC + "format",
    "identifier": _DC + "identifier",
    "license": _DC + "license",
    "rightsHolder": _DC + "rightsHolder",
    "accessURI": "http://rs.tdwg.org/ac/terms/accessURI",
    "UsageTerms": "http://ns.adobe.com/xap/1.0/rights/UsageTerms",
    "Owner": "http://ns.adobe.com/xap/1.0/rights/Owner",
}
OCCURRENCE_TERMS = [
    "gbifID", "occurrenceID", "basisOfRecord", "scientificName", "kingdom", "phylum", "class",
    "order", "family", "genus", "specificEpithet", "species", "vernacularName", "publisher",
    "institutionCode", "datasetName", "eventRemarks",
]  # fmt: skip
MULTIMEDIA_TERMS = ["gbifID", "type", "format", "identifier", "license", "rightsHolder"]
EOL_HEADER = [
    "EOL content ID", "EOL page ID", "Medium Source URL", "EOL Full-Size Copy URL",
    "License Name", "Copyright Owner",
]  # fmt: skip


def term_uri(name: str) -> str:
    return TERM_URIS.get(name, _DWC + name)


def _escape_attr(value: str) -> str:
    return {"\t": "\\t", "\n": "\\n", "\r\n": "\\r\\n"}.get(value, value).replace('"', "&quot;")


def _meta_file(tag: str, row_type: str, location: str, terms: Sequence[str], key: str,
               key_tag: str, *, delimiter: str, quote: str, header_lines: int,
               encoding: str, defaults: dict[str, str]) -> str:  # fmt: skip
    lines = [
        f'  <{tag} encoding="{encoding}" fieldsTerminatedBy="{_escape_attr(delimiter)}" '
        f'linesTerminatedBy="\\n" fieldsEnclosedBy="{_escape_attr(quote)}" '
        f'ignoreHeaderLines="{header_lines}" rowType="{row_type}">',
        f"    <files><location>{location}</location></files>",
        f'    <{key_tag} index="{list(terms).index(key)}"/>',
    ]
    lines += [f'    <field index="{i}" term="{term_uri(t)}"/>' for i, t in enumerate(terms)]
    lines += [f'    <field term="{term_uri(t)}" default="{v}"/>' for t, v in defaults.items()]
    lines.append(f"  </{tag}>")
    return "\n".join(lines)


def _data_text(rows: Sequence[dict[str, Any]], terms: Sequence[str], *, delimiter: str,
               quote: str, header_lines: int) -> str:  # fmt: skip
    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        if quote:
            return quote + text.replace(quote, quote * 2) + quote
        assert delimiter not in text and "\n" not in text, f"unquotable value {text!r}"
        return text

    out = []
    for h in range(header_lines):
        out.append(delimiter.join(cell(t if h == 0 else f"comment {h}") for t in terms))
    out += [delimiter.join(cell(row.get(t)) for t in terms) for row in rows]
    return "\n".join(out) + "\n"


def write_dwca(
    dest: Path,
    occurrences: Sequence[dict[str, Any]],
    media: Sequence[dict[str, Any]],
    *,
    as_zip: bool = True,
    quoted: bool = False,
    header_lines: int = 1,
    delimiter: str = "\t",
    encoding: str = "UTF-8",
    media_row_type: str = GBIF_MULTIMEDIA,
    core_terms: Sequence[str] = OCCURRENCE_TERMS,
    media_terms: Sequence[str] = MULTIMEDIA_TERMS,
    media_defaults: dict[str, str] | None = None,
    with_meta: bool = True,
    with_media: bool = True,
    folder_in_zip: str = "",
) -> Path:
    """Write a DwC-A with an occurrence core and a multimedia extension; return its path.

    `quoted`: fields enclosed in double quotes (else GBIF's unquoted tab-separated text).
    `media_defaults`: terms given in meta.xml as constant defaults instead of columns.
    """
    style = dict(delimiter=delimiter, quote='"' if quoted else "", header_lines=header_lines)
    files = {"occurrence.txt": _data_text(occurrences, core_terms, **style)}
    meta = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="eml.xml">',
        _meta_file("core", OCCURRENCE, "occurrence.txt", core_terms, "gbifID", "id",
                   encoding=encoding, defaults={}, **style),
    ]  # fmt: skip
    if with_media:
        files["multimedia.txt"] = _data_text(media, media_terms, **style)
        meta.append(
            _meta_file("extension", media_row_type, "multimedia.txt", media_terms, "gbifID",
                       "coreid", encoding=encoding, defaults=media_defaults or {}, **style)
        )  # fmt: skip
    meta.append("</archive>")
    if with_meta:
        files["meta.xml"] = "\n".join(meta) + "\n"
    codec = "utf-8" if encoding.upper() == "UTF-8" else encoding
    if as_zip:
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in files.items():
                data = text.encode("utf-8" if name == "meta.xml" else codec)
                archive.writestr(folder_in_zip + name, data)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (dest / name).write_bytes(text.encode("utf-8" if name == "meta.xml" else codec))
    return dest


def write_eol_manifest(path: Path, rows: Sequence[dict[str, Any]],
                       header: Sequence[str] = EOL_HEADER) -> Path:  # fmt: skip
    """An EOL media manifest CSV (comma-separated, quoted where needed)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if row.get(h) is None else row[h] for h in header])
    return path
