"""The `tolpipe` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.errors import ConfigError, TolpipeError

# Commands that live beside the code they drive: command name -> module. Each module exposes
# add_parser(subparsers, global_options) and run_command(args, config) -> exit code, and keeps
# heavy imports (torch, open_clip) inside functions so `tolpipe --help` stays fast.
PLUGIN_COMMANDS: dict[str, str] = {
    "testsets": "stages.dedup.testsets",
    "report": "pipeline.report",
    "eval": "training.evaluate",
    "synth": "training.synth",
    "predict": "training.predict",
    "slurm": "pipeline.slurm_cli",
}

DESCRIPTION = """\
Turn biodiversity image archives into ML-ready training data, one numbered stage at a time
(01 ingest, 02 download, 03 taxonomy, 04 filter, 05 dedup, 06 shard, 07 train). Every stage
writes Parquet manifests under the work root; rerunning a command resumes where it stopped."""

EPILOG = """\
examples:
  tolpipe --root /scratch/tol run ingest --source gbif:export.zip --source table:urls.csv
  tolpipe --root /scratch/tol run all
  tolpipe --root /scratch/tol --set download.max_attempts=8 retry download --reason http_429
  tolpipe --root /scratch/tol status
  tolpipe --root /scratch/tol show download --reason http_404 --limit 50
  tolpipe --root /scratch/tol testsets add heldout --images /data/test_images
  tolpipe --root /scratch/tol audit 5f0c...-uuid
  tolpipe config --defaults      # every setting, documented"""


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--root", type=Path,
        default=argparse.SUPPRESS if suppress else Path(os.environ.get("TOLPIPE_ROOT", ".")),
        help="work root: manifests, image store, shards, frozen config (default: $TOLPIPE_ROOT or .)",
    )  # fmt: skip
    parser.add_argument("--config", type=Path, default=default, help="a TOML config file")
    # After the command, --set lands in its own list (argparse would otherwise replace the list
    # given before the command); main() joins the two.
    parser.add_argument(
        "--set", dest="overrides_after" if suppress else "overrides", action="append",
        metavar="SECTION.KEY=VALUE", default=[],
        help="override one setting (repeatable), e.g. --set ingest.batch_size=5000",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tolpipe", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"tolpipe {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, suppress=True)
        return p

    run = command("run", "run or resume a stage (or all implemented stages in order)")
    run.add_argument("stage", help="01..07, a name (ingest, download, ...) or 'all'")
    run.add_argument(
        "--rebuild", action="store_true",
        help="recompute partitions committed with other parameters instead of refusing",
    )  # fmt: skip
    run.add_argument(
        "--source", action="append", default=[], metavar="KIND:PATH",
        help="ingest only: a source (gbif:DwC-A zip or folder; eol:media manifest CSV, named "
        "through EOL's taxon.tab beside it; table:CSV/Parquet; bioscan:BIOSCAN-5M metadata CSV, "
        "images from the zip beside it; fathomnet:COCO export JSON; folder:CSV of labels, images "
        "under its folder); repeatable; replaces ingest.sources. A root built from other sources "
        "refuses (naming them) unless --rebuild",
    )  # fmt: skip
    run.add_argument(
        "--allow-unnamed", action="store_true",
        help="ingest only: accept EOL manifests without a taxon file (rows carry no name; "
        "`tolpipe status` warns); same as --set ingest.allow_unnamed=true",
    )  # fmt: skip
    run.add_argument(
        "--add-source", action="append", default=[], metavar="KIND:PATH",
        help="ingest only: add a source to those the root was built from; downstream stages "
        "then recompute only the partitions the added rows change",
    )  # fmt: skip
    run.add_argument(
        "--partitions", metavar="RANGES", type=parse_partitions,
        help="compute only these partition indices, e.g. 0-99,150 (the others are left as they "
        "are): one task of a Slurm job array each",
    )  # fmt: skip
    run.add_argument(
        "--save", action="store_true",
        help="also freeze this run's tuning settings (speed, concurrency, politeness, [run], "
        "[cluster]) into the root's tolpipe.toml; without it they apply to this run alone",
    )  # fmt: skip

    retry = command("retry", "re-attempt failed rows of a stage by reason class")
    retry.formatter_class = argparse.RawDescriptionHelpFormatter
    retry.epilog = _retry_epilog()
    retry.add_argument("stage", help="the stage, e.g. download")
    retry.add_argument(
        "--reason", required=True, help="comma-separated reason codes, e.g. http_429,timeout"
    )

    rethreshold = command(
        "rethreshold", "re-derive a stage's decisions from its stored scores with new thresholds "
        "(no model is loaded), e.g. tolpipe --set filter.face_threshold=0.99 rethreshold filter",
    )  # fmt: skip
    rethreshold.add_argument("stage", help="the stage, e.g. filter")

    stage_tools = command("filter", "stage 04's tools (build-support-set)")
    tools = stage_tools.add_subparsers(dest="tool", metavar="TOOL", required=True)
    support = tools.add_parser(
        "build-support-set", help="embed labelled example images and save K-means centres per label",
        description="Embed the images under FOLDER/<collection area>/<label>/ (labels directly under "
        "FOLDER apply to every area) with the configured embedder (filter.embedder, "
        "filter.embedder_weights), cluster each label with K-means (filter.support_set_k centres), "
        "and save the L2-normalised centres with the embedder's identity. Point filter.support_set "
        "at the output.",
    )  # fmt: skip
    _global_options(support, suppress=True)
    support.add_argument("folder", type=Path, help="labelled example images")
    support.add_argument("--output", type=Path, required=True, help="the support set file to write (.npz)")

    verify = command("verify", "re-read a stage's outputs and check them against the manifests")
    verify.add_argument("what", choices=["shards"], help="shards: counts, keys, captions, image MD5s")

    for module in PLUGIN_COMMANDS.values():
        importlib.import_module(module).add_parser(sub, _global_options)

    command("status", "per stage: partitions done/planned/stale, rows by status and reason")
    show = command("show", "list or export a stage's rows by reason or status (default: dropped and failed)")
    show.add_argument("stage", help="01..07 or a name (ingest, download, ...)")
    show.add_argument("--reason", action="append", metavar="R[,R]",
                      help="reason codes, e.g. duplicate_url or dropped:duplicate_url")  # fmt: skip
    show.add_argument("--status", choices=["ok", "dropped", "failed", "all"])
    show.add_argument("--limit", type=int,
                      help="rows at most (default 20 for the table, all for exports; 0: all)")  # fmt: skip
    show.add_argument("--format", dest="fmt", choices=["table", "csv", "json", "parquet"], default="table",
                      help="table (terminal), csv, json (JSON lines) or parquet (every column)")  # fmt: skip
    show.add_argument("--output", type=Path, help="file for csv/json/parquet (required for parquet)")
    audit = command("audit", "one sample's whole life: every stage's row, decision and provenance")
    audit.add_argument("uuid", help="the sample's uuid (from any manifest)")
    audit.add_argument("--json", action="store_true", help="one JSON object: every stage's row, provenance")
    config = command("config", "print the effective config (TOML)")
    config.add_argument("--defaults", action="store_true", help="print the documented defaults")
    return parser


def parse_partitions(text: str) -> set[int]:
    """'0-99,150' -> {0, ..., 99, 150}."""
    indices: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last) if sep else int(first)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected ranges like 0-99,150") from None
        if low < 0 or high < low:
            raise argparse.ArgumentTypeError(f"{part!r}: expected LOW-HIGH with 0 <= LOW <= HIGH")
        indices.update(range(low, high + 1))
    return indices


