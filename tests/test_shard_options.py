"""Stage 06's options through the real CLI: held-out validation shards by species (no species on
both sides) and by sample, read back by open_clip's validation loader; resizing at shard time
keeps the aspect ratio (never squashed, never enlarged)."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import pyarrow.compute as pc
import pytest
from PIL import Image

from pipeline.config import load_config
from stages.shard.captions import RANKS, names_of
from stages.shard.verify import verify
from tests.conftest import cli
from tests.support.shard_root import UPSTREAM_OK, copy_root, manifest, shard_root, tar_paths  # noqa: F401

# The test root is built through stage 04's face filter and stage 05's dedup.
pytest.importorskip("facenet_pytorch", reason="the test root is built through 04 (filters extra)")
pytest.importorskip("pdqhash", reason="the test root is built through 05 (dedup extra)")

SMALL = ["--set", "shard.samples_per_shard=8", "--set", "run.progress=false"]
MISSING = frozenset({"", "none", "null", "nan", "n/a", "unknown"})


def scientific(row: dict) -> str:
    names = names_of({r: row[r] for r in RANKS}, row["scientific_name"], row["common_name"], MISSING)
    assert names is not None
    return names.scientific


def test_validation_shards_by_species_then_by_sample(shard_root, tmp_path: Path):  # noqa: F811
    pytest.importorskip("open_clip")
    root, args = copy_root(shard_root, tmp_path / "root")
    held = ["--set", "shard.val_fraction=0.3"]
    cli(root, *args, *SMALL, *held, "--set", "shard.val_by=species", "run", "shard")
    ok = manifest(root).filter(pc.equal(manifest(root)["status"], "ok")).to_pylist()
    train = {scientific(r) for r in ok if r["split"] == "train"}
    val = {scientific(r) for r in ok if r["split"] == "val"}
    assert train and val and not train & val  # a held-out species is never seen in training
    assert all(r["shard"].startswith("val-") == (r["split"] == "val") for r in ok)
    sizes = json.loads((root / "shards" / "sizes.json").read_text())
    val_shards = [p.name for p in tar_paths(root, "val")]
    assert val_shards and set(val_shards) <= set(sizes)
    assert sum(sizes[name] for name in val_shards) == sum(r["split"] == "val" for r in ok)
    readme = (root / "shards" / "README.txt").read_text()
    assert "validation shards" in readme and "--val-data" in readme
    assert verify(root, load_config(root)) == []

    import open_clip
    from open_clip_train.data import get_wds_dataset

    count = sum(sizes[name] for name in val_shards)
    urls = str(root / "shards" / (f"val-{{00000..{len(val_shards) - 1:05d}}}.tar" if len(val_shards) > 1
                                  else "val-00000.tar"))  # fmt: skip
    options = argparse.Namespace(val_data=urls, val_num_samples=count, batch_size=2, workers=0, world_size=1)
    data = get_wds_dataset(options, open_clip.image_transform(224, is_train=False), is_train=False,
                           tokenizer=open_clip.get_tokenizer("ViT-B-32"))  # fmt: skip
    assert sum(len(images) for images, _ in data.dataloader) == count

    cli(root, *args, *SMALL, *held, "--set", "shard.val_by=sample", "run", "shard", "--rebuild")
    table = manifest(root)
    assert table.num_rows == UPSTREAM_OK
    ok = table.filter(pc.equal(table["status"], "ok")).to_pylist()
    held = [r for r in ok if r["split"] == "val"]
    assert 3 <= len(held) <= 26  # about 30% of 43 samples
    assert sum(json.loads((root / "shards" / "sizes.json").read_text()).values()) == len(ok)
    assert verify(root, load_config(root)) == []


def test_resizing_keeps_the_aspect_ratio(shard_root, tmp_path: Path):  # noqa: F811
    root, args = copy_root(shard_root, tmp_path / "root")
    cli(root, *args, *SMALL, "--set", "shard.resize_shortest_side=160", "run", "shard")
    ok = {r["uuid"]: r for r in manifest(root).to_pylist() if r["status"] == "ok"}
    stored = {}
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.ledger import ManifestStore

    store = ManifestStore(root, "02_download")
    columns = ["uuid", "stored_width", "stored_height"]
    table = pa.concat_tables([pq.read_table(store.part_path(i), columns=columns)
                              for i in store.committed_records()])  # fmt: skip
    stored = {r["uuid"]: (r["stored_width"], r["stored_height"]) for r in table.to_pylist()}
    checked = 0
    for path in tar_paths(root):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if not member.name.endswith(".jpg"):
                    continue
                uuid = member.name.split(".", 1)[0]
                with Image.open(io.BytesIO(archive.extractfile(member).read())) as im:
                    width, height = im.size
                old_w, old_h = stored[uuid]
                assert min(width, height) == min(160, old_w, old_h)
                assert abs(width / height - old_w / old_h) <= 1 / min(width, height)  # aspect kept
                assert (width, height) == (ok[uuid]["width"], ok[uuid]["height"])
                assert ok[uuid]["resized"] == (min(old_w, old_h) > 160)
                checked += 1
    assert checked == len(ok) == UPSTREAM_OK - 1
    assert verify(root, load_config(root)) == []


@pytest.mark.parametrize("setting,words", [
    ("shard.val_fraction=1.0", "shard.val_fraction must be >= 0 and < 1"),
    ("shard.val_by=genus", 'shard.val_by must be one of "sample", "species"'),
    ("shard.samples_per_shard=0", "shard.samples_per_shard must be >= 1"),
    ("shard.txt_caption=taxon_tag", "shard.txt_caption must be one of"),
    ("shard.resize_jpeg_quality=101", "shard.resize_jpeg_quality must be in 1..100"),
])  # fmt: skip
def test_settings_out_of_their_documented_range_are_refused(tmp_path: Path, setting: str, words: str):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(".", r"\.")):
        load_config(tmp_path, overrides=[setting])


@pytest.mark.parametrize("setting,words", [
    ("shard.tar_mode=\"rw\"", "shard.tar_mode must be octal"),
    ("shard.tar_owner=\"Zoë\"", "shard.tar_owner must be 1-31 ASCII characters"),
])  # fmt: skip
def test_tar_fields_are_checked_before_any_work(tmp_path: Path, setting: str, words: str):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError
    from stages.shard.settings import shard_settings

    config = load_config(tmp_path, overrides=[setting])
    with pytest.raises(ConfigError, match=words):
        shard_settings(config["shard"])
