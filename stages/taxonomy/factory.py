"""Build the stage's parts (resolver, common names, cache, engine) from its config section."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.stage import StageContext
from stages.taxonomy.backbone import BackboneIndex, BackboneResolver, MatchOptions
from stages.taxonomy.cache import AnswerCache
from stages.taxonomy.engine import Engine, Settings
from stages.taxonomy.gnverifier import GNVerifierResolver
from stages.taxonomy.index import ensure_index
from stages.taxonomy.profiles import Profiles
from stages.taxonomy.resolver import Resolver
from stages.taxonomy.vernacular import CommonNames

RESOLVERS = ("backbone", "gnverifier")
# Fewest name tuples the engine resolves together (see engine.Settings.chunk_size).
MIN_CHUNK = 20_000
# Index build progress: a line every this many rows.
INDEX_PROGRESS_ROWS = 1_000_000


def cache_path(ctx: StageContext) -> Path:
    return ctx.work_dir() / "cache.sqlite"


def index_path(ctx: StageContext) -> Path | None:
    """The backbone dump's index (built on first use), or None without a dump."""
    params = ctx.params
    if not params["backbone_path"]:
        return None
    folder = Path(params["index_dir"]).expanduser() if params["index_dir"] else ctx.work_dir("index")
    enabled = ctx.config.get("run", {}).get("progress", True)

    def report(rows: int) -> None:
        if enabled and rows % INDEX_PROGRESS_ROWS < 20_000:
            print(f"[03_taxonomy] indexing backbone: {rows:,} rows", file=sys.stderr, flush=True)

    return ensure_index(params["backbone_path"], folder, report)


def settings(ctx: StageContext) -> Settings:
    params = ctx.params
    run_cfg = ctx.config.get("run", {})
    return Settings(
        query_order=tuple(params["query_order"]),
        parser=params["name_parser"],
        capitalize=params["capitalize"],
        kingdom_synonyms=dict(params["kingdom_synonyms"]),
        min_lineage_agreement=int(params["min_lineage_agreement"]),
        progress=bool(run_cfg.get("progress", True)),
        progress_interval_s=float(run_cfg.get("progress_interval_s", 10.0)),
        # Enough tuples per chunk to keep `concurrency` full batches in flight.
        chunk_size=max(MIN_CHUNK, 2 * int(params["batch_size"]) * int(params["concurrency"])),
    )


def make_resolver(params: Mapping[str, Any], index: Path | None) -> Resolver:
    kind = params["resolver"]
    if kind not in RESOLVERS:
        raise ConfigError(f"taxonomy.resolver must be one of {RESOLVERS}, got {kind!r}")
    if kind == "backbone":
        if index is None:
            raise ConfigError("taxonomy.resolver = 'backbone' needs taxonomy.backbone_path (a GBIF "
                              "backbone.zip or a folder with Taxon.tsv: the GBIF Backbone Taxonomy "
                              "dump, see docs/taxonomy-data.md for where to get it)")  # fmt: skip
        options = MatchOptions(params["uninomial_fuzzy"], int(params["max_edit_distance"]))
        return BackboneResolver(index, int(params["backbone_source_id"]), params["name_parser"],
                                params["capitalize"], options, int(params["batch_size"]))  # fmt: skip
    if not params["sources"]:
        raise ConfigError("taxonomy.sources: at least one GNVerifier data source id is needed")
    return GNVerifierResolver(
        url=params["gnverifier_url"], sources=params["sources"],
        batch_size=int(params["batch_size"]), timeout_s=float(params["timeout_s"]),
        max_attempts=int(params["max_attempts"]), backoff_s=float(params["backoff_s"]),
        backoff_max_s=float(params["backoff_max_s"]), concurrency=int(params["concurrency"]),
        capitalize=params["capitalize"], uninomial_fuzzy=params["uninomial_fuzzy"],
    )  # fmt: skip


@contextmanager
def open_engine(ctx: StageContext, output_params: Mapping[str, Any]) -> Iterator[Engine]:
    params = ctx.params
    index = index_path(ctx)
    with ExitStack() as stack:
        resolver = make_resolver(params, index)
        stack.callback(resolver.close)
        common = None
        if params["common_names"]:
            if index is None:
                raise ConfigError("taxonomy.common_names needs taxonomy.backbone_path (its "
                                  "VernacularName.tsv), or set taxonomy.common_names = false")  # fmt: skip
            backbone = BackboneIndex(index)
            stack.callback(backbone.close)
            common = CommonNames(backbone, int(params["backbone_source_id"]),
                                 params["common_name_languages"], params["common_name_climb"],
                                 params["common_name_climb_to"])  # fmt: skip
        cache = AnswerCache(cache_path(ctx))
        stack.callback(cache.close)
        profiles = Profiles(params["profiles"], params["require_kingdom_agreement"])
        yield Engine(resolver, cache, profiles, settings(ctx), common, output_params)
