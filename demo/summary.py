"""The demo's closing summary: rows per stage and reason, the accounting of every input row,
filters that did not run, leaks removed, shards written, evaluation figures."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import report_data as data
from pipeline.report import EVAL_FILE

LEAK_REASONS = ("test_leak_md5", "test_leak_pdq")


def evaluation_files(root: Path) -> list[Path]:
    """Evaluation results of the train stage's runs (training/evaluate.py's results.json)."""
    return sorted((Path(root) / "train").glob(f"**/{EVAL_FILE}"))


def _evaluation_lines(root: Path) -> list[str]:
    lines = []
    for path in evaluation_files(root):
        try:
            figures = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            lines.append(f"  {path}: unreadable ({exc})")
            continue
        flat = {k: v for k, v in data.flatten_figures(figures).items() if isinstance(v, int | float)}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in list(flat.items())[:8])
        lines.append(f"  {path.relative_to(root)}: {shown or 'no figures'}")
    return lines


def summary_text(root: Path) -> str:
    counts = data.stage_counts(root)
    books = data.accounting(counts)
    lines = ["", "== demo summary", f"work root: {root}"]
    for c in counts:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(c["by_status"].items()))
        lines.append(f"  {c['stage']:<12} {c['rows']:>4} rows: {statuses}")
        lines += [f"      {reason:<34} {n:>4}" for reason, n in c["by_reason"].items()]
    removed = " + ".join(f"{n} ({s})" for s, n in books["removed"].items() if n)
    verdict = "every input row accounted for" if books["balanced"] else f"NOT BALANCED: {books['gaps']}"
    lines.append(
        f"  input rows {books['input_rows']} = {removed or '0'} removed + {books['kept']} kept: {verdict}"
    )
    missing = data.missing_stage_dirs(root)
    if missing:
        lines.append(f"  stages not run: {', '.join(missing)}")
    for note in data.filter_notes(root):
        lines.append(f"  filter not run: {note}")
    dedup = next((c for c in counts if c["stage"] == "05_dedup"), None)
    if dedup:
        leaks = {r: n for r, n in dedup["by_reason"].items() if r.split(":")[-1] in LEAK_REASONS}
        listed = ", ".join(f"{r} {n}" for r, n in leaks.items())
        lines.append(f"  test-set leaks removed: {sum(leaks.values())} ({listed})")
    shards = data.shards(root)
    if shards["files"]:
        lines.append(
            f"  shards: {len(shards['files'])} files, {shards['bytes'] / 1e6:.1f} MB in {shards['folder']}"
        )
    for job in data.train_jobs(root):
        where = f"{job['kind']} job {job['job_id']} ({job['executor']})"
        lines.append(f"  07_train {where}: {job['state']}, {job['run_dir']}")
    evaluation = _evaluation_lines(root)
    if evaluation:
        lines.append("  evaluation:")
        lines += evaluation
    return "\n".join(lines)
