"""Stage 04 filter: the image-quality screen of TreeOfLife-200M. Four filters score the images
of 03's ok rows and thresholds turn the scores into decisions:

- faces (facenet-pytorch MTCNN, shipped weights): images of people dropped `human_face`;
- camera-trap frames (MegaDetector v6, local weights, loaded with ultralytics): frames without
  an animal dropped `empty_frame`;
- museum specimens (an image embedder and a labelled support set of K-means centres): images
  whose nearest centre shows no organism dropped `museum_non_organism`;
- citizen-science occurrences (mean pairwise similarity of their images' embeddings, decided
  across partitions in prepare()): mixed occurrences dropped `mixed_occurrence`, large ones
  sampled down (`occurrence_downsampled`), near-identical frames screened as camera traps.

Scores and model identities are stored; `tolpipe rethreshold filter` re-applies thresholds from
them without any model. A filter without a model marks its rows `not_run` and the run says so.
Columns and reasons: manifests/README.md (04 filter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.digest import digest_json
from pipeline.joined import joined_rows
from pipeline.lineage import upstream_inputs
from pipeline.stage import Partition, PartitionOutput, Stage, StageContext
from stages.filter import occurrence_plan as occ
from stages.filter.decide import decide
from stages.filter.models import identities
from stages.filter.partition import filter_partition
from stages.filter.schema import FILTERS, SCHEMA
from stages.filter.settings import (
    DECISION_PARAMS,
    LOCATION_PARAMS,
    REQUIRED_HINTS,
    TUNING_PARAMS,
    require,
    validate,
)

UPSTREAMS = ("01_ingest", "02_download", "03_taxonomy")


class FilterStage(Stage):
    number = "04"
    name = "filter"
    schema = SCHEMA
    upstream = "03_taxonomy"
    volatile_params = TUNING_PARAMS + LOCATION_PARAMS
    tuning_params = TUNING_PARAMS
    decision_params = DECISION_PARAMS

    def __init__(self) -> None:
        self._identities: dict[str, dict[str, str] | None] = {}
        self._occurrences: Path | None = None
        self._occurrence_digests: dict[int, str] = {}

    def not_run(self) -> list[str]:
        return [name for name in FILTERS if not self._identities.get(name)]

    def check(self, ctx: StageContext) -> None:
        """Model settings valid and model files present, required filters configured."""
        validate(ctx.params)
        self._identities = identities(ctx.params)
        require(ctx.params, self.not_run())

    def run_notes(self, ctx: StageContext) -> list[str]:
        return [f"{name} filter not run (no model): {REQUIRED_HINTS[name]}" for name in self.not_run()]

    def prepare(self, ctx: StageContext, mapper: Any) -> None:
        """Occurrence decisions over every partition (see stages/filter/occurrence_plan.py)."""
        self._identities = identities(ctx.params)
        self._occurrences, self._occurrence_digests = None, {}
        embedder = self._identities["occurrence"]
        if embedder is not None:
            self._occurrences, self._occurrence_digests = occ.prepare(ctx, mapper, self.upstream, embedder)

    def plan(self, ctx: StageContext) -> list[Partition]:
        records = {stage: ctx.committed(stage) for stage in UPSTREAMS}
        models = digest_json(self._identities)
        configured = {name: self._identities.get(name) is not None for name in FILTERS}
        parts = []
        for index in sorted(records[self.upstream]):
            inputs = upstream_inputs(records, index)
            inputs["models"] = models
            inputs["occurrences"] = self._occurrence_digests.get(index, "none")
            payload = {"configured": configured, "identities": self._identities,
                       "occurrences": str(self._occurrences) if self._occurrences else None}  # fmt: skip
            parts.append(Partition(index=index, inputs=inputs, payload=payload))
        return parts

    def run_partition(self, part: Partition, ctx: StageContext) -> PartitionOutput:
        return filter_partition(part, ctx)

    def rethreshold_partition(
        self, part: Partition, ctx: StageContext, previous: pa.Table
    ) -> PartitionOutput:
        return PartitionOutput(table=decide(previous, ctx.params), rows_in=previous.num_rows)

    def build_support_set(self, config: dict[str, Any], folder: Path, output: Path) -> str:
        """`tolpipe filter build-support-set FOLDER`: embed labelled examples, K-means per label;
        returns a summary to print."""
        from stages.filter.models import load_embedder
        from stages.filter.museum import build_and_save, format_summary
        from stages.filter.settings import resolve_device

        params = config["filter"]
        embedder = load_embedder(params, resolve_device(params["device"]))
        return format_summary(build_and_save(embedder, folder, output, int(params["support_set_k"]), 0))


def rows_of(ctx: StageContext, index: int) -> pa.Table:
    """The 03-ok rows partition `index` of this stage is built from (for tests and audits)."""
    return joined_rows(ctx.root, index, occ.ROW_COLUMNS)


STAGE = FilterStage()
