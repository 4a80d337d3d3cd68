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
from stages.ingest.assemble import finish_sub_bucket, read_partition
from stages.ingest.identity import guard_sources, partition_key, source_key, stable_indices
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
        source = (kind, Path(path).expanduser().resolve())
        if source in sources:
            raise ConfigError(f"source {value!r} is given twice")
        sources.append(source)
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
    tuning_params = ("chunk_rows", "occurrence_bucket_mb", "dwca_join_memory_mb")

    def __init__(self) -> None:
        self._staging: Path | None = None
        self._sources: list[tuple[str, Path]] = []
        self._inputs: dict[str, str] = {}

    def check(self, ctx: StageContext) -> None:
        """Sources readable, and the same as the committed partitions were built from."""
        sources = parse_sources(ctx.params["sources"])
        for kind, path in sources:
            validate_source(kind, path)
        self._sources = sources
        self._inputs = {source_key(k, p): source_digest(p) for k, p in sources}
        added = ctx.options.get("added_sources") or []
        declared = {source_key(k, p) for k, p in parse_sources(added)} if added else set()
        guard_sources(ctx, self._inputs, declared)

    def prepare(self, ctx: StageContext, mapper: Any) -> None:
        sources = self._sources
        key = digest_json({"inputs": self._inputs, "params": self.output_params(ctx.params),
                           "layout": shuffle.LAYOUT_VERSION})[:16]  # fmt: skip
        folder = ctx.work_dir() / f"staging-{key}"
        self._staging = folder
        if (folder / shuffle.PLAN_FILE).exists():
            shuffle.drop_intermediates(shuffle.StagingLayout(folder))  # if a kill came between
            return
        for old in ctx.work_dir().glob("staging-*"):
            if old != folder:
                shuffle.clear(old)
        self._build_staging(ctx, sources, shuffle.StagingLayout(folder), mapper)

    def _build_staging(
        self, ctx: StageContext, sources: list[tuple[str, Path]], layout: shuffle.StagingLayout, mapper: Any
    ) -> None:
        params = ctx.params
        host_rows = self._pass1(ctx, sources, layout)
        hosts = sorted(host_rows)
        subs = [shuffle.sub_bucket_counts(host_rows, params["shuffle_rows"])[h] for h in hosts]
        buckets = sorted(str(p) for p in layout.occurrence_dir.glob("bucket-*.parquet"))
        self._map(ctx, mapper, "classify", shuffle.pass2_bucket, buckets,
                  str(layout.folder), hosts, subs, derive_columns, params)  # fmt: skip
        splits = [str(layout.split_file(Path(b).stem)) for b in buckets]
        keys = shuffle.sub_bucket_keys(splits)
        self._map(ctx, mapper, "dedup", shuffle.pass3_sub_bucket, keys,
                  str(layout.folder), splits, finish_sub_bucket, params["batch_size"])  # fmt: skip
        partitions = shuffle.plan_partitions(layout, hosts, keys)
        plan = {"partitions": partitions, "host_rows": host_rows}
        shuffle.mark_done(layout.folder / shuffle.PLAN_FILE, plan)
        shuffle.drop_intermediates(layout)

    def _pass1(
        self, ctx: StageContext, sources: list[tuple[str, Path]], layout: shuffle.StagingLayout
    ) -> dict[str, int]:
        marker = layout.done_marker("pass1")
        done = shuffle.read_marker(marker)
        if done is not None:
            return done
        shuffle.clear(layout.folder)
        params = ctx.params
        total_bytes = sum(_size(p) for _, p in sources)
        n_buckets = shuffle.occurrence_bucket_count(total_bytes, params["occurrence_bucket_mb"])
        reading = _progress(ctx, "read", len(sources), "sources")
        join_memory = params["dwca_join_memory_mb"] << 20

        def batches(join_dir: Path):
            for index, (kind, path) in enumerate(sources):
                chunks = iter_source(
                    kind, path, params["chunk_rows"],
                    join_memory_bytes=join_memory, temp_dir=join_dir,
                )  # fmt: skip
                yield from ((index, b) for b in chunks)
                reading.advance(1)

        with ctx.scratch_dir("dwca-join") as join_dir:
            host_rows = shuffle.pass1(batches(join_dir), layout, n_buckets, lambda n: reading.advance(0, n))
        shuffle.mark_done(marker, host_rows)
        return host_rows

    @staticmethod
    def _map(ctx: StageContext, mapper: Any, label: str, fn: Any, items: list, *args: Any) -> None:
        progress = _progress(ctx, label, len(items), "buckets")
        for _, rows, error in mapper.map_unordered(fn, items, *args):
            if error is not None:
                raise error
            progress.advance(1, rows=rows)

    def plan(self, ctx: StageContext) -> list[Partition]:
        assert self._staging is not None, "prepare() runs before plan()"
        staged = shuffle.read_marker(self._staging / shuffle.PLAN_FILE)
        subs = shuffle.sub_bucket_counts(staged["host_rows"], ctx.params["shuffle_rows"])
        keys = [partition_key(p, subs[p["host"]]) for p in staged["partitions"]]
        indices = stable_indices(keys, ctx.committed(self.dir))
        return [
            Partition(index=index, inputs=dict(self._inputs), key=key,
                      payload={"staging": str(self._staging), **p})  # fmt: skip
            for index, key, p in zip(indices, keys, staged["partitions"], strict=True)
        ]

    def run_partition(self, part: Partition, ctx: StageContext) -> PartitionOutput:
        payload = part.payload
        table = read_partition(Path(payload["staging"]), payload["file"], payload["row_group"], self.schema)
        return PartitionOutput(table=table, rows_in=payload["rows"])


def _progress(ctx: StageContext, label: str, total: int, unit: str) -> Progress:
    run_cfg = ctx.config["run"]
    return Progress(
        f"01_ingest {label}", total, unit=unit,
        enabled=run_cfg["progress"], interval_s=run_cfg["progress_interval_s"],
    )  # fmt: skip


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())



STAGE = IngestStage()
