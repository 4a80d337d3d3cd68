"""Stage 05 end to end on real photos, through the real CLI (roots built 01 -> 04 from the shipped
photos served over loopback HTTP): near-duplicates of test images are caught by PDQ with the right
test id, crops, mirror images and other photos are not, an exact copy is caught by MD5, flat
images never match, copies within the training data keep one; the decisions are the same in 1
partition or 7; a new test set recomputes the stage without hashing the training images again;
another radius is re-applied from the stored distances; bad settings are refused before any
work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.ledger import ManifestStore
from pipeline.runrecord import read_runs
from stages.dedup import faiss_index, registry
from tests.conftest import cli, partition_digests
from tests.support import dedup_root as D
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.loopback_server import LoopbackServer

pytest.importorskip("pdqhash", reason="stage 05 needs the dedup extra")
DEDUP = "05_dedup"


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory, gbif_dump: Path) -> dict[str, tuple[Path, list[str]]]:  # noqa: F811
    """The same rows 01 -> 04 in 7 partitions and in 1, each with the test set registered."""
    base = tmp_path_factory.mktemp("dedup")
    built = {}
    with LoopbackServer(hosts=1, folder=base / "files") as server:
        served = D.serve_files(base, server)
        for name, batch in (("seven", 7), ("one", 100)):
            root = base / name
            built[name] = (root, D.build_root(root, served.table, gbif_dump, batch_size=batch))
            D.run_testsets(root, "add", "heldout", "--images", str(served.testset))
    return built


def copy_root(roots, name: str, dest: Path) -> tuple[Path, list[str]]:
    root, args = roots[name]
    shutil.copytree(root, dest)
    return dest, args


def manifest(root: Path, stage: str = DEDUP) -> pa.Table:
    store = ManifestStore(root, stage)
    return pa.concat_tables([pq.read_table(store.part_path(i)) for i in sorted(store.committed_records())])


def by_source(root: Path) -> dict[str, dict]:
    """source_id -> 05 row."""
    store = ManifestStore(root, "01_ingest")
    ids = pa.concat_tables([pq.read_table(store.part_path(i), columns=["uuid", "source_id"])
                            for i in sorted(store.committed_records())])  # fmt: skip
    names = dict(zip(ids["uuid"].to_pylist(), ids["source_id"].to_pylist(), strict=True))
    return {names[row["uuid"]]: row for row in manifest(root).to_pylist()}


def test_leaks_and_copies_through_the_cli(roots, tmp_path: Path):
    root, args = copy_root(roots, "seven", tmp_path / "root")
    result = cli(root, *args, "run", "dedup")
    rows = by_source(root)
    filtered = manifest(root, "04_filter")
    assert len(rows) == filtered.filter(pc.equal(filtered["status"], "ok")).num_rows == 44
    decided: set[str] = set()
    for test_id, photo in D.CAUGHT_PDQ.items():
        row = rows[f"photo-{photo}"]
        assert (row["status"], row["reason"]) == ("dropped", "test_leak_pdq"), test_id
        assert (row["leak_testset"], row["leak_test_id"]) == ("heldout", test_id)
        assert 0 <= row["pdq_min_distance"] <= 10 and f"heldout/{test_id}" in row["detail"]
        decided.add(f"photo-{photo}")
    assert rows[f"photo-{D.HEAVY_BLUR}"]["pdq_min_distance"] > 0  # a few bits: used below
    for photo in (*D.NOT_CAUGHT.values(), "giraffa_camelopardalis_2.jpg"):  # crop, mirror, other photo
        row = rows[f"photo-{photo}"]
        assert row["status"] == "ok" and row["pdq_min_distance"] is None and row["leak_test_id"] is None
        decided.add(f"photo-{photo}")
    exact = rows[f"photo-{D.EXACT}"]
    assert (exact["status"], exact["reason"]) == ("dropped", "test_leak_md5")
    assert (exact["md5_leak_testset"], exact["md5_leak_test_id"]) == ("heldout", "exact/ara_macao.jpg")
    assert exact["detail"].startswith("test_leak_md5: same bytes as test image heldout/exact/ara_macao.jpg")
    flat = rows["flat-grey.jpg"]
    assert (flat["status"], flat["pdq_state"], flat["pdq_quality"]) == ("ok", "low_quality", 0)
    assert flat["pdq"] is not None and flat["pdq_min_distance"] is None  # stored, never matched
    test_flat = registry.read(root, "heldout").hashes().filter(pc.equal(pc.field("test_id"), "flat/grey.png"))
    assert test_flat["pdq"].to_pylist() == [flat["pdq"]]  # the same hash: only the floor keeps them apart
    museum = rows[f"museum-{D.MUSEUM}"]
    assert (museum["status"], museum["pdq_state"], museum["image_type"]) == ("ok", "not_applicable",
                                                                              "museum_specimen")  # fmt: skip
    assert museum["pdq"] is None
    copies = [rows[s] for s in (f"photo-{D.COPIED}", f"copy-{D.COPIED}")]
    kept = min(r["uuid"] for r in copies)
    assert sorted(r["status"] for r in copies) == ["dropped", "ok"]
    for row in copies:
        assert row["md5_copies"] == 2 and row["md5_kept"] == kept
        if row["uuid"] == kept:
            assert row["status"] == "ok"
        else:
            assert row["reason"] == "duplicate_md5" and kept in row["detail"]
    decided.update(["flat-grey.jpg", f"museum-{D.MUSEUM}", f"photo-{D.EXACT}", f"photo-{D.COPIED}",
                    f"copy-{D.COPIED}"])  # fmt: skip
    others = [row for name, row in rows.items() if name not in decided]
    assert len(others) == 32
    assert all(r["status"] == "ok" and r["pdq_state"] == "applied" and len(r["pdq"]) == 64
               and r["pdq_min_distance"] is None for r in others)  # fmt: skip
    assert "note        test sets: heldout (10 images)" in result.stdout
    status = cli(root, "status").stdout
    assert "test sets: heldout (10 images)" in status and "PDQ radius search:" in status
    shown = cli(root, "show", "dedup", "--reason", "test_leak_pdq", "--format", "csv").stdout
    assert "half/giraffa_camelopardalis.jpg" in shown


def test_same_decisions_in_1_partition_or_7(roots, tmp_path: Path):
    decisions = {}
    for name in ("one", "seven"):
        root, args = copy_root(roots, name, tmp_path / name)
        backend = "faiss" if name == "one" and faiss_index.available() else "numpy"  # same answers
        cli(root, *args, "--set", f"dedup.search_backend={backend}", "run", "dedup")
        table = manifest(root)
        columns = ["status", "reason", "detail", "md5_copies", "md5_kept", "pdq", "pdq_min_distance",
                   "leak_test_id"]  # fmt: skip
        decisions[name] = {r["uuid"]: tuple(r[c] for c in columns) for r in table.to_pylist()}
        partitions = ManifestStore(root, DEDUP).committed_records()
        assert len(partitions) == (1 if name == "one" else 7)
        if name == "seven":  # the two copies sit in different partitions
            holders = {i for i in partitions if pq.read_table(ManifestStore(root, DEDUP).part_path(i),
                       filters=[("md5_copies", "=", 2)]).num_rows}  # fmt: skip
            assert len(holders) >= 2
    assert decisions["one"] == decisions["seven"]
    assert sum(1 for d in decisions["one"].values() if d[1] == "duplicate_md5") == 1


def test_pdq_scope_and_quality_floor_are_settings(roots, tmp_path: Path):
    root, args = copy_root(roots, "seven", tmp_path / "root")
    cli(root, *args, "run", "dedup")
    cached = cache_files(root)
    wider = ["--set", 'dedup.pdq_image_types=["museum_specimen", "camera_trap", "citizen_science", "other"]',
             "--set", "dedup.pdq_min_quality=0"]  # fmt: skip
    refused = cli(root, *args, *wider, "run", "dedup", check=False)
    assert refused.returncode == 3
    assert "dedup.pdq_image_types" in refused.stderr and "dedup.pdq_min_quality" in refused.stderr
    cli(root, *args, *wider, "run", "dedup", "--rebuild")
    rows = by_source(root)
    museum = rows[f"museum-{D.MUSEUM}"]
    assert (museum["reason"], museum["leak_test_id"]) == ("test_leak_pdq", f"museum/{D.MUSEUM}")
    flat = rows["flat-grey.jpg"]  # without the floor, flat images match each other
    assert (flat["reason"], flat["leak_test_id"]) == ("test_leak_pdq", "flat/grey.png")
    assert flat["pdq_min_distance"] == 0
    now = cache_files(root)
    changed = {k for k in now if cached.get(k) != now[k]}
    assert len(changed) == 1  # only the museum row's partition hashed one more image


def cache_files(root: Path) -> dict[str, tuple[int, int]]:
    folder = root / "work" / DEDUP / "pdq"
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob("*.parquet")}  # fmt: skip


def test_a_new_test_set_recomputes_without_hashing_again(roots, tmp_path: Path):
    root, args = copy_root(roots, "seven", tmp_path / "root")
    cli(root, *args, "run", "dedup")
    first = partition_digests(root, DEDUP)
    cached = cache_files(root)
    assert len(cached) == 7
    second = tmp_path / "second"
    (second / "sub").mkdir(parents=True)
    shutil.copy(D.corpus_dir() / "giraffa_camelopardalis_2.jpg", second / "sub" / "giraffe.jpg")
    D.run_testsets(root, "add", "second", "--images", str(second))
    cli(root, *args, "run", "dedup")
    assert read_runs(root, DEDUP)[-1]["partitions_computed"] == 7  # every partition's inputs changed
    assert cache_files(root) == cached  # the training images were not hashed again
    row = by_source(root)["photo-giraffa_camelopardalis_2.jpg"]
    assert row["reason"] == "test_leak_md5"
    assert (row["md5_leak_testset"], row["md5_leak_test_id"]) == ("second", "sub/giraffe.jpg")
    assert partition_digests(root, DEDUP) != first
    cli(root, *args, "--set", 'dedup.testsets=["heldout"]', "run", "dedup")  # inputs changed: no --rebuild
    assert partition_digests(root, DEDUP) == first  # only the selected set counts
    assert cache_files(root) == cached
    D.run_testsets(root, "remove", "second")
    cli(root, *args, "--set", "dedup.testsets=[]", "run", "dedup")
    assert read_runs(root, DEDUP)[-1]["partitions_computed"] == 0  # the same sets: nothing to do
    assert partition_digests(root, DEDUP) == first


def test_rethreshold_re_applies_a_radius_from_stored_distances(roots, tmp_path: Path):
    from pipeline.config import load_config
    from pipeline.runner import rethreshold_stage

    root, args = copy_root(roots, "seven", tmp_path / "root")
    cli(root, *args, "run", "dedup")
    before = partition_digests(root, DEDUP)
    cached = cache_files(root)
    scores = manifest(root).drop_columns(["status", "reason", "detail"])
    blurred = by_source(root)[f"photo-{D.HEAVY_BLUR}"]
    distance = blurred["pdq_min_distance"]
    overrides = ["cluster.local_processes=false", "run.progress=false",
                 f"dedup.pdq_max_distance={distance - 1}"]  # fmt: skip
    data = rethreshold_stage(root, DEDUP, load_config(root, overrides=overrides))
    assert len(data["partitions_rethresholded"]) == 7
    after = by_source(root)
    assert after[f"photo-{D.HEAVY_BLUR}"]["status"] == "ok"
    assert after[f"photo-{D.REENCODED}"]["reason"] == "test_leak_pdq"  # distance 0 stays caught
    assert manifest(root).drop_columns(["status", "reason", "detail"]).equals(scores)  # scores untouched
    assert cache_files(root) == cached
    cli(root, *args, "--set", "dedup.pdq_max_distance=10", "rethreshold", "dedup")
    assert partition_digests(root, DEDUP) == before
    refused = cli(root, *args, "--set", "dedup.pdq_max_distance=20", "rethreshold", "dedup", check=False)
    assert refused.returncode != 0 and "dedup.pdq_search_radius" in refused.stderr


def test_bad_settings_are_refused_before_any_work(roots, tmp_path: Path):
    root, args = copy_root(roots, "seven", tmp_path / "root")
    unknown = cli(root, *args, "--set", 'dedup.testsets=["nope"]', "run", "dedup", check=False)
    assert unknown.returncode == 2 and "unregistered test set(s) nope (registered: heldout" in unknown.stderr
    other = cli(root, *args, "--set", "dedup.pdq_canonical_px=128", "run", "dedup", check=False)
    assert other.returncode == 2 and "test set 'heldout' was hashed with" in other.stderr
    radius = cli(root, *args, "--set", "dedup.pdq_max_distance=20", "run", "dedup", check=False)
    assert radius.returncode == 2 and "at most dedup.pdq_search_radius" in radius.stderr
    D.run_testsets(root, "remove", "heldout")
    required = cli(root, *args, "--set", "dedup.testsets_required=true", "run", "dedup", check=False)
    assert required.returncode == 2 and "no test set registered" in required.stderr
    assert not ManifestStore(root, DEDUP).committed_records()
    result = cli(root, *args, "run", "dedup")  # without sets: MD5 dedup only, and the run says so
    assert "no test set registered: leakage not checked" in result.stdout
    table = manifest(root)
    assert set(table["reason"].drop_null().to_pylist()) == {"duplicate_md5"}
