"""Stage 01 ingest: provider exports -> one manifest row per image, partitioned by URL host.

Sources (`--source KIND:PATH` or `ingest.sources`): `gbif` (Darwin Core Archive), `eol` (EOL
media manifest CSV, named through EOL's taxon file), `table` (CSV/Parquet with a `url` column),
`bioscan` (BIOSCAN-5M metadata CSV + image zip), `fathomnet` (COCO export), `folder` (CSV of
labels of images under its folder). Rows are classified (image type,
collection area) and dropped with reasons (bad URL, not a still image, material citation, camera
trap occurrence with too many images, duplicate URL). See manifests/README.md for the columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.digest import digest_json, sha256_file
from pipeline.errors import ConfigError, InputError
from pipeline.ledger import stage_schema
from pipeline.local_images import root_identity
from pipeline.progress import Progress
from pipeline.stage import Partition, PartitionOutput, Stage, StageContext
from stages.ingest import shuffle
from stages.ingest.assemble import finish_sub_bucket, read_partition
from stages.ingest.eol_taxa import EolTaxa
from stages.ingest.identity import guard_sources, partition_key, source_key, stable_indices
from stages.ingest.options import ProviderOptions
from stages.ingest.rules import classify, sample_uuids
from stages.ingest.sources import SOURCE_KINDS, SourceSummary, iter_source, validate_source

_TEXT = [
    "url", "host", "provider", "source_kind", "source_file", "source_id", "occurrence_id",
    "scientific_name", "kingdom", "phylum", "class", "order", "family", "genus", "species",
    "common_name", "license", "rights_holder", "basis_of_record", "publisher", "event_remarks",
    "media_type", "media_format", "image_type", "collection_area", "split", "local_root",
    "local_member",
]  # fmt: skip
# Columns that name a row's taxon: an ok row with all of them empty reaches 03 without a name.
NAME_COLUMNS = ("scientific_name", "kingdom", "phylum", "class", "order", "family", "genus", "species")
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


def eol_taxa_file(path: Path, options: ProviderOptions) -> Path | None:
    taxa = options.eol_taxa_path(path)
    return taxa if taxa.is_file() else None


def check_named(kind: str, path: Path, summary: SourceSummary, options: ProviderOptions) -> None:
    """An EOL manifest has page ids, not names: without its taxon file (and without name columns
    of its own) it is refused unless `ingest.allow_unnamed`."""
    if kind != "eol" or options.allow_unnamed or eol_taxa_file(path, options) is not None:
        return
    if "scientific_name" in summary.columns:
        return
    raise InputError(
        path,
        f"no EOL taxon file ({options.eol_taxa_path(path)}): an EOL media manifest has page ids, "
        "not names; put EOL's Dynamic Hierarchy taxon.tab there (or set ingest.eol_taxon_file), "
        "or pass --allow-unnamed (ingest.allow_unnamed = true) to ingest its rows without names",
    )


def source_inputs(kind: str, path: Path, options: ProviderOptions) -> str:
    """A source's content digest, with the files it brings along: an eol source's taxon file, a
    bioscan source's image archive or folder (`pipeline.local_images.root_identity`)."""
    digest = source_digest(path)
    if kind == "eol":
        taxa = eol_taxa_file(path, options)
        return digest_json([digest, sha256_file(taxa)]) if taxa else digest
    if kind == "bioscan":
        return digest_json([digest, root_identity(options.bioscan_root(path))])
    return digest


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
    # The EOL taxon file and the BIOSCAN-5M images are tracked by digest too; allow_unnamed only
    # permits a run.
    volatile_params = ("sources", "chunk_rows", "occurrence_bucket_mb", "dwca_join_memory_mb",
                       "eol_taxon_file", "bioscan_images", "allow_unnamed")  # fmt: skip
    tuning_params = ("chunk_rows", "occurrence_bucket_mb", "dwca_join_memory_mb")

    def __init__(self) -> None:
        self._staging: Path | None = None
        self._sources: list[tuple[str, Path]] = []
        self._inputs: dict[str, str] = {}
        self._eol_taxa: dict[Path, EolTaxa] = {}

    def check(self, ctx: StageContext) -> None:
        """Sources readable, and the same as the committed partitions were built from."""
        sources = parse_sources(ctx.params["sources"])
        options = ProviderOptions.from_params(ctx.params)
        self._eol_taxa = {}
        for kind, path in sources:
            check_named(kind, path, validate_source(kind, path, options=options), options)
            taxa = eol_taxa_file(path, options) if kind == "eol" else None
            if taxa is not None:  # read (and checked) here, before anything is written
                self._eol_taxa[path] = EolTaxa(taxa)
        self._sources = sources
        self._inputs = {source_key(k, p): source_inputs(k, p, options) for k, p in sources}
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
        options = ProviderOptions.from_params(params)

        def batches(join_dir: Path):
            for index, (kind, path) in enumerate(sources):
                chunks = iter_source(
                    kind, path, params["chunk_rows"],
                    join_memory_bytes=join_memory, temp_dir=join_dir, options=options,
                    eol_taxa=self._eol_taxa.get(path),
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


    def run_notes(self, ctx: StageContext) -> list[str]:
        """A warning when ok rows carry no name at all (EOL without its taxon file)."""
        unnamed = unnamed_rows(ctx, self.dir)
        if not unnamed:
            return []
        return [f"warning: {unnamed:,} ok row(s) carry no name (EOL manifest without its taxon file, "
                "ingest.allow_unnamed): 03 keeps them as empty_input; add the EOL taxon file and "
                "rerun ingest with --rebuild to name them"]  # fmt: skip


def unnamed_rows(ctx: StageContext, stage_dir: str) -> int:
    """ok rows of the committed partitions whose name columns are all empty."""
    count = 0
    for index in sorted(ctx.committed(stage_dir)):
        table = ctx.read_manifest(stage_dir, index, columns=["status", *NAME_COLUMNS])
        empty = pc.equal(table["status"], "ok")
        for name in NAME_COLUMNS:
            empty = pc.and_(empty, pc.is_null(table[name]))
        count += pc.sum(empty.cast(pa.int64())).as_py() or 0
    return count


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
