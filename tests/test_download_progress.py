"""Progress lines of long download partitions, printed by the worker that runs them."""

from __future__ import annotations

import io

from stages.download.progress import RowProgress
from tests.support.download_fixtures import (
    config,
    run_download,
    server_fixture,  # noqa: F401 - the `server` fixture
    write_ingest,
)


def test_row_progress_prints_only_for_long_partitions():
    clock = [0.0]
    out = io.StringIO()
    progress = RowProgress("02_download part-00007", 1000, 10.0, stream=out, clock=lambda: clock[0])
    for _ in range(30):
        progress.decided("ok")
    clock[0] = 9.9
    progress.tick()
    assert out.getvalue() == ""  # nothing within the first interval
    progress.decided("failed")
    progress.decided("dropped")
    clock[0] = 16.0
    progress.tick()
    progress.tick()  # the interval restarts at each line
    assert out.getvalue().splitlines() == [
        "[02_download part-00007] 32/1,000 rows decided (dropped 1, failed 1, ok 30), 2.0 rows/s, "
        "elapsed 0:00:16, ETA 0:08:04"
    ]


def test_long_partition_reports_progress_on_the_worker(tmp_path, server, capfd):
    urls = [server.image_url(0, 300 + i, 320, 320) for i in range(8)]
    write_ingest(tmp_path, [urls])
    cfg = config(rate_per_host=4.0, rate_ceiling=4.0, burst=1.0, robots_txt=False)
    cfg["run"].update(progress=True, progress_interval_s=0.5)
    run_download(tmp_path, cfg)
    lines = [line for line in capfd.readouterr().err.splitlines() if "02_download part-00000" in line]
    assert lines, "a partition of about 2 s prints progress lines every 0.5 s"
    assert all("/8 rows decided" in line for line in lines)
