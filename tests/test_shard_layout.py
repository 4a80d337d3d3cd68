"""Stage 06's building blocks that decide bytes and places: the tar writer writes exactly what
webdataset's own TarWriter writes with the same fixed fields; the keyed-hash assignment is exact
integer arithmetic and mixes partitions, providers and taxa into every shard."""

from __future__ import annotations

import io
import os
import random
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from stages.shard.assign import ORDER, TRAIN, VAL, Layout, held_out, keyed_hashes, shard_of
from stages.shard.tar import FileSlice, Headers, ShardTar, TarFields
from tests.support.photo_corpus import load_corpus

FIELDS = TarFields(mtime=0, owner="tolpipe", mode=0o444)


def samples() -> list[tuple[str, dict[str, bytes]]]:
    """Three real photos with text members, one with non-ASCII text."""
    out = []
    for i, photo in enumerate(load_corpus()[:3]):
        out.append((f"00000000-0000-5000-8000-00000000000{i}", {
            "jpg": photo.path.read_bytes(), "sci.txt": f"a photo of {photo.scientific_name}.".encode(),
            "common_name.txt": "Höhlenbär".encode(), "json": b'{"uuid":"x"}', "txt": b"a photo of it.",
        }))  # fmt: skip
    return out


def write_ours(path: Path, image_from_file: bool = False) -> int:
    """The samples through ShardTar; the jpg members read from a file (as shards read them from
    the staging) when asked."""
    tar = ShardTar(path, FIELDS)
    blob = path.with_suffix(".blob")
    with open(blob, "wb") as handle:
        offsets = [(handle.tell(), handle.write(members["jpg"])) for _, members in samples()]
    fd = os.open(blob, os.O_RDONLY)
    try:
        for (key, members), (offset, length) in zip(samples(), offsets, strict=True):
            jpg = FileSlice(fd, offset, length) if image_from_file else members["jpg"]
            tar.write(key, {**members, "jpg": jpg})
        return tar.close()
    finally:
        os.close(fd)


def test_tar_bytes_equal_webdatasets_tarwriter(tmp_path: Path):
    from webdataset.writer import TarWriter

    size = write_ours(tmp_path / "ours.tar")
    theirs = io.BytesIO()
    with TarWriter(theirs, user="tolpipe", group="tolpipe", mode=0o444, mtime=0, encoder=False) as writer:
        for key, members in samples():
            writer.write({"__key__": key, **members})
    ours = (tmp_path / "ours.tar").read_bytes()
    assert ours == theirs.getvalue()
    assert len(ours) == size and len(ours) % 10240 == 0
    write_ours(tmp_path / "again.tar", image_from_file=True)  # images copied from a file
    assert (tmp_path / "again.tar").read_bytes() == ours


def test_member_headers_are_tarfiles_own():
    import tarfile

    rng = random.Random(11)
    for fields in (FIELDS, TarFields(mtime=1_700_000_000, owner="x", mode=0o644)):
        headers = Headers(fields)
        names = ["a.jpg", "0" * 96 + ".txt", "b" * 100, "c" * 101, "Höhle.txt", "k.taxonTag_com.txt"]
        sizes = [0, 1, 511, 512, 513, 8**11 - 1, 8**11, *(rng.randrange(1, 10**9) for _ in range(50))]
        for name in names:
            for size in sizes:
                want = fields.info(name, size).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
                assert headers.header(name, size) == want, (name, size)


def test_shard_of_is_exact_integer_arithmetic():
    rng = random.Random(7)
    values = [0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1] + [rng.getrandbits(64) for _ in range(2000)]
    h = np.array(values, dtype=np.uint64)
    for shards in (1, 2, 3, 7, 1000, 20_011, 2**31 - 1):
        got = shard_of(h, shards)
        want = [v * shards >> 64 for v in values]
        assert got.tolist() == want, shards
        assert got.min() >= 0 and got.max() < shards


def test_layout_puts_validation_shards_after_training_shards():
    layout = Layout.for_counts(train_samples=25, val_samples=3, per_shard=10, rows=30)
    assert (layout.train, layout.val) == (3, 1)
    assert [layout.name(i) for i in range(layout.total)] == [
        "shard-00000.tar", "shard-00001.tar", "shard-00002.tar", "val-00000.tar"]  # fmt: skip
    h = keyed_hashes([f"u{i}" for i in range(200)], 0, b"tolpipe-order")
    split = np.array([VAL if i % 5 == 0 else TRAIN for i in range(200)], dtype=np.int8)
    target = layout.partition(split, h)
    assert set(target[split == VAL]) == {3} and set(target[split == TRAIN]) == {0, 1, 2}
    # Rows but no sample at all: one shard accounts for them.
    assert Layout.for_counts(0, 0, 10, rows=2) == Layout(1, 0)
    assert Layout.for_counts(0, 0, 10, rows=0).total == 0


def test_keyed_hashes_depend_on_the_seed_only():
    uuids = [f"u{i}" for i in range(50)]
    assert (keyed_hashes(uuids, 0, b"tolpipe-order") == keyed_hashes(uuids, 0, b"tolpipe-order")).all()
    assert (keyed_hashes(uuids, 0, b"tolpipe-order") != keyed_hashes(uuids, 1, b"tolpipe-order")).all()
    assert (keyed_hashes(uuids, 0, b"tolpipe-order") != keyed_hashes(uuids, 0, b"tolpipe-val")).all()


def test_every_shard_mixes_partitions_providers_and_taxa():
    # 12,000 rows as 01 would hold them: 12 partitions of one host each, in source order, rows of
    # 3 providers and 40 species in runs (as exports list them); fixed uuids, so a fixed outcome.
    rows = []
    for i in range(12_000):
        rows.append({"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"row-{i}")), "partition": i // 1000,
                     "provider": f"p{i // 4000}", "species": f"s{i // 300}"})  # fmt: skip
    h = keyed_hashes([r["uuid"] for r in rows], 0, ORDER)
    layout = Layout.for_counts(len(rows), 0, 1000, len(rows))
    target = layout.partition(np.zeros(len(rows), dtype=np.int8), h)
    sizes = Counter(int(t) for t in target)
    assert layout.total == 12 and all(900 <= n <= 1100 for n in sizes.values()), sizes
    for shard in range(layout.total):
        members = sorted((int(h[i]), rows[i]) for i in range(len(rows)) if target[i] == shard)
        in_order = [row for _, row in members]
        assert {r["partition"] for r in in_order} == set(range(12))
        assert {r["provider"] for r in in_order} == {"p0", "p1", "p2"}
        assert len({r["species"] for r in in_order}) == 40
        # Neighbours within a shard come from the same partition about 1 time in 12, not in runs.
        same = sum(a["partition"] == b["partition"] for a, b in zip(in_order, in_order[1:], strict=False))
        assert same < 0.15 * len(in_order)


def test_held_out_fraction_is_close_to_the_setting():
    keys = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"row-{i}")) for i in range(20_000)]
    held = held_out(keys, 0, 0.1)
    assert 0.09 < held.mean() < 0.11
    assert not held_out(keys, 0, 0.0).any()
    assert not held_out([None] * 10, 0, 0.9).any()  # rows without a key are never held out
