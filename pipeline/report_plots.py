"""The report's matplotlib figures, each returned as PNG bytes (Agg backend: no display needed).
Every function takes plain data (pipeline/report_data.py reads it from the root)."""

from __future__ import annotations

import io
from typing import Any

PLOT_DPI = 100  # figure resolution: sharp in a browser, a few tens of kB per plot
FIG_SIZE = (7.0, 3.6)  # inches
REASON_COLOURS = {"ok": "#4c9a5f", "dropped": "#d08c2c", "failed": "#b8413a"}


def _figure(size: tuple[float, float] = FIG_SIZE):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=size, dpi=PLOT_DPI)


def _png(plt, fig) -> bytes:
    out = io.BytesIO()
    fig.tight_layout()
    fig.savefig(out, format="png", metadata={"Software": None})  # no version stamp: same bytes
    plt.close(fig)
    return out.getvalue()


def funnel(counts: list[dict[str, Any]]) -> bytes:
    """Rows in per stage, split into ok / dropped / failed (stacked bars)."""
    plt, fig, ax = _figure()
    stages = [c["stage"] for c in counts]
    bottom = [0] * len(counts)
    for status, colour in REASON_COLOURS.items():
        values = [c["by_status"].get(status, 0) for c in counts]
        ax.bar(stages, values, bottom=bottom, color=colour, label=status)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, c in enumerate(counts):
        ax.text(i, c["rows"], f"{c['rows']:,}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, max((c["rows"] for c in counts), default=0) * 1.15 + 1)
    ax.set_ylabel("rows")
    ax.set_title("Funnel: rows per stage by status")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def reasons(counts: list[dict[str, Any]]) -> bytes:
    """Dropped and failed rows per stage and reason (horizontal bars)."""
    labels, values, colours = [], [], []
    for c in counts:
        for key, n in c["by_reason"].items():
            status, _, reason = key.partition(":")
            labels.append(f"{c['stage']}  {reason}")
            values.append(n)
            colours.append(REASON_COLOURS.get(status, "#888888"))
    plt, fig, ax = _figure((7.0, max(2.0, 0.3 * len(labels) + 1.0)))
    if labels:
        ax.barh(labels[::-1], values[::-1], color=colours[::-1])
        for y, v in enumerate(values[::-1]):
            ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no row was dropped or failed", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("rows")
    ax.set_title("Drop and failure reasons per stage")
    ax.tick_params(axis="y", labelsize=8)
    return _png(plt, fig)


def providers(by_provider: dict[str, dict[str, int]]) -> bytes:
    """Images per provider, stacked by image type."""
    plt, fig, ax = _figure()
    names = sorted(by_provider)
    types = sorted({t for row in by_provider.values() for t in row})
    bottom = [0] * len(names)
    for image_type in types:
        values = [by_provider[p].get(image_type, 0) for p in names]
        ax.bar(names, values, bottom=bottom, label=image_type)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("rows (01 ingest)")
    ax.set_title("Images per provider and image type")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def taxa(per_rank: dict[str, int]) -> bytes:
    """Distinct resolved taxa per rank among the kept rows."""
    plt, fig, ax = _figure()
    ax.bar(list(per_rank), list(per_rank.values()), color="#3f6fb0")
    ax.set_ylim(0, max(per_rank.values(), default=0) * 1.15 + 1)  # room for the counts above the bars
    for i, v in enumerate(per_rank.values()):
        ax.text(i, v, f"{v:,}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("distinct names")
    ax.set_title("Taxa per rank (kept rows)")
    return _png(plt, fig)


def image_sizes(sizes: dict[str, list[int]], bins: int = 20) -> bytes:
    """Histogram of the original width and height of the downloaded images."""
    plt, fig, ax = _figure()
    ax.hist(
        [sizes["width"], sizes["height"]], bins=bins, label=["width", "height"], color=["#3f6fb0", "#d08c2c"]
    )
    ax.set_xlabel("pixels (original, EXIF orientation applied)")
    ax.set_ylabel("images")
    ax.set_title("Image sizes (02 download, ok rows)")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def loss_curve(series: dict[str, list[tuple[float, float]]]) -> bytes:
    """Training loss (and any other logged series) against step."""
    plt, fig, ax = _figure()
    for name, points in series.items():
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            label=name,
            marker="." if len(points) < 50 else None,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title("Training curves")
    ax.legend(fontsize=8)
    return _png(plt, fig)
