"""Stage 03 taxonomy: resolve every row's verbatim taxonomy to 7 ranks plus a common name.

The work unit is the unique verbatim name tuple (kingdom ... species, scientific name) of the
02 ok rows. plan() (in the driver) collects the tuples of every partition still to build and
resolves those not decided yet, through an on-disk cache, with a resolver chosen in config
(`gnverifier`: the GNVerifier HTTP API; `backbone`: a local GBIF backbone dump). Each
run_partition then only joins the cached decisions back onto its rows. Names whose resolver
batch failed give `failed` rows (reason `resolver_error`), retried with
`tolpipe retry taxonomy --reason resolver_error`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.digest import digest_json
from pipeline.errors import InputError
from pipeline.ledger import ManifestStore
from pipeline.stage import Partition, PartitionOutput, Stage, StageContext
from stages.taxonomy.cache import AnswerCache
from stages.taxonomy.engine import RESOLVER_ERROR
from stages.taxonomy.factory import cache_path, open_engine
from stages.taxonomy.names import INPUT_FIELDS, NameTuple, invalid_token_set
from stages.taxonomy.table import (
    DOWNLOAD_DIR,
    INGEST_DIR,
    INPUT_COLUMNS,
    SCHEMA,
    build_table,
    read_upstream,
    tuples_from_inputs,
    tuples_of,
)


class TaxonomyStage(Stage):
    number = "03"
    name = "taxonomy"
    schema = SCHEMA
    upstream = DOWNLOAD_DIR
    # Speed and location settings; the dump and the service are tracked by identity in
    # every partition's inputs instead of by path/URL.
    volatile_params = (
        "backbone_path", "index_dir", "gnverifier_url", "batch_size", "timeout_s",
        "max_attempts", "backoff_s", "backoff_max_s", "concurrency",
    )  # fmt: skip
    # Speed settings apply to one run unless --save; the locations stay with the root.
    tuning_params = ("batch_size", "timeout_s", "max_attempts", "backoff_s", "backoff_max_s", "concurrency")
    retryable_reasons = (RESOLVER_ERROR,)

    def _upstream_indices(self, ctx: StageContext) -> list[tuple[int, str, str]]:
        downloads = ctx.committed(DOWNLOAD_DIR)
        ingests = ctx.committed(INGEST_DIR)
        if not downloads:
            raise InputError(ctx.root / "manifests" / DOWNLOAD_DIR,
                             "no committed partitions: run the download stage first")  # fmt: skip
        out = []
        for index in sorted(downloads):
            if index not in ingests:
                raise InputError(ctx.manifest_path(INGEST_DIR, index),
                                 f"missing, but {DOWNLOAD_DIR} part {index} is committed")  # fmt: skip
            out.append((index, ingests[index]["sha256"], downloads[index]["sha256"]))
        return out

    def _read(self, ctx: StageContext, index: int) -> pa.Table:
        return read_upstream(ctx.manifest_path(INGEST_DIR, index),
                             ctx.manifest_path(DOWNLOAD_DIR, index))  # fmt: skip

    def plan(self, ctx: StageContext) -> list[Partition]:
        output_params = self.output_params(ctx.params)
        invalid = invalid_token_set(ctx.params["invalid_tokens"])
        with open_engine(ctx, output_params) as engine:
            common = engine.common_names.identity() if engine.common_names else None
            shared = {"resolver": engine.resolver_digest, "common_names": digest_json(common)}
            parts = [
                Partition(
                    index=i,
                    inputs={f"{INGEST_DIR}/part-{i:05d}": ingest_sha,
                            f"{DOWNLOAD_DIR}/part-{i:05d}": download_sha, **shared},
                    payload={"decisions": engine.params_digest},
                )  # fmt: skip
                for i, ingest_sha, download_sha in self._upstream_indices(ctx)
            ]
            store = ManifestStore(ctx.root, self.dir)
            digest = digest_json(output_params)
            verify = bool(ctx.config.get("run", {}).get("verify_sha256", True))  # as the runner
            todo = [p for p in parts if not store.is_done(p.index, p.inputs, digest, verify)]
            tuples: set[NameTuple] = set()
            for part in todo:
                tuples.update(tuples_of(self._read(ctx, part.index), invalid))
            if tuples:
                engine.resolve_pending(tuples)
        return parts

    def run_partition(self, part: Partition, ctx: StageContext) -> PartitionOutput:
        upstream = self._read(ctx, part.index)
        tuples = tuples_of(upstream, invalid_token_set(ctx.params["invalid_tokens"]))
        cache = AnswerCache(cache_path(ctx))
        try:
            decisions = cache.get_decisions(part.payload["decisions"], [t.key for t in tuples])
        finally:
            cache.close()
        inputs = {f: upstream[f].to_pylist() for f in INPUT_FIELDS}
        table = build_table(upstream["uuid"].to_pylist(), inputs, tuples, decisions)
        return PartitionOutput(table=table, rows_in=upstream.num_rows)

    def retry_partition(
        self, part: Partition, ctx: StageContext, previous: pa.Table, reasons: set[str]
    ) -> PartitionOutput:
        invalid = invalid_token_set(ctx.params["invalid_tokens"])
        tuples = tuples_from_inputs(previous, invalid)
        wanted = pc.and_(pc.equal(previous["status"], "failed"),
                         pc.is_in(previous["reason"], pa.array(sorted(reasons))))  # fmt: skip
        again = {t for t, w in zip(tuples, wanted.to_pylist(), strict=True) if w}
        with open_engine(ctx, self.output_params(ctx.params)) as engine:
            if engine.params_digest != part.payload["decisions"]:
                raise RuntimeError("taxonomy parameters changed between plan and retry")
            engine.resolve_pending(again, retry_failed=True)
            decisions = engine.cache.get_decisions(engine.params_digest, [t.key for t in tuples])
        inputs = {f: previous[c].to_pylist() for f, c in zip(INPUT_FIELDS, INPUT_COLUMNS, strict=True)}
        table = build_table(previous["uuid"].to_pylist(), inputs, tuples, decisions)
        return PartitionOutput(table=table, rows_in=previous.num_rows)


STAGE = TaxonomyStage()
