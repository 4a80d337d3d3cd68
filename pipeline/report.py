"""`tolpipe report [--output FILE]`: one self-contained HTML page about a work root, for people
who would rather look than read: the funnel per stage, drop reasons, images per provider and image
type, taxa per rank, image sizes, training curves, evaluation tables and embedding plots (when the
train stage ran), and the config and versions used. Images are embedded as data URIs, so the file
can be mailed or opened anywhere. On a partial root it shows the stages that ran and names the
others."""

from __future__ import annotations

import argparse
import base64
import html
import json
from pathlib import Path
from typing import Any

from pipeline import report_data as data

REPORT_FILE = "report.html"  # default output, under the work root
TRAIN_DIR = "train"
METRICS_FILE = "metrics.jsonl"  # training/loop.py's per-step log
EVAL_FILE = "results.json"  # training/evaluate.py's results
EMBEDDING_PLOT_MARK = "embedding"  # training/plots.py's figures: PNG/SVG files with this in the name
LOSS_KEYS = ("loss", "organism_loss", "replay_loss")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.plot img { max-width: 100%; border: 1px solid #eee; }
.missing { color: #9a4a00; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.8em; }
"""


def add_parser(subparsers, global_options) -> None:
    p = subparsers.add_parser(
        "report",
        help="write an HTML report of the work root (plots, tables, config, versions)",
        description=__doc__,
    )
    global_options(p, suppress=True)
    p.add_argument("--output", type=Path, help=f"the HTML file to write (default: ROOT/{REPORT_FILE})")


def run_command(args: argparse.Namespace, config: dict) -> int:
    from pipeline import atomic

    root = Path(args.root)
    output = args.output or root / REPORT_FILE
    page = build_report(root)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(output, page.encode("utf-8"))
    missing = data.missing_stage_dirs(root)
    note = f" (stages not run: {', '.join(missing)})" if missing else ""
    print(f"report: {output} ({len(page) / 1e3:,.0f} kB){note}")
    return 0


# ---- sections ------------------------------------------------------------------------------


def _img(png: bytes, alt: str, mime: str = "image/png") -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<div class="plot"><img alt="{html.escape(alt)}" src="data:{mime};base64,{encoded}"></div>'


def _table(header: list[str], rows: list[list[Any]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def _section(title: str, section_id: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{html.escape(title)}</h2>{body}</section>'


def _stages_section(root: Path, counts: list[dict[str, Any]]) -> str:
    from pipeline import report_plots as plots

    books = data.accounting(counts)
    rows = [
        [
            c["stage"],
            c["rows"],
            c["by_status"].get("ok", 0),
            c["by_status"].get("dropped", 0),
            c["by_status"].get("failed", 0),
        ]
        for c in counts
    ]
    verdict = (
        "every input row is accounted for"
        if books["balanced"]
        else f"rows do not add up: {'; '.join(books['gaps'])}"
    )
    body = _img(plots.funnel(counts), "funnel per stage") + _table(
        ["stage", "rows", "ok", "dropped", "failed"], rows, "table-funnel"
    )
    body += (
        f"<p>{books['input_rows']:,} input rows = {sum(books['removed'].values()):,} removed by the stages "
        f"+ {books['kept']:,} kept: {verdict}.</p>"
    )
    reason_rows = [[c["stage"], *k.split(":", 1), n] for c in counts for k, n in c["by_reason"].items()]
    body += _img(plots.reasons(counts), "drop reasons per stage")
    body += _table(["stage", "status", "reason", "rows"], reason_rows, "table-reasons")
    notes = data.filter_notes(root)
    if notes:
        body += (
            "<p>Filters that did not run:</p><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
            + "</ul>"
        )
    return _section("Rows per stage", "stages", body)


def _data_section(root: Path) -> str:
    from pipeline import report_plots as plots

    parts = []
    by_provider = data.provider_image_types(root)
    if by_provider:
        rows = [[p, t, n] for p, types in sorted(by_provider.items()) for t, n in sorted(types.items())]
        parts.append(_img(plots.providers(by_provider), "images per provider and image type"))
        parts.append(_table(["provider", "image type", "rows"], rows, "table-providers"))
    per_rank = data.taxa_per_rank(root)
    if per_rank:
        parts.append(_img(plots.taxa(per_rank), "taxa per rank"))
        parts.append(_table(["rank", "distinct names"], [[r, n] for r, n in per_rank.items()], "table-taxa"))
    sizes = data.image_sizes(root)
    if sizes["width"]:
        parts.append(_img(plots.image_sizes(sizes), "image size histogram"))
    shards = data.shards(root)
    if shards["files"]:
        rows = [[name, shards["samples"].get(name, "")] for name in shards["files"]]
        parts.append(
            f"<p>{len(shards['files'])} shard(s), {shards['bytes'] / 1e6:,.1f} MB in "
            f"{html.escape(shards['folder'])}</p>"
        )
        parts.append(_table(["shard", "samples"], rows, "table-shards"))
    return _section("Data", "data", "".join(parts) or "<p class='missing'>no stage output yet</p>")


def _train_section(root: Path) -> str:
    from pipeline import report_plots as plots

    folder = Path(root) / TRAIN_DIR
    parts = []
    jobs = data.train_jobs(root)
    if jobs:
        columns = ["kind", "job_name", "job_id", "executor", "state", "status", "reason", "run_dir"]
        parts.append(_table(columns, [[job.get(c) for c in columns] for job in jobs], "table-train-jobs"))
    for metrics in sorted(folder.glob(f"**/{METRICS_FILE}")):
        series = _loss_series(metrics)
        if series:
            parts.append(f"<h3>{html.escape(str(metrics.parent.relative_to(root)))}</h3>")
            parts.append(_img(plots.loss_curve(series), "training loss curve"))
    for results in sorted(folder.glob(f"**/{EVAL_FILE}")):
        parts.append(_eval_tables(root, results))
    for plot in sorted(
        p
        for p in folder.glob("**/*")
        if EMBEDDING_PLOT_MARK in p.name.lower() and p.suffix.lower() in (".png", ".svg")
    ):
        mime = "image/svg+xml" if plot.suffix.lower() == ".svg" else "image/png"
        parts.append(f"<h3>{html.escape(str(plot.relative_to(root)))}</h3>")
        parts.append(_img(plot.read_bytes(), "embedding plot", mime))
    if not parts:
        return _section(
            "Training and evaluation",
            "train",
            "<p class='missing'>no training run under this root (stage 07 did not run)</p>",
        )
    return _section("Training and evaluation", "train", "".join(parts))


def _loss_series(path: Path) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line a killed run left half-written
        for key in LOSS_KEYS:
            if isinstance(row.get(key), int | float) and isinstance(row.get("step"), int | float):
                series.setdefault(key, []).append((row["step"], row[key]))
    return series


def _eval_tables(root: Path, path: Path) -> str:
    results = json.loads(path.read_text())
    title = f"Evaluation: {path.relative_to(root)}"
    head = {
        k: results.get(k) for k in ("checkpoint", "step", "profile", "images", "elapsed_s") if k in results
    }
    parts = [
        f"<h3>{html.escape(title)}</h3>",
        _table(["field", "value"], [[k, v] for k, v in head.items()], "table-eval-run"),
    ]
    for family, figures in (results.get("families") or {}).items():
        flat = {k: _figure_value(v) for k, v in data.flatten_figures(figures).items()}
        rows = [[k, v] for k, v in flat.items() if isinstance(v, int | float | str)]
        parts.append(
            f"<h4>{html.escape(family)}</h4>" + _table(["metric", "value"], rows, f"table-eval-{family}")
        )
    return "".join(parts)


def _figure_value(value: Any) -> Any:
    """A list of numbers is shown as its first ten, joined; anything else as it is."""
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return ", ".join(_cell(v) for v in value[:10])
    return value


def _environment_section(root: Path) -> str:
    env = data.run_environment(root)
    rows = [
        [
            stage,
            e.get("run_id"),
            e.get("outcome"),
            e.get("tolpipe_version"),
            (e.get("git_revision") or "")[:12],
            (e.get("config_digest") or "")[:16],
            e.get("host"),
            e.get("slurm_job_id"),
        ]
        for stage, e in env.items()
    ]
    body = _table(
        ["stage", "last run", "outcome", "tolpipe", "git", "config digest", "host", "slurm job"],
        rows,
        "table-runs",
    )
    packages: dict[str, str] = {}
    python = ""
    for e in env.values():
        packages.update(e.get("packages") or {})
        python = e.get("python") or python
    if packages:
        body += _table(
            ["package", "version"], [["python", python], *sorted(packages.items())], "table-versions"
        )
    config = data.frozen_config(root)
    body += f"<h3>Frozen config (tolpipe.toml)</h3><pre>{html.escape(config or '(none yet)')}</pre>"
    return _section("Config and versions", "config", body)


def build_report(root: Path) -> str:
    root = Path(root)
    counts = data.stage_counts(root)
    missing = data.missing_stage_dirs(root)
    status = (
        f"<p class='missing' id='missing-stages'>Stages not run (no committed partitions): "
        f"{html.escape(', '.join(missing))}</p>"
        if missing
        else "<p>Every stage ran.</p>"
    )
    sections = [
        _stages_section(root, counts)
        if counts
        else _section("Rows per stage", "stages", "<p class='missing'>no stage has run under this root</p>")
    ]
    sections += [_data_section(root), _train_section(root), _environment_section(root)]
    title = f"tolpipe report: {root.resolve()}"
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{status}"
        + "".join(sections)
        + "</body></html>\n"
    )
