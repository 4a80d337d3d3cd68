"""Ingest's shuffle: split files (one per occurrence bucket, one record batch per host
sub-bucket), and a staging area that keeps only what partitions read once the plan exists."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stages.ingest import shuffle
from tests.conftest import cli, partition_digests, write_url_table


def test_split_file_round_trip(tmp_path: Path):
    table = pa.table({"_seq": pa.chunked_array([[1, 2], [3]]), "url": pa.chunked_array([["a", "b"], ["c"]])})
    path = tmp_path / "bucket-00000.arrow"
    shuffle.write_split(table.schema, iter([(7, table), (100_003, table.slice(1))]), path)
    assert shuffle.split_keys(path) == [7, 100_003]
    assert shuffle.read_split(path, 7).equals(table.combine_chunks())
    assert shuffle.read_split(path, 100_003)["url"].to_pylist() == ["b", "c"]
    assert shuffle.read_split(path, 8) is None
    assert shuffle.read_split(path, 200_000) is None

    empty = tmp_path / "bucket-00001.arrow"
    shuffle.write_split(table.schema, iter([]), empty)
    assert shuffle.split_keys(empty) == []
    assert shuffle.sub_bucket_keys([str(path), str(empty)]) == [(0, 7), (1, 3)]


def test_bucket_count_does_not_change_outputs_and_intermediates_are_dropped(tmp_path: Path):
    source = write_url_table(tmp_path / "urls.csv", rows=30_000, hosts=3, duplicates_every=50)
    assert source.stat().st_size > 2 * 2**20, "big enough for three 1 MiB occurrence buckets"
    common = ["--set", "ingest.shuffle_rows=2000", "--set", "ingest.batch_size=1500"]
    digests = {}
    for bucket_mb in (1, 64):
        root = tmp_path / f"root-{bucket_mb}"
        cli(root, *common, "--set", f"ingest.occurrence_bucket_mb={bucket_mb}",
            "run", "ingest", "--source", f"table:{source}")  # fmt: skip
        digests[bucket_mb] = partition_digests(root, "01_ingest")

        (staging,) = (root / "work" / "01_ingest").glob("staging-*")
        assert not (staging / "occurrences").exists() and not (staging / "split").exists()
        finals = sorted((staging / "final").glob("*.parquet"))
        host_rows = shuffle.read_marker(staging / shuffle.PLAN_FILE)["host_rows"]
        assert len(host_rows) == 3
        assert len(finals) == sum(-(-n // 2000) for n in host_rows.values())  # ceil per host
        assert sum(pq.ParquetFile(f).metadata.num_rows for f in finals) == 30_000
    assert len(digests[1]) > len(finals)  # sub-buckets hold more than one batch
    assert digests[1] == digests[64]
