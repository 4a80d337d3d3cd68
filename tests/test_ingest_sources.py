"""Source readers of stage 01: DwC-A (zip, folder, quoted, header lines, Audubon, spilled join),
EOL media manifests, CSV/TSV/Parquet tables, and every bad-input error."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from stages.ingest.sources import (
    RECORD_SCHEMA,
    iter_source,
    parse_source_spec,
    validate_source,
)
from tests.support.ingest_fixtures import (
    AC_MULTIMEDIA,
    EOL_HEADER,
    sample_eol_rows,
    sample_media,
    sample_occurrences,
    write_dwca,
    write_eol_manifest,
    write_table_csv,
    write_table_parquet,
)


def read(kind: str, path: Path, chunk_rows: int = 1000, **kwargs) -> pa.Table:
    batches = list(iter_source(kind, path, chunk_rows, **kwargs))
    for batch in batches:
        assert batch.schema.equals(RECORD_SCHEMA)
        assert 0 < batch.num_rows <= chunk_rows
    return pa.Table.from_batches(batches, schema=RECORD_SCHEMA)


def by_row(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["source_file"], r["source_row"]))


def without_file(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "source_file"} for r in rows]


# ---------------------------------------------------------------------------------------------
# gbif: Darwin Core Archives
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
@pytest.mark.parametrize("quoted", [False, True], ids=["unquoted", "quoted"])
@pytest.mark.parametrize("header_lines", [0, 1, 2])
def test_dwca_layouts_give_the_same_records(tmp_path: Path, as_zip: bool, quoted: bool, header_lines: int):
    reference = read("gbif", write_dwca(tmp_path / "ref.zip", sample_occurrences(), sample_media()))
    path = write_dwca(tmp_path / ("a.zip" if as_zip else "a"), sample_occurrences(), sample_media(),
                      as_zip=as_zip, quoted=quoted, header_lines=header_lines)  # fmt: skip
    table = read("gbif", path, chunk_rows=3)
    assert without_file(by_row(table)) == without_file(by_row(reference))
    expected_file = f"{path}!/multimedia.txt" if as_zip else str(path / "multimedia.txt")
    assert set(table["source_file"].to_pylist()) == {expected_file}


def test_dwca_record_fields_come_from_media_and_core(tmp_path: Path):
    occurrences, media = sample_occurrences(), sample_media()
    rows = by_row(read("gbif", write_dwca(tmp_path / "a.zip", occurrences, media)))
    assert [r["source_row"] for r in rows] == list(range(len(media)))
    assert {r["provider"] for r in rows} == {"gbif"} and {r["source_kind"] for r in rows} == {"gbif"}
    core = {o["gbifID"]: o for o in occurrences}
    for row, item in zip(rows, media, strict=True):
        assert row["source_id"] == item["gbifID"]
        assert row["url"] == (item["identifier"] or None)
        assert row["media_type"] == (item.get("type") or None)
        assert row["media_format"] == item.get("format")
        assert row["license"] == item.get("license")
        assert row["rights_holder"] == item.get("rightsHolder")
        occ = core.get(item["gbifID"])
        if occ is None:  # orphan extension row: kept, core fields null, ids from the coreid
            assert row["occurrence_id"] == "999" and row["kingdom"] is None
            assert row["basis_of_record"] is None
            continue
        assert row["basis_of_record"] == occ["basisOfRecord"]
        assert row["occurrence_id"] == occ.get("occurrenceID", occ["gbifID"])
        assert row["kingdom"] == occ.get("kingdom") and row["class"] == occ.get("class")
        assert row["common_name"] == occ.get("vernacularName")
        assert row["event_remarks"] == occ.get("eventRemarks")
        publisher = occ.get("publisher") or occ.get("institutionCode") or occ.get("datasetName")
        assert row["publisher"] == publisher
    fox = next(r for r in rows if r["source_id"] == "3")
    assert fox["species"] == "Vulpes vulpes"  # genus + specificEpithet when species is absent
    assert next(r for r in rows if r["source_id"] == "4")["species"] is None  # no epithet


def test_dwca_in_a_zip_subfolder_with_meta_defaults(tmp_path: Path):
    media = [
        {"gbifID": "1", "type": "StillImage", "identifier": "https://x.org/1.jpg"},
        {"gbifID": "1", "type": "StillImage", "identifier": "https://x.org/2.jpg", "license": "CC-BY"},
    ]
    path = write_dwca(tmp_path / "a.zip", sample_occurrences()[:1], media, folder_in_zip="dwca/",
                      media_terms=["gbifID", "type", "identifier", "license"],
                      media_defaults={"rightsHolder": "Museum X", "license": "CC0"})  # fmt: skip
    rows = by_row(read("gbif", path))
    assert [r["license"] for r in rows] == ["CC0", "CC-BY"]  # default fills empty values only
    assert [r["rights_holder"] for r in rows] == ["Museum X", "Museum X"]
    assert rows[0]["source_file"] == f"{path}!/dwca/multimedia.txt"


def test_audubon_multimedia_uses_access_uri(tmp_path: Path):
    media = [{"gbifID": "2", "identifier": "urn:media:1", "accessURI": "https://ac.org/1.jpg",
              "type": "http://purl.org/dc/dcmitype/StillImage", "UsageTerms": "CC-BY",
              "Owner": "Jane Roe"}]  # fmt: skip
    terms = ["gbifID", "identifier", "accessURI", "type", "UsageTerms", "Owner"]
    path = write_dwca(tmp_path / "a", sample_occurrences(), media, as_zip=False,
                      media_row_type=AC_MULTIMEDIA, media_terms=terms)  # fmt: skip
    (row,) = read("gbif", path).to_pylist()
    assert row["url"] == "https://ac.org/1.jpg"
    assert (row["license"], row["rights_holder"]) == ("CC-BY", "Jane Roe")
    assert row["scientific_name"] == "Bubo bubo"


def _many(n_occ: int, n_media: int) -> tuple[list[dict], list[dict]]:
    kingdoms = ["Plantae", "Animalia", "Fungi"]
    occurrences = [{"gbifID": str(i), "basisOfRecord": "PRESERVED_SPECIMEN",
                    "kingdom": kingdoms[i % 3], "genus": f"G{i}", "specificEpithet": f"e{i}"}
                   for i in range(n_occ)]  # fmt: skip
    media = [{"gbifID": str((j * 7919) % (n_occ + 5)), "type": "StillImage",
              "identifier": f"https://h{j % 4}.org/{j}.jpg"} for j in range(n_media)]  # fmt: skip
    return occurrences, media


def test_spilled_join_equals_in_memory_join(tmp_path: Path):
    occurrences, media = _many(400, 1500)
    path = write_dwca(tmp_path / "a.zip", occurrences, media)
    in_memory = read("gbif", path, chunk_rows=256)
    assert in_memory["source_row"].to_pylist() == list(range(1500))  # one partition: file order
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    spilled = read("gbif", path, chunk_rows=256, join_memory_bytes=4096, temp_dir=spill_dir)
    assert by_row(spilled) == by_row(in_memory)
    assert list(spill_dir.iterdir()) == []  # temporary partition files are removed
    again = read("gbif", path, chunk_rows=256, join_memory_bytes=4096, temp_dir=spill_dir)
    assert again.equals(spilled)  # deterministic order
    orphans = [r for r in in_memory.to_pylist() if int(r["source_id"]) >= 400]
    assert orphans and all(r["kingdom"] is None for r in orphans)


def test_duplicated_core_id_joins_its_first_row(tmp_path: Path):
    occurrences = [{"gbifID": "1", "kingdom": "Plantae"}, {"gbifID": "1", "kingdom": "Fungi"}]
    media = [{"gbifID": "1", "type": "StillImage", "identifier": "https://x.org/1.jpg"}]
    table = read("gbif", write_dwca(tmp_path / "a.zip", occurrences, media))
    assert table["kingdom"].to_pylist() == ["Plantae"]


def test_dwca_declared_latin1_encoding_is_decoded(tmp_path: Path):
    occurrences = [{"gbifID": "1", "scientificName": "Pica pica", "vernacularName": "Pie bavarde é"}]
    media = [{"gbifID": "1", "type": "StillImage", "identifier": "https://x.org/é.jpg"}]
    path = write_dwca(tmp_path / "a.zip", occurrences, media, encoding="ISO-8859-1")
    (row,) = read("gbif", path).to_pylist()
    assert row["common_name"] == "Pie bavarde é" and row["url"] == "https://x.org/é.jpg"


# ---------------------------------------------------------------------------------------------
# eol and table
# ---------------------------------------------------------------------------------------------


def test_eol_manifest_columns(tmp_path: Path):
    rows = sample_eol_rows(5)
    rows[2]["EOL Full-Size Copy URL"] = "  "
    path = write_eol_manifest(tmp_path / "media_manifest.csv", rows)
    table = read("eol", path, chunk_rows=2)
    out = table.to_pylist()
    assert [r["source_row"] for r in out] == list(range(5))
    for row, src in zip(out, rows, strict=True):
        assert row["provider"] == "eol" and row["source_kind"] == "eol"
        assert row["source_id"] == src["EOL content ID"]
        assert row["occurrence_id"] == src["EOL page ID"]
        assert row["license"] == src["License Name"]
        assert row["rights_holder"] == src["Copyright Owner"]
        assert row["media_type"] is None and row["scientific_name"] is None
    assert out[0]["url"] == rows[0]["EOL Full-Size Copy URL"]
    assert out[2]["url"] is None  # blank -> null
    assert validate_source("eol", path).rows == 5


def test_eol_manifest_with_extra_record_columns(tmp_path: Path):
    rows = [dict(r, scientific_name="Bubo bubo") for r in sample_eol_rows(2)]
    path = write_eol_manifest(tmp_path / "m.csv", rows, header=[*EOL_HEADER, "scientific_name"])
    assert read("eol", path)["scientific_name"].to_pylist() == ["Bubo bubo"] * 2


def test_table_csv_columns_provider_and_strings(tmp_path: Path):
    rows = [
        {" URL ": " https://a.org/1.jpg ", "Source_ID": "007", "scientific_name": "NA", "kingdom": ""},
        {" URL ": "https://a.org/2.jpg", "Source_ID": "8", "provider": "fathomnet", "extra": "x"},
    ]
    path = write_table_csv(tmp_path / "bioscan.v2.csv", rows)
    out = read("table", path).to_pylist()
    assert [r["url"] for r in out] == ["https://a.org/1.jpg", "https://a.org/2.jpg"]
    assert [r["source_id"] for r in out] == ["007", "8"]  # never type-inferred
    assert out[0]["scientific_name"] == "NA" and out[0]["kingdom"] is None
    assert [r["provider"] for r in out] == ["bioscan", "fathomnet"]  # stem, then the column
    assert [r["source_file"] for r in out] == [str(path)] * 2
    renamed = read("table", path, default_provider="bioscan-5m").to_pylist()
    assert [r["provider"] for r in renamed] == ["bioscan-5m", "fathomnet"]


def test_table_tsv_and_gzip(tmp_path: Path):
    rows = [{"url": f"https://a.org/{i}.jpg", "species": "Apis mellifera"} for i in range(10)]
    tsv = write_table_csv(tmp_path / "t.tsv", rows, delimiter="\t")
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(write_table_csv(tmp_path / "t.csv", rows).read_bytes()))
    for path in (tsv, gz):
        table = read("table", path, chunk_rows=4)
        assert table["url"].to_pylist() == [r["url"] for r in rows]
        assert table["species"].to_pylist() == ["Apis mellifera"] * 10


def test_table_with_quoted_newlines_and_header_only(tmp_path: Path):
    path = write_table_csv(
        tmp_path / "q.csv", [{"url": "https://a.org/1.jpg", "event_remarks": "line1\nline2, with comma"}]
    )
    assert read("table", path)["event_remarks"].to_pylist() == ["line1\nline2, with comma"]
    header_only = tmp_path / "h.csv"
    header_only.write_text("url,source_id\n")
    assert read("table", header_only).num_rows == 0
    assert validate_source("table", header_only).rows == 0


def test_table_parquet(tmp_path: Path):
    table = pa.table({
        "url": pa.array([f"https://p.org/{i}.jpg" for i in range(7)]).dictionary_encode(),
        "source_id": pa.array(range(7), pa.int64()),
        "genus": pa.array(["Apis", " ", None, "Bombus", "a", "b", "c"], pa.large_string()),
        "ignored": pa.array([1.5] * 7),
    })  # fmt: skip
    path = write_table_parquet(tmp_path / "p.parquet", table)
    out = read("table", path, chunk_rows=3)
    assert out["url"].to_pylist() == table["url"].to_pylist()
    assert out["source_id"].to_pylist() == [str(i) for i in range(7)]
    assert out["genus"].to_pylist()[:4] == ["Apis", None, None, "Bombus"]
    assert out["source_row"].to_pylist() == list(range(7))
    assert out["provider"].to_pylist() == ["p"] * 7


def test_parse_source_spec(tmp_path: Path):
    assert parse_source_spec(f"GBIF:{tmp_path}/a.zip") == ("gbif", tmp_path / "a.zip")
    with pytest.raises(InputError, match="KIND:PATH"):
        parse_source_spec("just-a-path.csv")


# ---------------------------------------------------------------------------------------------
# Bad input: InputError naming the file and the problem, from validate_source and iter_source
# ---------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _dwca_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def _meta(core_extra: str = "", ext: str | None = None) -> str:
    ext = ext if ext is not None else (
        '<extension rowType="http://rs.gbif.org/terms/1.0/Multimedia" fieldsTerminatedBy="\\t" '
        'fieldsEnclosedBy=""><files><location>multimedia.txt</location></files><coreid index="0"/>'
        '<field index="1" term="http://purl.org/dc/terms/identifier"/></extension>'
    )  # fmt: skip
    return (
        '<archive xmlns="http://rs.tdwg.org/dwc/text/"><core rowType="http://rs.tdwg.org/dwc/terms/'
        f'Occurrence" fieldsTerminatedBy="\\t" fieldsEnclosedBy=""{core_extra}><files><location>'
        'occurrence.txt</location></files><id index="0"/><field index="1" '
        f'term="http://rs.tdwg.org/dwc/terms/basisOfRecord"/></core>{ext}</archive>'
    )


GOOD_DWCA = {"occurrence.txt": "1\tPRESERVED_SPECIMEN\n", "multimedia.txt": "1\thttps://x.org/1.jpg\n"}
NO_URL_EXTENSION = (
    '<extension rowType="http://rs.gbif.org/terms/1.0/Multimedia"><files><location>'
    'multimedia.txt</location></files><coreid index="0"/></extension>'
)


def _parquet(path: Path, columns: dict) -> Path:
    return write_table_parquet(path, pa.table(columns))


def _invalid_utf8_strings() -> pa.Array:
    return pa.array([b"https://a.org/\xff"], pa.binary()).view(pa.string())


BAD_INPUTS = {
    "missing url column": (
        "table", lambda d: write_table_csv(d / "nourl.csv", [{"link": "https://a.org/1.jpg"}]),
        "missing required column 'url'"),
    "missing url column (parquet)": (
        "table", lambda d: _parquet(d / "nourl.parquet", {"link": ["https://a.org/1.jpg"]}),
        "missing required column 'url'"),
    "zero-byte file": ("table", lambda d: _write(d / "empty.csv", b""), "empty file"),
    "zero-byte eol": ("eol", lambda d: _write(d / "empty.csv", b""), "empty file"),
    "non-UTF-8 bytes": (
        "table",
        lambda d: _write(d / "latin1.csv", b"url,genus\nhttps://a.org/1.jpg,Bubo\nhttps://a.org/2.jpg,Pic\xe9\n"),
        "not valid UTF-8: invalid byte at offset 58 (line 3)"),
    "non-UTF-8 in the header": (
        "table", lambda d: _write(d / "h.csv", b"url,g\xe9nus\nhttps://a.org/1.jpg,B\n"),
        "not valid UTF-8: invalid byte at offset 5 (line 1)"),
    "ragged row": (
        "table",
        lambda d: _write(d / "ragged.csv", b"url,genus\nhttps://a.org/1.jpg,Bubo\nhttps://a.org/2.jpg\n"),
        "row 3 (counting header lines): expected 2 columns, got 1"),
    "duplicate column": (
        "table", lambda d: _write(d / "dup.csv", b"url,URL\nhttps://a.org/1.jpg,x\n"),
        "column 'URL' appears twice"),
    "parquet url not a string": (
        "table", lambda d: _parquet(d / "ints.parquet", {"url": [1, 2]}),
        "column 'url' has type int64, expected string"),
    "parquet optional column of a wrong type": (
        "table", lambda d: _parquet(d / "f.parquet", {"url": ["https://a.org/1"], "genus": [1.5]}),
        "column 'genus' has type double, expected string or integer"),
    "parquet magic but corrupt": (
        "table", lambda d: _write(d / "bad.parquet", b"PAR1" + b"\x00" * 64), "not a readable Parquet file"),
    "non-UTF-8 in parquet strings": (
        "table", lambda d: _parquet(d / "bin.parquet", {"url": _invalid_utf8_strings()}),
        "rows 0-0: invalid data"),
    "eol missing column": (
        "eol", lambda d: write_eol_manifest(d / "eol.csv", sample_eol_rows(1), header=EOL_HEADER[:3]),
        "missing required EOL manifest column 'EOL Full-Size Copy URL'"),
    "DwC-A zip without meta.xml": (
        "gbif", lambda d: _dwca_zip(d / "dwca.zip", {"occurrence.txt": "id\n1\n"}),
        "no meta.xml in the zip"),
    "DwC-A folder without meta.xml": (
        "gbif", lambda d: write_dwca(d / "dwca", [], [], as_zip=False, with_meta=False),
        "no meta.xml in the folder"),
    "not a zip": ("gbif", lambda d: _write(d / "dwca.zip", b"hello"), "not a zip file or folder"),
    "meta.xml not XML": (
        "gbif", lambda d: _dwca_zip(d / "x.zip", {"meta.xml": "<archive"}), "meta.xml is not well-formed"),
    "meta.xml names a missing file": (
        "gbif", lambda d: _dwca_zip(d / "x.zip", {"meta.xml": _meta(), "occurrence.txt": "1\tX\n"}),
        "meta.xml names 'multimedia.txt', not in the archive"),
    "no multimedia extension": (
        "gbif", lambda d: write_dwca(d / "x.zip", sample_occurrences(), [], with_media=False),
        "no multimedia extension"),
    "multimedia extension without url term": (
        "gbif", lambda d: _dwca_zip(d / "x.zip", {**GOOD_DWCA, "meta.xml": _meta(ext=NO_URL_EXTENSION)}),
        "has no identifier or accessURI field"),
    "unknown encoding": (
        "gbif", lambda d: _dwca_zip(d / "x.zip", {**GOOD_DWCA, "meta.xml": _meta(' encoding="klingon"')}),
        "unknown encoding 'klingon'"),
    "non-UTF-8 in a DwC-A file": (
        "gbif", lambda d: _dwca_zip(d / "x.zip", {"meta.xml": _meta(), "occurrence.txt": "1\tX\n",
                                                   "multimedia.txt": b"1\thttps://x.org/\xff.jpg\n"}),
        "multimedia.txt: not valid UTF-8: invalid byte at offset 16 (line 1)"),
    "table kind given a folder": ("table", lambda d: d, "is a folder"),
    "missing path": ("table", lambda d: d / "nope.csv", "no such file or directory"),
    "unknown kind": (
        "ftp", lambda d: write_table_csv(d / "ok.csv", [{"url": "https://a.org"}]),
        "unknown source kind 'ftp'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_input_error_naming_file_and_problem(tmp_path: Path, case: str):
    kind, make, problem = BAD_INPUTS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    path = make(folder)
    for attempt in (lambda: validate_source(kind, path), lambda: list(iter_source(kind, path, 100))):
        with pytest.raises(InputError) as info:
            attempt()
        message = str(info.value)
        assert "\n" not in message
        assert str(path) in message and problem in message, message


def test_shallow_validation_skips_the_data_scan(tmp_path: Path):
    path = _write(tmp_path / "latin1.csv", b"url,genus\nhttps://a.org/1.jpg,Pic\xe9\n")
    assert validate_source("table", path, deep=False).rows == -1
    with pytest.raises(InputError, match="UTF-8"):
        validate_source("table", path)


def test_chunk_rows_must_be_positive(tmp_path: Path):
    path = write_table_csv(tmp_path / "t.csv", [{"url": "https://a.org/1.jpg"}])
    with pytest.raises(ValueError, match="chunk_rows"):
        list(iter_source("table", path, 0))


def test_reader_streams_in_chunks(tmp_path: Path):
    rows = [{"url": f"https://a.org/{i}.jpg"} for i in range(25_000)]
    path = write_table_csv(tmp_path / "big.csv", rows)
    sizes = [b.num_rows for b in iter_source("table", path, 4096)]
    assert sizes == [4096] * 6 + [25_000 - 6 * 4096]
    pq_path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"url": [r["url"] for r in rows]}), pq_path, row_group_size=10_000)
    assert [b.num_rows for b in iter_source("table", pq_path, 4096)][0] == 4096
