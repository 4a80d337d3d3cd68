"""The demo end to end (`python -m demo`, one run shared by the session): what it plants in its
provider inputs comes out where it should."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc

from demo import inputs as demo_inputs
from demo.run import train_stage_present
from demo.summary import evaluation_files
from pipeline import report_data
from tests.support.demo import DemoRun, demo_run, rows_by_uuid, stage_table, uuids_of_file  # noqa: F401

STAGES_THROUGH_SHARD = ("01_ingest", "02_download", "03_taxonomy", "04_filter", "05_dedup", "06_shard")


def reasons_of(root: Path, stage_dir: str, file_name: str) -> list[str | None]:
    rows = rows_by_uuid(root, stage_dir)
    return [rows[u]["reason"] for u in uuids_of_file(root, file_name) if u in rows]


def test_summary_accounts_for_every_input_row(demo_run: DemoRun):  # noqa: F811
    counts = report_data.stage_counts(demo_run.root)
    assert [c["stage"] for c in counts][:6] == list(STAGES_THROUGH_SHARD)
    books = report_data.accounting(counts)
    assert books["balanced"], books
    # Every media row of the provider inputs is a row of 01.
    archive = demo_inputs.build_archive(str, str, demo_inputs.load_corpus())
    eol_rows = len(demo_inputs.EOL_PHOTOS)
    assert books["input_rows"] == len(archive.media) + eol_rows
    removed = " + ".join(f"{n} ({s})" for s, n in books["removed"].items() if n)
    assert (
        f"input rows {books['input_rows']} = {removed} removed + {books['kept']} kept: every input row"
        in (demo_run.stdout)
    )
    assert "report: " in demo_run.stdout and (demo_run.root / "report.html").is_file()


def test_rule_drops_of_ingest_and_download(demo_run: DemoRun):  # noqa: F811
    by_reason = {c["stage"]: c["by_reason"] for c in report_data.stage_counts(demo_run.root)}
    for reason in ("bad_scheme", "duplicate_url", "material_citation", "not_still_image"):
        assert by_reason["01_ingest"].get(f"dropped:{reason}") == 1, reason
    for reason in ("http_404", "not_image", "too_small"):
        assert by_reason["02_download"].get(f"dropped:{reason}") == 1, reason


def test_face_photos_are_dropped_human_face(demo_run: DemoRun):  # noqa: F811
    for face in demo_inputs.FACES:
        assert reasons_of(demo_run.root, "04_filter", face) == ["human_face"], face
    filtered = stage_table(demo_run.root, "04_filter")
    dropped = filtered.filter(pc.equal(filtered["reason"], "human_face"))
    assert dropped.num_rows == len(demo_inputs.FACES)  # no organism photo taken for a face


def test_planted_duplicates_are_dropped_duplicate_md5(demo_run: DemoRun):  # noqa: F811
    for copy, original in (("copy_exact_bison_bison.jpg", "bison_bison.jpg"),
                           ("copy_exact_ara_macao.jpg", "ara_macao.jpg")):  # fmt: skip
        reasons = reasons_of(demo_run.root, "05_dedup", copy) + reasons_of(
            demo_run.root, "05_dedup", original
        )
        assert Counter(reasons) == Counter(["duplicate_md5", None]), (copy, reasons)
    # Re-encodes and resizes of training photos are not copies: both stay.
    for near in ("copy_reencode_lemur_catta.jpg", "copy_small_koala.jpg"):
        assert reasons_of(demo_run.root, "05_dedup", near) == [None], near


def test_planted_test_set_copies_are_dropped_as_leaks(demo_run: DemoRun):  # noqa: F811
    assert reasons_of(demo_run.root, "05_dedup", "leak_exact_ochotona_princeps.jpg") == ["test_leak_md5"]
    for near in ("leak_reencode_strix_aluco.jpg", "leak_small_giraffa_camelopardalis_2.jpg"):
        assert reasons_of(demo_run.root, "05_dedup", near) == ["test_leak_pdq"], near
    rows = rows_by_uuid(demo_run.root, "05_dedup")
    strix = rows[uuids_of_file(demo_run.root, "leak_reencode_strix_aluco.jpg")[0]]
    assert strix["leak_testset"] == "heldout" and strix["leak_test_id"].endswith("strix_aluco.jpg")
    assert strix["pdq_min_distance"] <= 10
    # The held-out photos themselves are in no provider input.
    assert not any(uuids_of_file(demo_run.root, name) for name in demo_inputs.HELDOUT)


def test_verbatim_names_resolve_to_the_accepted_names(demo_run: DemoRun):  # noqa: F811
    rows = rows_by_uuid(demo_run.root, "03_taxonomy")

    def resolved(file_name: str) -> dict:
        (uuid,) = uuids_of_file(demo_run.root, file_name)
        return rows[uuid]

    typo = resolved("panthera_onca.jpg")
    assert typo["input_scientific_name"] == "Panthera oncca" and typo["species"] == "Panthera onca"
    assert typo["match_type"] == "Fuzzy"
    synonym = resolved(demo_inputs.SYNONYM_FILE)
    assert synonym["input_species"] == "Thalarctos maritimus" and synonym["species"] == "Ursus maritimus"
    assert synonym["resolution_strategy"] == "synonym_to_accepted"
    missing = resolved(demo_inputs.MISSING_RANKS_FILE)
    assert (
        missing["input_family"] is None
        and missing["family"] == "Lemuridae"
        and missing["order"] == "Primates"
    )
    homonym = resolved("specimen_label.jpg")
    assert (
        homonym["genus"] == "Dugesia"
        and homonym["kingdom"] == "Plantae"
        and homonym["family"] == "Asteraceae"
    )


def test_every_ok_row_is_in_exactly_one_shard(demo_run: DemoRun):  # noqa: F811
    dedup = stage_table(demo_run.root, "05_dedup")
    kept = set(dedup.filter(pc.equal(dedup["status"], "ok"))["uuid"].to_pylist())
    keys: Counter[str] = Counter()
    for path in sorted((demo_run.root / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            keys.update({name.split(".", 1)[0] for name in tar.getnames()})
    assert set(keys) == kept and set(keys.values()) == {1}
    sizes = json.loads((demo_run.root / "shards" / "sizes.json").read_text())
    assert sum(sizes.values()) == len(kept)


def test_evaluation_json_when_the_train_stage_exists(demo_run: DemoRun):  # noqa: F811
    if not train_stage_present():
        assert "stage 07 train is not in this version" in demo_run.stdout
        return
    results = evaluation_files(demo_run.root)
    assert results, f"no evaluation JSON under {demo_run.root / 'train'}"
    figures = json.loads(results[-1].read_text())
    assert figures.get("families"), figures
