"""Plain-text tables of metric results and the shared "skipped" entry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def skipped(reason: str) -> dict[str, str]:
    """The entry of a metric that could not run on the given set, with the reason."""
    return {"skipped": reason}


def fmt(value: Any) -> str:
    if isinstance(value, dict) and "skipped" in value:
        return f"skipped: {value['skipped']}"
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A left-aligned text table; values through fmt()."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and population standard deviation (ddof 0) of per-fold figures, with the figures."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "folds": [float(v) for v in array]}
