"""Per-row rules of stage 01: URLs, still images, image types, collection areas, drop reasons,
sample ids and the `[ingest]` rule parameters."""

from __future__ import annotations

import itertools
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.errors import ConfigError
from stages.ingest import rules
from stages.ingest.rules import (
    COLLECTION_AREAS,
    TOLPIPE_NAMESPACE,
    RuleParams,
    classify,
    is_still_image,
    sample_uuid,
    sample_uuids,
    still_image_mask,
    url_host,
    url_problem,
)
from tests.support.ingest_fixtures import default_ingest_params, record_table

PARAMS = default_ingest_params()
OK_URL = "https://img.example.org/a.jpg"


def classify_rows(rows: list[dict], params: dict | None = None) -> list[dict]:
    rows = [{"url": OK_URL, "media_type": "StillImage", **row} for row in rows]
    return classify(record_table(rows), params or PARAMS).to_pylist()


# ---------------------------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------------------------

URL_CASES = {
    None: "missing_url",
    "   ": "missing_url",
    "https://example.org/a b.jpg": None,  # spaces: the downloader encodes them
    "HTTP://Example.ORG/x.jpg": None,
    "http://[2001:db8::1]:8080/x.jpg": None,
    "https://bücher.example/x.jpg": None,
    "https://my_host.example.org./x": None,
    "ftp://files.example.org/x.jpg": "bad_scheme",
    "file:///etc/passwd": "bad_scheme",
    "javascript:alert(1)": "bad_scheme",
    "data:image/png;base64,AAAA": "bad_scheme",
    "www.example.org/x.jpg": "malformed_url",
    "//example.org/x.jpg": "malformed_url",
    "http:///x.jpg": "malformed_url",
    "http://exa mple.org/x.jpg": "malformed_url",
    "http://example.org:99999/x": "malformed_url",
    "http://example.org:0/x": "malformed_url",
    "http://[::1/x": "malformed_url",
    "http://example.org/x\x00.jpg": "malformed_url",
    "http://a..b/x": "malformed_url",
}


@pytest.mark.parametrize("url", list(URL_CASES), ids=[repr(u) for u in URL_CASES])
def test_url_problem(url: str | None):
    problem = url_problem(url)
    expected = URL_CASES[url]
    assert (problem[0] if problem else None) == expected, problem
    if problem:
        assert problem[1]  # a detail is always given


def test_allowed_schemes_are_configurable():
    assert url_problem("ftp://a.org/x", allowed_schemes=("ftp",)) is None
    assert url_problem("http://a.org/x", allowed_schemes=("https",))[0] == "bad_scheme"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("HTTPS://User:Pw@Images.Example.ORG./a.jpg", "images.example.org"),
        ("http://example.org:80/a", "example.org"),
        ("https://example.org:443/a", "example.org"),
        ("http://example.org:8080/a", "example.org:8080"),
        ("https://example.org:80/a", "example.org:80"),
        ("http://[2001:DB8::1]:8443/a", "[2001:db8::1]:8443"),
        ("ftp://files.example.org/x", "files.example.org"),
        ("not a url", None),
        (None, None),
        ("http://[::1/x", None),
    ],
)
def test_url_host(url: str | None, host: str | None):
    assert url_host(url) == host


# ---------------------------------------------------------------------------------------------
# Still images
# ---------------------------------------------------------------------------------------------


def test_is_still_image_scalar():
    assert is_still_image("StillImage", None)
    assert is_still_image("http://purl.org/dc/dcmitype/StillImage", None)
    assert is_still_image(" stillimage ", "")
    assert is_still_image(None, "image/jpeg") and is_still_image("Image", "IMAGE/PNG")
    assert not is_still_image("Sound", "audio/mpeg")
    assert not is_still_image("MovingImage", "video/mp4")
    assert not is_still_image(None, None)  # strict (gbif): must say it is an image
    assert is_still_image(None, None, strict=False)  # eol/table rows
    assert not is_still_image("Sound", None, strict=False)  # ...unless their columns say otherwise


