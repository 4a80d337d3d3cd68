"""The `tolpipe` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.errors import ConfigError, TolpipeError

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
        help="ingest only: a source (gbif:DwC-A zip or folder, eol:CSV, table:CSV/Parquet); "
        "repeatable; replaces ingest.sources from the config",
    )  # fmt: skip

    retry = command("retry", "re-attempt failed rows of a stage by reason class")
    retry.add_argument("stage", help="the stage, e.g. download")
    retry.add_argument(
        "--reason", required=True, help="comma-separated reason codes, e.g. http_429,timeout"
    )

    command("status", "per stage: partitions done/planned, rows by status and reason")
    audit = command("audit", "everything the stages built so far know of one sample")
    audit.add_argument("uuid", help="the sample's uuid (from any manifest)")
    config = command("config", "print the effective config (TOML)")
    config.add_argument("--defaults", action="store_true", help="print the documented defaults")
    return parser


def _load(args: argparse.Namespace) -> dict:
    from pipeline.config import load_config

    return load_config(args.root, args.config, args.overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.runner import run_stage
    from stages import available_stages, resolve_stage_dir

    if args.source:
        args.overrides = [*args.overrides, "ingest.sources=" + _toml_list(args.source)]
    config = _load(args)
    stage_dirs = available_stages() if args.stage == "all" else [resolve_stage_dir(args.stage)]
    if args.source and stage_dirs != ["01_ingest"] and "01_ingest" not in stage_dirs:
        raise ConfigError("--source applies to the ingest stage only")
    for stage_dir in stage_dirs:
        data = run_stage(args.root, stage_dir, config, rebuild=args.rebuild)
        _print_summary(stage_dir, data)
    return 0


def _toml_list(values: list[str]) -> str:
    import json

    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _print_summary(stage_dir: str, data: dict) -> None:
    statuses = ", ".join(f"{k} {v:,}" for k, v in data["totals"]["by_status"].items())
    print(
        f"{stage_dir}: {data.get('partitions_planned', 0)} partitions "
        f"({data.get('partitions_skipped', 0)} already done), {statuses or 'no rows'}"
    )


def _cmd_retry(args: argparse.Namespace) -> int:
    from pipeline.runner import retry_stage
    from stages import resolve_stage_dir

    stage_dir = resolve_stage_dir(args.stage)
    reasons = [r.strip() for r in args.reason.split(",") if r.strip()]
    data = retry_stage(args.root, stage_dir, _load(args), reasons)
    statuses = ", ".join(f"{k} {v:,}" for k, v in data["totals"]["by_status"].items())
    print(f"{stage_dir}: retried {len(data['partitions_retried'])} partitions; now {statuses}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from pipeline.provenance import format_status

    _load(args)  # a bad --config or --set is an error here too, never silently ignored
    print(format_status(args.root))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from pipeline.provenance import audit, format_audit

    _load(args)
    entries = audit(args.root, args.uuid)
    if not entries:
        raise TolpipeError(f"no stage under {args.root} knows sample {args.uuid}")
    print(format_audit(args.uuid, entries))
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
    "audit": _cmd_audit,
    "config": _cmd_config,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = [*args.overrides, *getattr(args, "overrides_after", [])]
    try:
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