def _retry_epilog() -> str:
    from pipeline.summary import retryable_help

    return retryable_help()


def _load(args: argparse.Namespace) -> dict:
    from pipeline.config import load_config

    return load_config(args.root, args.config, args.overrides)


def _sources_overrides(args: argparse.Namespace) -> list[str]:
    """--source replaces ingest.sources; --add-source appends to the root's (absolute paths)."""
    from pipeline.config import absolutize, frozen_base

    if args.source and args.add_source:
        raise ConfigError("use either --source (the full list) or --add-source (additions)")
    chosen = args.source or args.add_source
    if not chosen:
        return []
    added = absolutize({"ingest": {"sources": list(chosen)}}, Path.cwd())["ingest"]["sources"]
    args.added_sources = added if args.add_source else []
    if args.add_source:
        existing = frozen_base(args.root)["ingest"]["sources"]
        added = [*existing, *(a for a in added if a not in existing)]
    return ["ingest.sources=" + _toml_list(added)]


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.config import describe_settings, load_layers
    from pipeline.runlock import hold_root
    from pipeline.runner import run_stage
    from pipeline.summary import format_run_summary
    from stages import available_stages, resolve_stage_dir

    args.added_sources = []
    args.overrides = [*args.overrides, *_sources_overrides(args)]
    if args.allow_unnamed:
        args.overrides.append("ingest.allow_unnamed=true")
    config, origins = load_layers(args.root, args.config, args.overrides)
    stage_dirs = available_stages() if args.stage == "all" else [resolve_stage_dir(args.stage)]
    if (args.source or args.add_source) and "01_ingest" not in stage_dirs:
        raise ConfigError("--source and --add-source apply to the ingest stage only")
    if args.partitions is not None and len(stage_dirs) != 1:
        raise ConfigError("--partitions applies to one stage at a time, not `run all`")
    lines = describe_settings(config, origins)
    print("settings that differ from the defaults:" if lines else "settings: all defaults")
    for line in lines:
        print(f"  {line}")
    options = {"added_sources": args.added_sources}
    shared = stage_dirs[0] if args.partitions is not None else None  # partition runs share the root
    with hold_root(args.root, "run " + args.stage, shared_stage=shared):
        for stage_dir in stage_dirs:
            data = run_stage(args.root, stage_dir, config, rebuild=args.rebuild, options=options,
                             save=args.save, partitions=args.partitions)  # fmt: skip
            print(format_run_summary(stage_dir, data), flush=True)
    return 0


