"""The end-of-run summary printed after `tolpipe run` and `tolpipe retry`, and the list of
retryable reasons shown by `tolpipe retry --help`.

The summary is built from the run record's data only (what run_stage / retry_stage return), so
it costs nothing beyond the run itself and says exactly what the run record says.
"""

from __future__ import annotations

import textwrap
from typing import Any

from pipeline.ledger import STATUSES

# Reasons listed one per line; the rest are folded into one line (`tolpipe status` has them all).
MAX_REASONS = 10
LABEL_WIDTH = 11


def format_elapsed(seconds: float) -> str:
    """2.4 s, 3 min 12 s, 2 h 05 min: precise when short, readable when long."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_rate(value: float) -> str:
    """Three significant digits at most: 0.412, 41.2, 4,120."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _line(label: str, text: str) -> str:
    return f"  {label:<{LABEL_WIDTH}} {text}"


def _short_name(stage_dir: str) -> str:
    """The name users type (`download` for 02_download)."""
    return stage_dir.split("_", 1)[1] if "_" in stage_dir else stage_dir


def _rows_line(by_status: dict[str, int]) -> str:
    total = sum(by_status.values())
    # The ledger's order (ok, dropped, failed) reads as a funnel; run records sort by name.
    order = [*STATUSES, *sorted(set(by_status) - set(STATUSES))]
    parts = ", ".join(f"{s} {by_status[s]:,}" for s in order if by_status.get(s))
    return f"{total:,}: {parts}" if total else "none"


def _reason_lines(by_reason: dict[str, int]) -> list[str]:
    ranked = sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))
    shown, folded = ranked[:MAX_REASONS], ranked[MAX_REASONS:]
    width = max(len(key) for key, _ in shown)
    count_width = max(len(f"{count:,}") for _, count in shown)
    lines = []
    for i, (key, count) in enumerate(shown):
        label = "reasons" if i == 0 else ""
        lines.append(_line(label, f"{key:<{width}}  {count:>{count_width},}"))
    if folded:
        rows = sum(count for _, count in folded)
        lines.append(_line("", f"... {len(folded)} more reasons, {rows:,} rows (tolpipe status)"))
    return lines


def _partition_line(data: dict[str, Any]) -> str:
    if "partitions_retried" in data:
        parts = [f"{len(data['partitions_retried'])} retried"]
    elif "partitions_rethresholded" in data:
        parts = [f"{len(data['partitions_rethresholded'])} re-thresholded"]
    else:
        parts = [
            f"{data.get('partitions_computed', 0)} computed",
            f"{data.get('partitions_skipped', 0)} already done",
        ]
        if data.get("partitions_not_selected"):
            parts.append(f"{data['partitions_not_selected']} not selected (--partitions)")
        if data.get("partitions_removed"):
            parts.append(f"{len(data['partitions_removed'])} removed (no longer planned)")
    if data.get("partitions_failed"):
        parts.append(f"{len(data['partitions_failed'])} FAILED")
    return ", ".join(parts)


def _rate_line(data: dict[str, Any], rows: int) -> str | None:
    """Rows per second only when every row in the totals was written by this run (all partitions
    computed, none failed): the totals also count partitions skipped as already done. Otherwise
    partitions per second, which is always of this run's work."""
    elapsed = float(data.get("elapsed_s") or 0)
    computed = data.get("partitions_computed", 0)
    if any(k in data for k in _VERBS) or elapsed <= 0 or not computed:
        return None
    if not data.get("partitions_skipped") and not data.get("partitions_failed") and rows:
        return f"{format_rate(rows / elapsed)} rows/s ({rows:,} rows written in {computed} partitions)"
    if computed >= elapsed:
        return f"{format_rate(computed / elapsed)} partitions/s ({computed} computed by this run)"
    return f"{format_elapsed(elapsed / computed)} per partition ({computed} computed by this run)"


def _hint_line(stage_dir: str, by_reason: dict[str, int]) -> str | None:
    if not by_reason:
        return None
    key = max(sorted(by_reason), key=lambda k: by_reason[k])
    reason = key.split(":", 1)[1] if ":" in key else key
    return _line("inspect", f"tolpipe show {_short_name(stage_dir)} --reason {reason}")


_VERBS = {"partitions_retried": "retry", "partitions_rethresholded": "rethreshold"}


def format_run_summary(stage_dir: str, data: dict[str, Any]) -> str:
    """A few aligned lines: rows by status, rows by reason, partitions, time and rate, and how to
    look at the dropped or failed rows."""
    totals = data.get("totals") or {}
    by_status: dict[str, int] = totals.get("by_status") or {}
    by_reason = {k: v for k, v in (totals.get("by_reason") or {}).items() if v}
    rows = sum(by_status.values())
    elapsed = float(data.get("elapsed_s") or 0)
    verb = next((v for k, v in _VERBS.items() if k in data), "run")
    outcome = data.get("outcome", "ok")
    head = f"{stage_dir}: {verb} {'finished' if outcome == 'ok' else outcome} in {format_elapsed(elapsed)}"
    lines = [head, _line("rows", _rows_line(by_status))]
    if by_reason:
        lines.extend(_reason_lines(by_reason))
    lines.append(_line("partitions", _partition_line(data)))
    if data.get("partitions_failed"):
        failed = ", ".join(f"part-{i:05d}" for i in data["partitions_failed"][:5])
        more = ", ..." if len(data["partitions_failed"]) > 5 else ""
        lines.append(_line("failed", f"{failed}{more} (rerun the same command to resume)"))
    rate = _rate_line(data, rows)
    if rate:
        lines.append(_line("rate", rate))
    hint = _hint_line(stage_dir, by_reason)
    if hint:
        lines.append(hint)
    lines += [_line("note", note) for note in data.get("notes", [])]
    return "\n".join(lines)


def retryable_help(width: int = 100) -> str:
    """`tolpipe retry --help` epilog: the reasons each installed stage can retry. Print it
    verbatim (argparse.RawDescriptionHelpFormatter), it is already wrapped."""
    from stages import available_stages, load_stage

    lines = ["retryable reasons:"]
    for stage_dir in available_stages():
        reasons = load_stage(stage_dir).retryable_reasons
        if not reasons:
            continue
        head, indent = f"  {stage_dir}: ", " " * (len(stage_dir) + 4)
        text = ", ".join(reasons)
        lines.extend(textwrap.wrap(text, width, initial_indent=head, subsequent_indent=indent))
    if len(lines) == 1:
        lines.append("  (no installed stage supports retry)")
    return "\n".join(lines)