def test_still_image_mask_agrees_with_the_scalar_rule():
    types = [None, "", "StillImage", "http://purl.org/dc/dcmitype/StillImage", "Sound", "Image"]
    formats = [None, "", "image/jpeg", "audio/mpeg", "application/pdf"]
    kinds = ["gbif", "eol", "table"]
    rows = [
        {"media_type": t, "media_format": f, "source_kind": k}
        for t, f, k in itertools.product(types, formats, kinds)
    ]
    mask = still_image_mask(record_table(rows), RuleParams.from_params(PARAMS)).to_pylist()
    for row, got in zip(rows, mask, strict=True):
        want = is_still_image(row["media_type"], row["media_format"], strict=row["source_kind"] == "gbif")
        assert got == want, row


# ---------------------------------------------------------------------------------------------
# Image types and collection areas
# ---------------------------------------------------------------------------------------------

IMAGE_TYPE_CASES = [
    ({"basis_of_record": "PRESERVED_SPECIMEN"}, "museum_specimen"),
    ({"basis_of_record": "PreservedSpecimen"}, "museum_specimen"),  # Darwin Core spelling
    ({"basis_of_record": "fossil specimen"}, "museum_specimen"),
    ({"basis_of_record": "LIVING_SPECIMEN"}, "museum_specimen"),
    ({"basis_of_record": "MATERIAL_SAMPLE"}, "museum_specimen"),
    ({"event_remarks": "Deployment 3, CAMERA TRAP at the ridge"}, "camera_trap"),
    ({"event_remarks": "Trigger Sensitivity: Normal"}, "camera_trap"),
    ({"basis_of_record": "MACHINE_OBSERVATION", "publisher": "museums victoria"}, "camera_trap"),
    ({"basis_of_record": "HUMAN_OBSERVATION", "publisher": "Museums Victoria"}, "other"),
    ({"basis_of_record": "MACHINE_OBSERVATION", "publisher": "Someone else"}, "other"),
    ({"basis_of_record": "HUMAN_OBSERVATION", "publisher": "iNaturalist.org"}, "citizen_science"),
    ({"publisher": "Pl@ntNet"}, "citizen_science"),
    # precedence: specimen > camera trap > citizen science
    ({"basis_of_record": "PRESERVED_SPECIMEN", "event_remarks": "camera trap"}, "museum_specimen"),
    ({"publisher": "Sibecocenter LLC", "event_remarks": "camera trap 12"}, "camera_trap"),
    ({"basis_of_record": "PRESERVED_SPECIMEN", "publisher": "iNaturalist.org"}, "museum_specimen"),
    ({}, "other"),
]


@pytest.mark.parametrize(("row", "image_type"), IMAGE_TYPE_CASES)
def test_image_type(row: dict, image_type: str):
    (out,) = classify_rows([row])
    assert out["image_type"] == image_type
    if image_type != "museum_specimen":
        assert out["collection_area"] is None


AREA_CASES = [
    ({"kingdom": "Plantae", "class": "Magnoliopsida"}, "Plant"),
    ({"kingdom": "Chromista", "phylum": "Ochrophyta"}, "Plant"),  # seaweed
    ({"class": "Magnoliopsida"}, "Plant"),
    ({"kingdom": "FUNGI"}, "Fungi"),
    ({"kingdom": "Protozoa", "phylum": "Mycetozoa"}, "Fungi"),
    ({"kingdom": "Animalia", "phylum": "Arthropoda", "class": "Insecta"}, "Insect"),
    ({"kingdom": "Animalia", "phylum": "Arthropoda", "class": "Arachnida"}, "Invertebrate Zoology"),
    ({"kingdom": "Animalia", "phylum": "Mollusca"}, "Invertebrate Zoology"),
    ({"kingdom": "Chromista", "phylum": "Foraminifera"}, "Invertebrate Zoology"),
    ({"kingdom": "Bacteria", "phylum": "Pseudomonadota"}, "Microbiology"),
    ({"kingdom": "Archaea"}, "Microbiology"),
    ({"phylum": "Euglenozoa"}, "Microbiology"),
    ({"phylum": "Chordata", "class": "Actinopterygii", "order": "Perciformes"}, "Fishes"),
    ({"phylum": "Chordata", "class": "Elasmobranchii"}, "Fishes"),
    ({"phylum": "Chordata", "order": "Cypriniformes"}, "Fishes"),  # class missing: by order
    ({"phylum": "Chordata", "class": "Amphibia"}, "Amphibians"),
    ({"phylum": "Chordata", "class": "Reptilia"}, "Reptiles"),
    ({"phylum": "Chordata", "class": "Squamata"}, "Reptiles"),  # GBIF backbone reptile class
    ({"phylum": "Chordata", "class": "Aves"}, "Birds"),
    ({"phylum": "Chordata", "class": "Mammalia"}, "Mammals"),
    ({"phylum": "Chordata", "class": "Ascidiacea"}, "Vertebrate Others"),
    ({"kingdom": "incertae sedis"}, "Uncategorized"),
    ({}, "Uncategorized"),
]


