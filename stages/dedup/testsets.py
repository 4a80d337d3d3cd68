"""`tolpipe testsets add|list|remove`: the registry of test sets stage 05 checks leakage against.

    tolpipe testsets add NAME (--images DIR | --parquet FILE | --webdataset URLS...)
    tolpipe testsets list
    tolpipe testsets remove NAME

`add` hashes every test image (MD5 of the file bytes; PDQ hash and quality of the decoded image,
with the [dedup] hashing settings) in worker processes and stores the set under the work root
(stages/dedup/registry.py), holding the root's run lock meanwhile. The command-line wiring is
`add_parser` (builds the subcommands) and `run_command` (runs the parsed one).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

DESCRIPTION = """\
Test sets are what the training data must not leak into: stage 05 drops every training image
whose MD5 equals a test image's (test_leak_md5) or whose PDQ hash lies within
dedup.pdq_max_distance bits of one (test_leak_pdq), and stores the closest test image of every
row. Every registered set is used unless dedup.testsets names some; adding or removing a set makes
the next `tolpipe run dedup` recompute its partitions (training hashes are cached)."""
BATCH_ROWS = 4096  # hashed rows gathered into one record batch


def add_parser(
    subparsers: Any, global_options: Callable[[argparse.ArgumentParser, bool], None]
) -> argparse.ArgumentParser:
    """The `testsets` command and its add/list/remove subcommands. `global_options(parser,
    suppress)` adds --root/--config/--set to each (pipeline.cli._global_options)."""
    top = subparsers.add_parser("testsets", help="register, list or remove the test sets stage 05 checks "
                                "leakage against", description=DESCRIPTION)  # fmt: skip
    global_options(top, True)
    actions = top.add_subparsers(dest="testsets_action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="hash a test set's images and register it",
                             description="Hash every test image (MD5 of the file bytes, PDQ hash "
                             "and quality of the decoded image) and register the set under the work "
                             "root.")  # fmt: skip
    global_options(add, True)
    add.add_argument("name", help="the set's name (letters, digits, '.', '_', '-')")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="DIR", help="a folder of image files (recursive)")
    source.add_argument("--parquet", type=Path, metavar="FILE", help="a Parquet file with an image column")
    source.add_argument("--webdataset", nargs="+", metavar="URLS",
                        help="WebDataset tar shards: paths or http(s) URLs, brace patterns allowed "
                        "(shards/test-{000..009}.tar)")  # fmt: skip
    add.add_argument("--id-column", help="--parquet: the column with test ids (default: id, key, ...; "
                     "else row-N)")  # fmt: skip
    add.add_argument("--image-column", help="--parquet: the column with image bytes (default: image, "
                     "jpeg, bytes, ..., or the first binary column)")  # fmt: skip
    listing = actions.add_parser("list", help="the registered test sets with their provenance")
    global_options(listing, True)
    remove = actions.add_parser("remove", help="unregister a test set")
    global_options(remove, True)
    remove.add_argument("name")
    return top


def _source(args: argparse.Namespace) -> tuple[str, Any, Any]:
    """(kind, the source as recorded, an iterator of (test id, bytes))."""
    from stages.dedup import sources

    if args.images is not None:
        folder = Path(args.images).resolve()
        return "images", str(folder), sources.image_folder(folder)
    if args.parquet is not None:
        path = Path(args.parquet).resolve()
        columns = getattr(args, "id_column", None), getattr(args, "image_column", None)
        items = sources.parquet_file(path, *columns)
        return "parquet", str(path), items
    patterns = [p if "://" in p else str(Path(p).resolve()) for p in args.webdataset]
    return "webdataset", patterns, sources.webdataset(patterns)


def add_command(root: Path, config: dict[str, Any], args: argparse.Namespace) -> str:
    """Hash and register a set; returns the summary to print."""
    import pyarrow.compute as pc

    from pipeline import __version__
    from pipeline.runlock import hold_root
    from stages.dedup import registry
    from stages.dedup.hashing import hash_items, worker_count
    from stages.dedup.settings import hash_settings
    from stages.dedup.sources import unique_ids

    name = registry.check_name(args.name)
    params = config["dedup"]
    settings = hash_settings(params)
    with hold_root(root, f"testsets add {name}"):
        if registry.read(root, name) is not None:
            raise ConfigError(f"test set {name!r} is already registered: "
                              f"`tolpipe testsets remove {name}` first")
        kind, source, items = _source(args)
        workers = worker_count(int(params["testset_workers"]))
        table = _hash_table(hash_items(unique_ids(items, str(source)), settings, workers))
        failed = table.filter(pc.is_valid(table["error"]))
        floor = int(params["pdq_min_quality"])
        low = int(pc.sum(pc.less(table["pdq_quality"], floor)).as_py() or 0)
        examples = zip(failed["test_id"].to_pylist()[:5], failed["error"].to_pylist()[:5], strict=True)
        meta = {
            "name": name, "kind": kind, "source": source, "images": table.num_rows,
            "failed": failed.num_rows, "failed_examples": [f"{i}: {e}" for i, e in examples],
            "low_quality": low, "added": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "digest": registry.content_digest(table), "hasher": settings.identity(),
            "tolpipe_version": __version__,
        }  # fmt: skip
        registry.write(root, name, table, meta)
    return _added_summary(meta)


def _hash_table(rows: Iterator[dict[str, Any]]) -> Any:
    """The hashed rows as one table, gathered a batch at a time (columnar, not a list of dicts)."""
    import pyarrow as pa

    from stages.dedup import registry

    batches, buffer = [], []
    for row in rows:
        buffer.append(row)
        if len(buffer) == BATCH_ROWS:
            batches.append(pa.RecordBatch.from_pylist(buffer, schema=registry.SCHEMA))
            buffer = []
    if buffer or not batches:
        batches.append(pa.RecordBatch.from_pylist(buffer, schema=registry.SCHEMA))
    return pa.Table.from_batches(batches, schema=registry.SCHEMA)


def _added_summary(meta: dict[str, Any]) -> str:
    lines = [f"test set {meta['name']!r} registered: {meta['images']} images from {meta['kind']} "
             f"{meta['source']}, digest {meta['digest'][:16]}"]  # fmt: skip
    if meta["failed"]:
        examples = "; ".join(meta["failed_examples"])
        lines.append(f"  {meta['failed']} could not be decoded (MD5 only): {examples}")
    if meta["low_quality"]:
        lines.append(f"  {meta['low_quality']} have a PDQ quality below dedup.pdq_min_quality "
                     "(not matched by PDQ)")
    lines.append("  run `tolpipe run dedup` to check the training data against it")
    return "\n".join(lines)


def list_command(root: Path, config: dict[str, Any], args: argparse.Namespace) -> str:
    from stages.dedup import registry

    sets = registry.registered(root)
    if not sets:
        text = f"no test set registered under {root} (tolpipe testsets add NAME --images DIR)"
    else:
        lines = [f"{'name':20s} {'images':>8s} {'failed':>6s} {'low q':>6s}  {'added':20s}  "
                 f"{'digest':16s}  source"]
        for found in sets:
            m = found.meta
            source = m["source"] if isinstance(m["source"], str) else " ".join(m["source"])
            lines.append(f"{found.name:20s} {m['images']:8d} {m['failed']:6d} {m['low_quality']:6d}  "
                         f"{m['added']:20s}  {found.digest[:16]:16s}  {m['kind']}:{source}")  # fmt: skip
        text = "\n".join(lines)
    partial = registry.incomplete(root)
    if partial:
        text += "\nincomplete (an interrupted add; add again or remove): " + ", ".join(partial)
    return text


def remove_command(root: Path, config: dict[str, Any], args: argparse.Namespace) -> str:
    from pipeline.runlock import hold_root
    from stages.dedup import registry

    name = registry.check_name(args.name)
    with hold_root(root, f"testsets remove {name}"):
        known = registry.read(root, name) is not None
        if not known and name not in registry.incomplete(root):
            raise ConfigError(f"no test set {name!r} under {root} (see `tolpipe testsets list`)")
        registry.remove(root, name)
    return f"test set {name!r} removed; run `tolpipe run dedup` to recompute stage 05 without it"


ACTIONS = {"add": add_command, "list": list_command, "remove": remove_command}


def run_command(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """Run the parsed `testsets` action and print its output."""
    print(ACTIONS[args.testsets_action](Path(args.root), config, args))
    return 0