def _toml_list(values: list[str]) -> str:
    import json

    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _cmd_retry(args: argparse.Namespace) -> int:
    from pipeline.runner import retry_stage
    from pipeline.summary import format_run_summary
    from stages import resolve_stage_dir

    stage_dir = resolve_stage_dir(args.stage)
    reasons = [r.strip() for r in args.reason.split(",") if r.strip()]
    data = retry_stage(args.root, stage_dir, _load(args), reasons)
    print(format_run_summary(stage_dir, data))
    return 0


def _cmd_rethreshold(args: argparse.Namespace) -> int:
    from pipeline.runner import rethreshold_stage
    from pipeline.summary import format_run_summary
    from stages import resolve_stage_dir

    stage_dir = resolve_stage_dir(args.stage)
    data = rethreshold_stage(args.root, stage_dir, _load(args))
    print(format_run_summary(stage_dir, data))
    return 0


def _cmd_filter(args: argparse.Namespace) -> int:
    from stages import load_stage

    print(load_stage("04_filter").build_support_set(_load(args), args.folder, args.output))
    print(f"support set written to {args.output}; use it with --set filter.support_set={args.output}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from stages import load_stage

    problems = load_stage("06_shard").verify(args.root, _load(args))
    print("\n".join(problems) if problems else "shards: every tar matches the manifests")
    return 1 if problems else 0


def _cmd_show(args: argparse.Namespace) -> int:
    from pipeline.show import show_rows

    _load(args)
    text = show_rows(args.root, args.stage, args.reason, args.status, args.limit, args.fmt, args.output)
    if text:
        print(text)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from pipeline.provenance import format_status

    _load(args)  # a bad --config or --set is an error here too, never silently ignored
    print(format_status(args.root))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from pipeline.provenance import audit, audit_json, format_audit

    _load(args)
    entries = audit(args.root, args.uuid)
    if not entries:
        raise TolpipeError(f"no stage under {args.root} knows sample {args.uuid}")
    print(audit_json(args.uuid, entries) if args.json else format_audit(args.uuid, entries))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    import tomli_w

    from pipeline.config import defaults_text

    print(defaults_text() if args.defaults else tomli_w.dumps(_load(args)), end="")
    return 0


COMMANDS = {
    "run": _cmd_run,
    "retry": _cmd_retry,
    "status": _cmd_status,
    "show": _cmd_show,
    "rethreshold": _cmd_rethreshold,
    "filter": _cmd_filter,
    "verify": _cmd_verify,
    "audit": _cmd_audit,
    "config": _cmd_config,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = [*args.overrides, *getattr(args, "overrides_after", [])]
    try:
        if args.command in PLUGIN_COMMANDS:
            module = importlib.import_module(PLUGIN_COMMANDS[args.command])
            return module.run_command(args, _load(args))
        return COMMANDS[args.command](args)
    except TolpipeError as exc:
        print(f"tolpipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tolpipe: interrupted; committed partitions are kept, rerun to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected error: one line, traceback on request
        if os.environ.get("TOLPIPE_DEBUG"):
            raise
        print(
            f"tolpipe: internal error: {type(exc).__name__}: {exc} (TOLPIPE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
