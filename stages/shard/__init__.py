"""Stage 06 shard: the rows every earlier stage kept, as deterministic WebDataset tars that
open_clip and webdataset load as they are.

- Shards `shards/shard-NNNNN.tar` (and `val-NNNNN.tar` when a validation fraction is held out),
  about `shard.samples_per_shard` samples each; a sample (`__key__` = uuid) has its JPEG, the ten
  caption and name files of BioCLIP's trainer, `txt` (one caption again, for open_clip's loader)
  and `json` (its attribution).
- One seeded shuffle over the whole dataset: each row's shard and place come from a keyed hash of
  its uuid, and each shard gathers its rows from every upstream partition through a staging of
  files per group of partitions (bounded memory whatever the size; see plan.py, staging.py).
- The work partitions are the shards (index = shard number; validation shards follow the
  training shards); each tar is committed with its manifest partition through the ledger.
- `shards/sizes.json` and `shards/README.txt` once every shard is committed; `tolpipe verify
  shards` (verify.py) re-reads every tar against the manifests.

Every upstream ok row is in exactly one shard or in the manifest with a reason.
Columns and reasons: manifests/README.md (06 shard).
"""

from __future__ import annotations

from typing import Any

from pipeline.digest import digest_json
from pipeline.ledger import ManifestStore
from pipeline.stage import Partition, PartitionOutput, Stage, StageContext
from stages.shard import publish
from stages.shard.partition import SHARDS_DIR, shard_partition
from stages.shard.plan import ShardPlan, make_plan
from stages.shard.schema import SCHEMA
from stages.shard.settings import TUNING_PARAMS, shard_settings
from stages.shard.staging import remove_other_stagings

# The stage whose ok rows become samples: 05 dedup, the last stage that drops rows (one constant:
# the stage reads 01 .. UPSTREAM through pipeline.joined, whatever it is).
UPSTREAM = "05_dedup"


class ShardStage(Stage):
    number = "06"
    name = "shard"
    schema = SCHEMA
    upstream = UPSTREAM
    volatile_params = TUNING_PARAMS
    tuning_params = TUNING_PARAMS
    side_dirs = (SHARDS_DIR,)

    def __init__(self) -> None:
        self._plan: ShardPlan | None = None

    def check(self, ctx: StageContext) -> None:
        shard_settings(ctx.params)

    def prepare(self, ctx: StageContext, mapper: Any) -> None:
        """Keys, layout, each shard's rows digest, and the staging of the shards to build."""
        self._plan = make_plan(ctx, mapper, UPSTREAM, self.output_params(ctx.params))
        if self._plan.todo:
            publish.withdraw(ctx.root)

    def plan(self, ctx: StageContext) -> list[Partition]:
        if self._plan is None:
            raise RuntimeError("stage 06: plan() before prepare()")
        return self._plan.partitions

    def run_partition(self, part: Partition, ctx: StageContext) -> PartitionOutput:
        return shard_partition(part, ctx)

    def run_notes(self, ctx: StageContext) -> list[str]:
        """The runner's end-of-run call: once every shard is committed, publish sizes.json and
        README.txt and remove the staging; say what the shards hold or what is missing."""
        plan = self._plan
        if plan is None:
            return []
        store = ManifestStore(ctx.root, ctx.stage_dir)
        digest, verify = digest_json(self.output_params(ctx.params)), ctx.config["run"]["verify_sha256"]
        missing = [p.index for p in plan.partitions if not store.is_done(p.index, p.inputs, digest, verify)]
        if missing:
            return [f"{len(missing)} of {len(plan.partitions)} shards not committed yet: shards/"
                    f"{publish.SIZES} is written once all are (rerun `tolpipe run shard`)"]  # fmt: skip
        sizes = publish.sizes_of(store.committed_records(), plan.layout)
        publish.publish(ctx.root, plan.layout, sizes, shard_settings(ctx.params))
        remove_other_stagings(ctx.work_dir(), None)
        samples = sum(sizes.values())
        return [f"{plan.layout.train} training and {plan.layout.val} validation shards, {samples} samples: "
                f"shards/{publish.SIZES} and shards/{publish.README} written"]  # fmt: skip

    def verify(self, root: Any, config: dict[str, Any]) -> list[str]:
        """`tolpipe verify shards`: problems found re-reading every shard (empty: all good)."""
        from stages.shard.verify import verify

        return verify(root, config)


STAGE = ShardStage()
