"""Stage 05 dedup: exact duplicates within the training data and train/test leakage.

- MD5 of the original bytes (02's `md5`): rows with the same MD5 keep one, the smallest uuid, the
  others are dropped `duplicate_md5` naming it. Decided across every partition in prepare() with
  a bounded-memory table (stages/dedup/md5_table.py).
- Registered test sets (`tolpipe testsets add`, stages/dedup/testsets.py): a row whose MD5 equals
  a test image's is dropped `test_leak_md5`; one whose PDQ hash is within
  `dedup.pdq_max_distance` bits of a test image's is dropped `test_leak_pdq`. The closest test
  image within `dedup.pdq_search_radius` is stored for every row PDQ looks at, found by an exact
  radius search sub-linear in the number of test hashes (faiss's multi-hash index or multi-index
  hashing on numpy), built once per run.

`tolpipe rethreshold dedup` re-applies another radius from the stored distances.
Columns and reasons: manifests/README.md (05 dedup).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.lineage import upstream_inputs
from pipeline.stage import Partition, PartitionOutput, Stage, StageContext
from stages.dedup.schema import SCHEMA
from stages.dedup.settings import DECISION_PARAMS, TRACKED_PARAMS, TUNING_PARAMS, hash_settings, validate

if TYPE_CHECKING:  # heavy modules load only when the stage runs
    from stages.dedup.bundle import BundleInfo
    from stages.dedup.md5_plan import Md5Plan
    from stages.dedup.registry import TestSet

UPSTREAMS = ("01_ingest", "02_download", "03_taxonomy", "04_filter")
IMAGE_STAGE = "02_download"
NO_TESTSETS = "no test set registered: leakage not checked (tolpipe testsets add NAME --images DIR)"


class DedupStage(Stage):
    number = "05"
    name = "dedup"
    schema = SCHEMA
    upstream = "04_filter"
    volatile_params = TUNING_PARAMS + TRACKED_PARAMS
    tuning_params = TUNING_PARAMS
    decision_params = DECISION_PARAMS

    def __init__(self) -> None:
        self._sets: list[TestSet] = []
        self._bundle: BundleInfo | None = None
        self._md5: Md5Plan | None = None

    def selected_sets(self, ctx: StageContext) -> list[TestSet]:
        """The registered test sets this run checks against (dedup.testsets, or all), checked."""
        from stages.dedup import registry

        known = {s.name: s for s in registry.registered(ctx.root)}
        names = list(ctx.params["testsets"]) or sorted(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"dedup.testsets names unregistered test set(s) {', '.join(unknown)} "
                              f"(registered: {listed}; see `tolpipe testsets list`)")  # fmt: skip
        identity = hash_settings(ctx.params).identity()
        for name in names:
            if known[name].hasher != identity:
                raise ConfigError(
                    f"test set {name!r} was hashed with {known[name].hasher}, the stage hashes with "
                    f"{identity}: remove it and add it again (`tolpipe testsets remove {name}`)"
                )
        return [known[n] for n in sorted(set(names))]

    def check(self, ctx: StageContext) -> None:
        """Settings consistent, pdqhash installed, test sets registered, known and current."""
        import importlib.util

        validate(ctx.params)
        if importlib.util.find_spec("pdqhash") is None:
            raise ConfigError("stage 05 needs pdqhash: pip install 'tolpipe[dedup]'")
        if ctx.params["search_backend"] == "faiss" and importlib.util.find_spec("faiss") is None:
            raise ConfigError("dedup.search_backend = 'faiss' needs faiss-cpu: pip install 'tolpipe[dedup]'")
        sets = self.selected_sets(ctx)
        if not sets and ctx.params["testsets_required"]:
            raise ConfigError(f"dedup.testsets_required is set but {NO_TESTSETS}")

    def prepare(self, ctx: StageContext, mapper: Any) -> None:
        """MD5 groups over every partition, and the test sets' search index (built once)."""
        from stages.dedup import bundle, md5_plan

        self._sets = self.selected_sets(ctx)
        self._md5 = md5_plan.prepare(ctx)
        self._bundle = bundle.prepare(ctx.work_dir(), self._sets, ctx.params)

    def plan(self, ctx: StageContext) -> list[Partition]:
        from importlib.metadata import version

        from stages.dedup.md5_plan import partition_digest

        if self._md5 is None:
            raise RuntimeError("plan() needs prepare() first")
        records = {stage: ctx.committed(stage) for stage in UPSTREAMS}
        testsets = {f"testset:{s.name}": s.digest for s in self._sets}
        parts = []
        for index in sorted(records[self.upstream]):
            inputs = upstream_inputs(records, index)
            inputs.update(testsets)
            inputs["md5_decisions"] = partition_digest(self._md5, index)
            inputs["pdqhash"] = version("pdqhash")
            store = next(iter(records[IMAGE_STAGE][index]["side_files"].values()))["sha256"]
            payload = {"bundle": str(self._bundle.folder) if self._bundle else None,
                       "md5": str(self._md5.folder), "store_sha256": store}  # fmt: skip
            parts.append(Partition(index=index, inputs=inputs, payload=payload))
        return parts

    def run_partition(self, part: Partition, ctx: StageContext) -> PartitionOutput:
        from stages.dedup.partition import dedup_partition

        return dedup_partition(part, ctx)

    def rethreshold_partition(
        self, part: Partition, ctx: StageContext, previous: pa.Table
    ) -> PartitionOutput:
        from stages.dedup.decide import decide

        validate(ctx.params)
        return PartitionOutput(table=decide(previous, ctx.params), rows_in=previous.num_rows)

    def run_notes(self, ctx: StageContext) -> list[str]:
        if not self._sets:
            return [NO_TESTSETS]
        sets = ", ".join(f"{s.name} ({s.meta['images']} images)" for s in self._sets)
        notes = [f"test sets: {sets}"]
        if self._bundle is not None:
            found = self._bundle
            note = f" ({found.note})" if found.note else ""
            notes.append(f"PDQ radius search: {found.backend} over {found.matchable} test hashes{note}")
        if self._md5 is not None:
            stats = self._md5.stats
            notes.append(f"MD5 table: {stats['rows']} rows in {stats['passes']} pass(es), "
                         f"{stats['duplicate_groups']} groups of copies")  # fmt: skip
        return notes


STAGE = DedupStage()
