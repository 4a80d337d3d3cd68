"""Names that stay the same across runs of ingest: a source's (kind and absolute path, with its
content digest in every partition's inputs) and a partition's (host, sub-bucket, row group).

They let ingest refuse a silent change of sources, and keep a partition's index when its rows
did not change, so downstream partitions built from it stay valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import ParameterChangeError
from pipeline.stage import StageContext

CHANGE_LABELS = ("added", "removed", "content changed")
LEGACY_PREFIX = "source-"


def source_key(kind: str, path: Path) -> str:
    """How a source is named in partition inputs: kind and absolute path."""
    return f"source:{kind}:{path}"


def source_changes(current: dict[str, str], recorded: dict[str, str]) -> dict[str, list[str]]:
    """Sources added, removed, and with changed content, by label."""
    both = set(current) & set(recorded)
    return {
        "added": sorted(set(current) - set(recorded)),
        "removed": sorted(set(recorded) - set(current)),
        "content changed": sorted(k for k in both if current[k] != recorded[k]),
    }


def _from_legacy(recorded: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    """Roots of earlier versions named sources by position ("source-0" -> "KIND:sha256"):
    match them to the current sources by kind and content."""
    by_content = {f"{k.split(':')[1]}:{v}": k for k, v in current.items()}
    return {by_content.get(value, key): current.get(by_content.get(value, ""), value)
            for key, value in recorded.items()}  # fmt: skip


def guard_sources(ctx: StageContext, current: dict[str, str], declared_added: set[str]) -> None:
    """A root built from other sources refuses like a changed output parameter, unless
    --rebuild, or --add-source naming exactly the sources that were added."""
    records = ctx.committed(ctx.stage_dir)
    recorded = {k: v for r in records.values() for k, v in r["inputs"].items()}
    if any(k.startswith(LEGACY_PREFIX) for k in recorded):
        recorded = _from_legacy(recorded, current)
    changes = source_changes(current, recorded)
    if not records or not any(changes.values()) or ctx.options.get("rebuild"):
        return
    only_added = not changes["removed"] and not changes["content changed"]
    if declared_added and only_added and set(changes["added"]) == declared_added:
        return
    listed = "; ".join(
        f"{label}: {', '.join(k.removeprefix('source:') for k in changes[label])}"
        for label in CHANGE_LABELS
        if changes[label]
    )
    raise ParameterChangeError(
        f"01_ingest: the {len(records)} committed partition(s) were built from other sources "
        f"({listed}); rerun with --rebuild to rebuild from these sources (downstream partitions "
        "built from changed partitions become stale), or use --add-source KIND:PATH to add "
        "sources to the existing ones"
    )


def partition_key(partition: dict[str, Any], subs_of_host: int) -> str:
    """Host, sub-bucket (of how many) and row group: the same rows get the same key as long as
    the host's row count keeps its number of sub-buckets."""
    return f"{partition['host']}#s{partition['sub']}/{subs_of_host}#g{partition['row_group']}"


def stable_indices(keys: list[str], committed: dict[int, dict[str, Any]]) -> list[int]:
    """Partition indices for `keys`: a key committed before keeps its index; new keys take the
    lowest free indices, in plan order (on a new root: 0, 1, 2, ...)."""
    wanted = set(keys)
    previous = {r["key"]: i for i, r in committed.items() if r.get("key") in wanted}
    used = set(previous.values())
    free = (i for i in range(len(keys) + len(used)) if i not in used)
    return [previous[k] if k in previous else next(free) for k in keys]
