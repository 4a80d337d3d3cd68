"""`tolpipe testsets add|list|remove` through the command's own parser: a folder of real images,
a Parquet file (plain binary and Hugging Face Image columns), WebDataset shards from disk and over
loopback HTTP; provenance and digest; undecodable images keep their MD5; names, duplicate ids, an
interrupted add and unknown sets are handled with clear errors."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ConfigError, InputError
from stages.dedup import registry
from stages.dedup.pdq import pdq_hash
from stages.dedup.settings import HashSettings
from stages.dedup.sources import expand_braces
from tests.support.dedup_root import run_testsets, write_testset
from tests.support.loopback_server import LoopbackServer

SETTINGS = HashSettings(160, 2)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_testset(tmp_path_factory.mktemp("testset") / "images")
    (folder / "broken").mkdir()
    (folder / "broken" / "truncated.jpg").write_bytes((folder / "exact/ara_macao.jpg").read_bytes()[:200])
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".jpg", ".png")}  # fmt: skip


def test_add_images_list_remove(images: Path, tmp_path: Path):
    root = tmp_path / "root"
    out = run_testsets(root, "add", "heldout", "--images", str(images))
    assert "test set 'heldout' registered: 11 images" in out
    assert "1 could not be decoded (MD5 only): broken/truncated.jpg" in out
    found = registry.read(root, "heldout")
    assert found is not None
    meta = found.meta
    assert meta["kind"] == "images" and meta["source"] == str(images.resolve())
    assert meta["images"] == 11 and meta["failed"] == 1 and meta["low_quality"] == 1  # the flat image
    assert meta["hasher"] == SETTINGS.identity() and meta["added"].endswith("Z")
    table = found.hashes()
    assert table["test_id"].to_pylist() == sorted(files_of(images))  # README.txt is not an image
    assert meta["digest"] == registry.content_digest(table)
    rows = {r["test_id"]: r for r in table.to_pylist()}
    for rel, data in files_of(images).items():
        assert rows[rel]["md5"] == hashlib.md5(data).hexdigest()
    assert rows["broken/truncated.jpg"]["pdq"] is None and rows["broken/truncated.jpg"]["error"]
    expected = pdq_hash((images / "blur/strix_aluco.jpg").read_bytes(), SETTINGS)
    assert rows["blur/strix_aluco.jpg"]["pdq"] == expected.hex
    assert rows["flat/grey.png"]["pdq_quality"] == 0

    listing = run_testsets(root, "list")
    assert listing.splitlines()[1].split()[:4] == ["heldout", "11", "1", "1"]
    assert meta["digest"][:16] in listing

    with pytest.raises(ConfigError, match="already registered"):
        run_testsets(root, "add", "heldout", "--images", str(images))
    assert "removed" in run_testsets(root, "remove", "heldout")
    assert registry.read(root, "heldout") is None and not (root / "testsets" / "heldout").exists()
    assert run_testsets(root, "list").startswith("no test set registered")
    with pytest.raises(ConfigError, match="no test set 'heldout'"):
        run_testsets(root, "remove", "heldout")


def test_same_images_give_same_hashes_whatever_the_worker_count(images: Path, tmp_path: Path):
    root = tmp_path / "root"
    run_testsets(root, "add", "one", "--images", str(images), overrides=["dedup.testset_workers=1"])
    run_testsets(root, "add", "two", "--images", str(images), overrides=["dedup.testset_workers=2"])
    assert registry.read(root, "one").digest == registry.read(root, "two").digest


def test_parquet_binary_and_hugging_face_image_columns(images: Path, tmp_path: Path):
    root = tmp_path / "root"
    data = files_of(images)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": list(data), "jpeg": pa.array(list(data.values()), pa.binary())}), plain)
    hf = tmp_path / "hf.parquet"
    structs = [{"bytes": v, "path": k} for k, v in data.items()]
    pq.write_table(pa.table({"name": list(data), "image": structs}), hf)
    run_testsets(root, "add", "plain", "--parquet", str(plain))
    run_testsets(root, "add", "hf", "--parquet", str(hf), "--id-column", "name")
    run_testsets(root, "add", "rows", "--parquet", str(hf), "--image-column", "image")  # ids: row-N
    by_folder = {r["test_id"]: r for r in _folder_rows(root, images)}
    for name in ("plain", "hf"):
        found = registry.read(root, name)
        assert found.meta["kind"] == "parquet" and found.meta["images"] == len(data)
        for row in found.hashes().to_pylist():
            assert same_hashes(row, by_folder[row["test_id"]])
    assert registry.read(root, "plain").digest == registry.read(root, "hf").digest
    assert sorted(registry.read(root, "rows").hashes()["test_id"].to_pylist())[0] == "row-0"

    duplicated = tmp_path / "dup.parquet"
    pq.write_table(pa.table({"id": ["a", "a"], "jpeg": pa.array([b"x", b"y"], pa.binary())}), duplicated)
    with pytest.raises(InputError, match="'a' occurs twice"):
        run_testsets(root, "add", "dup", "--parquet", str(duplicated))
    with pytest.raises(InputError, match="no image column"):
        pq.write_table(pa.table({"id": ["a"]}), tmp_path / "noimg.parquet")
        run_testsets(root, "add", "noimg", "--parquet", str(tmp_path / "noimg.parquet"))
    assert registry.read(root, "dup") is None and registry.read(root, "noimg") is None


def same_hashes(row: dict, reference: dict) -> bool:
    return (row["md5"], row["pdq"], row["pdq_quality"]) == (reference["md5"], reference["pdq"],
                                                            reference["pdq_quality"])  # fmt: skip


def _folder_rows(root: Path, images: Path) -> list[dict]:
    run_testsets(root, "add", "folder", "--images", str(images))
    return registry.read(root, "folder").hashes().to_pylist()


def write_shards(folder: Path, data: dict[str, bytes], shards: int) -> list[Path]:
    """WebDataset shards: key.jpg|png plus key.txt per sample, spread over `shards` tars."""
    paths = [folder / f"test-{i:03d}.tar" for i in range(shards)]
    items = list(data.items())
    for i, path in enumerate(paths):
        with tarfile.open(path, "w") as tar:
            for rel, payload in items[i::shards]:
                key, ext = rel.rsplit(".", 1)
                for name, body in ((f"{key}.{ext}", payload), (f"{key}.txt", b"caption")):
                    info = tarfile.TarInfo(name)
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
    return paths


def test_webdataset_shards_from_disk_and_over_http(images: Path, tmp_path: Path):
    root = tmp_path / "root"
    data = files_of(images)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shards(shards, data, 3)
    run_testsets(root, "add", "local", "--webdataset", str(shards / "test-{000..002}.tar"))
    with LoopbackServer(hosts=1, folder=shards) as server:
        url = server.url(0, "/files/test-{000..002}.tar")
        run_testsets(root, "add", "remote", "--webdataset", url)
    local, remote = registry.read(root, "local"), registry.read(root, "remote")
    assert local.meta["kind"] == "webdataset" and local.meta["images"] == len(data)
    assert remote.meta["source"] == [url] and local.digest == remote.digest
    by_folder = {r["test_id"].rsplit(".", 1)[0]: r for r in _folder_rows(root, images)}
    for row in local.hashes().to_pylist():
        assert same_hashes(row, by_folder[row["test_id"]])


def test_brace_patterns():
    assert expand_braces("s-{08..11}.tar") == ["s-08.tar", "s-09.tar", "s-10.tar", "s-11.tar"]
    assert expand_braces("{a,b}/x-{1..2}") == ["a/x-1", "a/x-2", "b/x-1", "b/x-2"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_interrupted_add_is_listed_incomplete_and_replaced(images: Path, tmp_path: Path):
    root = tmp_path / "root"
    run_testsets(root, "add", "heldout", "--images", str(images))
    (root / "testsets" / "heldout" / "testset.json").unlink()  # as a kill before the last write
    assert "incomplete (an interrupted add; add again or remove): heldout" in run_testsets(root, "list")
    assert registry.registered(root) == []
    run_testsets(root, "add", "heldout", "--images", str(images))
    assert [s.name for s in registry.registered(root)] == ["heldout"]
    assert json.loads((root / "testsets" / "heldout" / "testset.json").read_text())["images"] == 11


def test_bad_names_and_sources_fail_clearly(tmp_path: Path):
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match="test set name"):
        run_testsets(root, "add", "../escape", "--images", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        run_testsets(root, "add", "empty", "--images", str(tmp_path / "empty"))
    with pytest.raises(SystemExit):  # argparse: exactly one source
        run_testsets(root, "add", "x")
