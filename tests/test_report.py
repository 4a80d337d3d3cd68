"""`tolpipe report`: one self-contained HTML page with every plot and table, rendered in headless
Chromium (the screenshot must show content), and on a partial root naming the missing stages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.run import train_stage_present
from tests.conftest import cli
from tests.support.demo import DemoRun, demo_run  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRE_CHROMIUM = bool(os.environ.get("TOLPIPE_REQUIRE_CHROMIUM"))
WINDOW = (1200, 2400)
PLOTS = ("funnel per stage", "drop reasons per stage", "images per provider and image type", "taxa per rank",
         "image size histogram")  # fmt: skip
TABLES = ("table-funnel", "table-reasons", "table-providers", "table-taxa", "table-shards", "table-runs",
          "table-versions")  # fmt: skip


def test_report_holds_every_plot_and_table(demo_run: DemoRun):  # noqa: F811
    page = (demo_run.root / "report.html").read_text()
    for alt in PLOTS:
        assert re.search(rf'<img alt="{alt}" src="data:image/png;base64,[A-Za-z0-9+/]{{200}}', page), alt
    for table in TABLES:
        assert f'<table id="{table}">' in page, table
    assert "every input row is accounted for" in page and "Frozen config (tolpipe.toml)" in page
    assert 'src="http' not in page and 'href="http' not in page  # nothing fetched from elsewhere
    if train_stage_present():
        assert '<img alt="training loss curve"' in page and '<table id="table-train-jobs">' in page
        assert '<table id="table-eval-core">' in page and "zero_shot.top1" in page
    embedding_plots = [p for p in (demo_run.root / "train").glob("**/*") if "embedding" in p.name.lower()]
    if embedding_plots:
        assert page.count('<img alt="embedding plot"') == len(embedding_plots)


def test_report_on_a_partial_root_names_the_missing_stages(demo_run: DemoRun, tmp_path: Path):  # noqa: F811
    partial = tmp_path / "partial"
    later = shutil.ignore_patterns("04_filter", "05_dedup", "06_shard", "07_train")
    shutil.copytree(demo_run.root / "manifests", partial / "manifests", ignore=later)
    out = cli(partial, "report", "--output", str(tmp_path / "r.html")).stdout
    assert "stages not run: 04_filter, 05_dedup, 06_shard, 07_train" in out
    page = (tmp_path / "r.html").read_text()
    assert "Stages not run (no committed partitions): 04_filter, 05_dedup, 06_shard, 07_train" in page
    assert '<img alt="funnel per stage"' in page and "no training run under this root" in page


@pytest.mark.skipif(
    CHROMIUM is None and not REQUIRE_CHROMIUM,
    reason="chromium is not installed (apt-get install chromium); CI sets TOLPIPE_REQUIRE_CHROMIUM",
)
def test_report_renders_in_headless_chromium(demo_run: DemoRun, tmp_path: Path):  # noqa: F811
    assert CHROMIUM, "TOLPIPE_REQUIRE_CHROMIUM is set but chromium is not installed"
    shot = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}",
           (demo_run.root / "report.html").as_uri()]  # fmt: skip
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)}
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (WINDOW[1], WINDOW[0])
    # Not blank: text and plots leave many dark pixels and many distinct grey levels.
    assert (pixels < 128).mean() > 0.01 and len(np.unique(pixels)) > 64
    # The plots (embedded PNGs) were decoded: the funnel's green bars are on screen.
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    green = (abs(rgb[..., 0] - 0x4C) < 12) & (abs(rgb[..., 1] - 0x9A) < 12) & (abs(rgb[..., 2] - 0x5F) < 12)
    assert green.sum() > 500
    shutil.copy(shot, demo_run.root / "report-screenshot.png")  # for a person to look at
