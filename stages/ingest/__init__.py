"""Stage 01 ingest: provider exports -> one manifest row per image, partitioned by URL host.

Sources (`--source KIND:PATH` or `ingest.sources`): `gbif` (Darwin Core Archive), `eol` (EOL
media manifest CSV), `table` (CSV/Parquet with a `url` column). Rows are classified (image type,
collection area) and dropped with reasons (bad URL, not a still image, material citation, camera
trap occurrence with too many images, duplicate URL). See manifests/README.md for the columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.digest import digest_json, sha256_file
from pipeline.errors import ConfigError
from pipeline.ledger import stage_schema
from pipeline.progress import Progress
from pipeline.stage import Partition, PartitionOutput, Stage, StageContext
from stages.ingest import shuffle
from stages.ingest.assemble import build_partition
from stages.ingest.rules import classify, sample_uuids
from stages.ingest.sources import iter_source, validate_source

SOURCE_KINDS = ("gbif", "eol", "table")

_TEXT = [
    "url", "host", "provider", "source_kind", "source_file", "source_id", "occurrence_id",
    "scientific_name", "kingdom", "phylum", "class", "order", "family", "genus", "species",
    "common_name", "license", "rights_holder", "basis_of_record", "publisher", "event_remarks",
    "media_type", "media_format", "image_type", "collection_area",
]  # fmt: skip
SCHEMA = stage_schema(
    *[pa.field(name, pa.string()) for name in _TEXT],
    pa.field("images_in_occurrence", pa.int32()),
    pa.field("source_row", pa.int64()),
)


def parse_sources(values: list[str]) -> list[tuple[str, Path]]:
    if not values:
        raise ConfigError("no ingest sources: pass --source KIND:PATH or set ingest.sources")
    sources = []
    for value in values:
        kind, sep, path = value.partition(":")
        if not sep or kind not in SOURCE_KINDS or not path:
            raise ConfigError(f"source {value!r}: expected KIND:PATH with KIND in {SOURCE_KINDS}")
        sources.append((kind, Path(path).expanduser().resolve()))
    return sources


def source_digest(path: Path) -> str:
    """sha256 of a file, or of the sorted (name, sha256) list of a folder's files."""
    if path.is_file():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return digest_json([(str(p.relative_to(path)), sha256_file(p)) for p in files])


def derive_columns(table: pa.Table, params: dict[str, Any]) -> pa.Table:
    """Pass 2's per-row work: rules (status, reason, image type, ...) and the sample uuid."""
    derived = classify(table, params)
    for name in derived.column_names:
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, derived[name])
    return table.append_column("uuid", sample_uuids(table))


class IngestStage(Stage):
    number = "01"
    name = "ingest"
    schema = SCHEMA
    # Sources are tracked by content digest (Partition.inputs), not by path; read sizes only
    # change speed and memory.
    volatile_params = ("sources", "chunk_rows", "occurrence_bucket_mb", "dwca_join_memory_mb")

    def __init__(self) -> None:
        self._staging: Path | None = None
        self._inputs: dict[str, str] = {}

    def prepare(self, ctx: StageContext, mapper: Any) -> None:
        sources = parse_sources(ctx.params["sources"])
        for kind, path in sources:
            validate_source(kind, path)
        self._inputs = {f"source-{i}": f"{k}:{source_digest(p)}" for i, (k, p) in enumerate(sources)}
        key = digest_json({"inputs": self._inputs, "params": self.output_params(ctx.params)})[:16]
        folder = ctx.work_dir() / f"staging-{key}"
        self._staging = folder
        if shuffle.read_plan(folder) is not None:
            return
        for old in ctx.work_dir().glob("staging-*"):
            shuffle.clear(old)
        self._build_staging(ctx, sources, folder, mapper)

    def _build_staging(
        self, ctx: StageContext, sources: list[tuple[str, Path]], folder: Path, mapper: Any
    ) -> None:
        params = ctx.params
        run_cfg = ctx.config["run"]
        layout = shuffle.StagingLayout(folder)
        total_bytes = sum(_size(p) for _, p in sources)
        n_buckets = shuffle.occurrence_bucket_count(total_bytes, params["occurrence_bucket_mb"])
        reading = Progress(
            "01_ingest read", len(sources), unit="sources",
            enabled=run_cfg["progress"], interval_s=run_cfg["progress_interval_s"],
        )  # fmt: skip

        join_memory = params["dwca_join_memory_mb"] << 20

        def batches():
            for index, (kind, path) in enumerate(sources):
                chunks = iter_source(
                    kind, path, params["chunk_rows"],
                    join_memory_bytes=join_memory, temp_dir=ctx.work_dir("dwca-join"),
                )  # fmt: skip
                yield from ((index, b) for b in chunks)
                reading.advance(1)

        host_rows = shuffle.pass1(batches(), layout, n_buckets, lambda n: reading.advance(0, n))
        host_index = {host: i for i, host in enumerate(sorted(host_rows))}
        subs = shuffle.sub_bucket_counts(host_rows, params["shuffle_rows"])
        bucket_files = sorted(str(p) for p in layout.occurrence_dir.glob("*.parquet"))
        classifying = Progress(
            "01_ingest classify", len(bucket_files), unit="buckets",
            enabled=run_cfg["progress"], interval_s=run_cfg["progress_interval_s"],
        )  # fmt: skip
        for _, rows, error in mapper.map_unordered(
            shuffle.pass2_bucket, bucket_files, str(folder), host_index, subs, derive_columns, params
        ):
            if error is not None:
                raise error
            classifying.advance(1, rows=rows)
        partitions = shuffle.plan_partitions(layout, host_index, subs, params["batch_size"])
        shuffle.write_plan(layout, {"partitions": partitions, "host_rows": host_rows})

    def plan(self, ctx: StageContext) -> list[Partition]:
        assert self._staging is not None, "prepare() runs before plan()"
        staged = shuffle.read_plan(self._staging)
        assert staged is not None
        return [
            Partition(index=i, inputs=dict(self._inputs), payload={"staging": str(self._staging), **p})
            for i, p in enumerate(staged["partitions"])
        ]

    def run_partition(self, part: Partition, ctx: StageContext) -> PartitionOutput:
        table = build_partition(Path(part.payload["staging"]), part.payload["pieces"], self.schema)
        return PartitionOutput(table=table, rows_in=part.payload["rows"])


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())



STAGE = IngestStage()