def test_area_cases_cover_every_collection_area():
    assert {area for _, area in AREA_CASES} == set(COLLECTION_AREAS)


@pytest.mark.parametrize(("taxonomy", "area"), AREA_CASES)
def test_collection_area(taxonomy: dict, area: str):
    (out,) = classify_rows([{"basis_of_record": "PRESERVED_SPECIMEN", **taxonomy}])
    assert (out["image_type"], out["collection_area"]) == ("museum_specimen", area)


def test_collection_area_rules_are_ordered_config():
    params = dict(PARAMS, collection_areas=[{"area": "Birds", "kingdom": ["Plantae"]}])
    rows = [{"basis_of_record": "PRESERVED_SPECIMEN", "kingdom": "Plantae"},
            {"basis_of_record": "PRESERVED_SPECIMEN", "class": "Aves"}]  # fmt: skip
    assert [r["collection_area"] for r in classify_rows(rows, params)] == ["Birds", "Uncategorized"]


# ---------------------------------------------------------------------------------------------
# Drop reasons
# ---------------------------------------------------------------------------------------------

CAMERA = {"event_remarks": "camera trap", "basis_of_record": "MACHINE_OBSERVATION"}
DROP_CASES = [
    ({}, None),
    ({"url": None}, "missing_url"),
    ({"url": "gopher://x.org/1"}, "bad_scheme"),
    ({"url": "x.org/1.jpg"}, "malformed_url"),
    ({"media_type": "Sound", "media_format": "audio/mpeg"}, "not_still_image"),
    ({"media_type": None}, "not_still_image"),  # gbif row that does not say it is an image
    ({"media_type": None, "source_kind": "eol"}, None),
    ({"media_type": None, "source_kind": "table"}, None),
    ({"basis_of_record": "MATERIAL_CITATION"}, "material_citation"),
    ({**CAMERA, "images_in_occurrence": 16}, "camera_trap_too_many_images"),
    ({**CAMERA, "images_in_occurrence": 15}, None),
    ({**CAMERA, "images_in_occurrence": None}, None),
    ({"publisher": "iNaturalist.org", "images_in_occurrence": 100}, None),  # not a camera trap
    # precedence: URL problems, then still image, then material citation, then camera trap
    ({"url": "ftp://x.org/1", "media_type": "Sound"}, "bad_scheme"),
    ({"media_type": "Sound", "basis_of_record": "MATERIAL_CITATION"}, "not_still_image"),
    (
        {"basis_of_record": "MATERIAL_CITATION", "event_remarks": "camera trap", "images_in_occurrence": 40},
        "material_citation",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("row", "reason"), DROP_CASES)
def test_drop_reasons(row: dict, reason: str | None):
    (out,) = classify_rows([row])
    assert out["reason"] == reason
    assert out["status"] == ("ok" if reason is None else "dropped")
    assert (out["detail"] is None) == (reason is None)


def test_drop_reason_details_and_hosts():
    rows = classify_rows([
        {**CAMERA, "images_in_occurrence": 20, "url": "http://Cam.example.org:8080/1.jpg"},
        {"media_type": "Sound", "media_format": "audio/mpeg"},
        {"url": "ftp://Files.example.org/x"},
        {"url": None},
    ])  # fmt: skip
    assert rows[0]["detail"] == "camera-trap occurrence has 20 images > 15"
    assert rows[1]["detail"] == "type='Sound' format='audio/mpeg'"
    assert [r["host"] for r in rows] == ["cam.example.org:8080", "img.example.org", "files.example.org", None]


def test_drop_rules_follow_their_parameters():
    params = dict(PARAMS, drop_material_citation=False, camera_trap_max_images=30)
    rows = classify_rows([{"basis_of_record": "MATERIAL_CITATION"},
                          {**CAMERA, "images_in_occurrence": 20}], params)  # fmt: skip
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["image_type"] == "museum_specimen"  # still a museum specimen


def test_classify_accepts_pandas_and_keeps_row_count():
    rows = [dict(row, url=OK_URL) for row, _ in DROP_CASES[:1]] * 3
    frame = record_table(rows).to_pandas()
    out = classify(frame, PARAMS)
    assert out.num_rows == 3
    assert out.column_names == ["status", "reason", "detail", "image_type", "collection_area", "host"]


def test_every_reason_is_exercised():
    reasons = {reason for _, reason in DROP_CASES if reason}
    assert reasons == set(rules.REASONS)


# ---------------------------------------------------------------------------------------------
# Sample ids
# ---------------------------------------------------------------------------------------------


def test_sample_uuid_is_uuid5_of_the_documented_name():
    assert uuid.uuid5(uuid.NAMESPACE_URL, "https://tolpipe.invalid/sample") == TOLPIPE_NAMESPACE
    for provider, source_id, url in [("gbif", "123", OK_URL), ("eol", None, None), ("é", "ü", "ø")]:
        name = "\x1f".join(v or "" for v in (provider, source_id, url))
        expected = str(uuid.uuid5(TOLPIPE_NAMESPACE, name))
        assert sample_uuid(provider, source_id, url) == expected
    assert sample_uuid("gbif", None, OK_URL) == sample_uuid("gbif", "", OK_URL)


def test_sample_uuid_depends_on_each_part():
    base = sample_uuid("gbif", "1", OK_URL)
    assert base == sample_uuid("gbif", "1", OK_URL)
    others = {sample_uuid("eol", "1", OK_URL), sample_uuid("gbif", "2", OK_URL),
              sample_uuid("gbif", "1", OK_URL + "?v=2"), sample_uuid("gbif1", "", OK_URL)}  # fmt: skip
    assert base not in others and len(others) == 4
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", base)


def test_sample_uuids_vector_matches_scalar():
    table = record_table([{"provider": "gbif", "source_id": str(i), "url": f"https://a.org/{i}"}
                          for i in range(50)] + [{}])  # fmt: skip
    got = sample_uuids(table).to_pylist()
    assert got == [sample_uuid(r["provider"], r["source_id"], r["url"]) for r in table.to_pylist()]


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"camera_trap_max_images": "15"}, "ingest.camera_trap_max_images must be int"),
        ({"camera_trap_max_images": True}, "ingest.camera_trap_max_images must be int"),
        ({"citizen_science_publishers": "iNaturalist.org"}, "must be a list of strings"),
        ({"collection_areas": [{"area": "Dinosaurs", "class": ["Aves"]}]}, "'area' must be one of"),
        ({"collection_areas": [{"area": "Birds", "clade": ["Aves"]}]}, "unknown keys ['clade']"),
    ],
)
def test_bad_rule_parameters_are_config_errors(change: dict, message: str):
    with pytest.raises(ConfigError) as info:
        RuleParams.from_params(dict(PARAMS, **change))
    assert message in str(info.value)


def test_missing_parameter_is_named():
    params = {k: v for k, v in PARAMS.items() if k != "allowed_schemes"}
    with pytest.raises(ConfigError, match="ingest.allowed_schemes is missing"):
        RuleParams.from_params(params)


def test_every_default_key_is_commented():
    text = (Path(rules.__file__).parent / "defaults.toml").read_text().splitlines()
    section = None
    for i, line in enumerate(text):
        if line.startswith("["):
            section = line
            continue
        key = re.match(r"^([a-z_]+) = ", line)
        if key and section == "[ingest]":
            previous = text[i - 1]
            assert previous.startswith("#") or text[i - 2].startswith("#"), key.group(1)


def test_vectorized_url_columns_match_the_scalar_rules():
    urls = [
        *URL_CASES, "https://EXAMPLE.org", "https://example.org.", "http://a.org?q=1", "http://a.org#f",
        "https://a.org/x y", "https://a.org:443/x", "HTTPS://a-b_c.d.org/ü", "https://a.org/\x7f",
    ]  # fmt: skip
    params = RuleParams.from_params(PARAMS)
    reasons, details, hosts = rules.url_columns(pa.array(urls, pa.string()), params)
    for url, reason, detail, host in zip(urls, reasons, details, hosts, strict=True):
        assert (reason, detail) == (url_problem(url) or (None, None)), url
        assert host == url_host(url), url
