"""A root used as a new user would over time: settings given once apply once, relative paths
keep working from any folder, a read-only root or store is found before any work, every run
ends with a summary that says why rows were dropped, and the rows are one command away."""

from __future__ import annotations

import csv
import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import load_defaults
from pipeline.runrecord import read_runs
from tests.conftest import REPO, cli, write_url_table
from tests.support.loopback_server import LoopbackServer
from tests.support.pipeline_root import write_source


def tolpipe(cwd: Path, root: Path, *args: str, user: int | None = None) -> subprocess.CompletedProcess:
    """The CLI run from `cwd` (as user id `user`, group the same, through setpriv when given)."""
    cmd = [sys.executable, "-m", "pipeline.cli", "--root", str(root),
           "--set", "cluster.local_processes=false", *args]  # fmt: skip
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": "/tmp"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def frozen(root: Path) -> dict:
    return tomllib.loads((root / "tolpipe.toml").read_text())


def test_one_off_settings_apply_once_and_sources_are_stored_absolute(tmp_path: Path):
    inputs, elsewhere, root = tmp_path / "inputs", tmp_path / "elsewhere", tmp_path / "root"
    inputs.mkdir()
    elsewhere.mkdir()
    write_url_table(inputs / "urls.csv", rows=120, hosts=2)
    throttled = "[download]\nrate_per_host = 0.5\nrate_floor = 0.1\n[cluster]\nworkers = 1\n"
    (inputs / "throttled.toml").write_text(throttled + "[ingest]\nchunk_rows = 1000\n")
    first = tolpipe(inputs, root, "--config", "throttled.toml", "run", "ingest", "--source", "table:urls.csv")
    assert first.returncode == 0, first.stderr
    # The run says which settings differ from the defaults, and where they came from.
    assert "download.rate_per_host = 0.5 (--config throttled.toml)" in first.stdout
    assert f'ingest.sources = ["table:{inputs / "urls.csv"}"] (--set)' in first.stdout

    saved, defaults = frozen(root), load_defaults()
    assert saved["ingest"]["sources"] == [f"table:{inputs / 'urls.csv'}"]
    for section, key in (("download", "rate_per_host"), ("cluster", "workers"), ("ingest", "chunk_rows")):
        assert saved[section][key] == defaults[section][key], (section, key)

    # From another folder, with no flags: ingest is found complete.
    again = tolpipe(elsewhere, root, "run", "ingest")
    assert again.returncode == 0, again.stderr
    assert "settings that differ" in again.stdout and "rate_per_host" not in again.stdout
    assert read_runs(root, "01_ingest")[-1]["partitions_computed"] == 0

    kept = tolpipe(elsewhere, root, "--set", "download.rate_per_host=3.0", "run", "ingest", "--save")
    assert kept.returncode == 0, kept.stderr
    assert frozen(root)["download"]["rate_per_host"] == 3.0


@pytest.fixture(name="shared_dir")
def shared_dir_fixture() -> Iterator[Path]:
    """A folder another user can reach (pytest's own temp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="tolpipe-ro-"))
    path.chmod(0o755)
    # The other user runs this checkout's code: a checkout below a private folder (a clone
    # into `mktemp -d`) is made reachable for the test and put back after.
    private = [p for p in (REPO, *REPO.parents) if not p.stat().st_mode & stat.S_IXOTH]
    modes = {p: p.stat().st_mode for p in private}
    for folder, mode in modes.items():
        folder.chmod(mode | stat.S_IXOTH)
    try:
        yield path
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)
        shutil.rmtree(path, ignore_errors=True)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="runs the CLI as another user through setpriv (root only)",
)
NOBODY = 65534


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            os.chown(Path(dirpath) / name, uid, gid)
    os.chown(path, uid, gid)


@needs_root
def test_read_only_root_is_refused_before_any_work_even_when_all_is_done(shared_dir: Path):
    source = write_url_table(shared_dir / "urls.csv", rows=60, hosts=2)
    source.chmod(0o644)
    root = shared_dir / "root"
    assert tolpipe(shared_dir, root, "run", "ingest", "--source", f"table:{source}").returncode == 0
    result = tolpipe(shared_dir, root, "run", "ingest", user=NOBODY)  # root stays root's
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "internal error" not in line
    assert f"{root}" in line and "not writable" in line


@needs_root
def test_read_only_store_is_refused_before_a_single_fetch(shared_dir: Path):
    with LoopbackServer(hosts=2) as server:
        source = write_source(shared_dir / "urls.csv", server, [0, 1], 5)
        source.chmod(0o644)
        root = shared_dir / "root"
        assert tolpipe(shared_dir, root, "run", "ingest", "--source", f"table:{source}").returncode == 0
        chown_tree(root, NOBODY, NOBODY)  # the root is nobody's, its image store is not
        (root / "store" / "images").mkdir(parents=True)
        result = tolpipe(shared_dir, root, "run", "download", user=NOBODY)
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and f"{root / 'store' / 'images'}: not writable" in line
        assert server.requests() == []


def test_run_summary_show_and_retry_help(tmp_path: Path, small_table: Path):
    root = tmp_path / "root"
    result = cli(root, "run", "ingest", "--source", f"table:{small_table}")
    summary = result.stdout
    assert "01_ingest: run finished in" in summary
    assert "dropped:duplicate_url" in summary and "rows/s" in summary
    assert "3 computed, 0 already done" in summary
    assert "tolpipe show ingest --reason duplicate_url" in summary

    listed = cli(root, "show", "ingest", "--reason", "duplicate_url").stdout
    assert listed.count("duplicate_url") >= 5 and "http://host" in listed
    exported = cli(root, "show", "ingest", "--reason", "duplicate_url", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 5 and {r["reason"] for r in rows} == {"duplicate_url"}
    assert all(r["url"].startswith("http://host") and r["uuid"] for r in rows)

    help_text = cli(root, "retry", "--help").stdout
    assert "02_download:" in help_text and "http_429" in help_text
    assert "03_taxonomy: resolver_error" in help_text


def test_missing_backbone_says_where_to_get_one(tmp_path: Path):
    doc = REPO / "docs" / "taxonomy-data.md"
    assert "GBIF Backbone Taxonomy" in doc.read_text()
    from stages.taxonomy.factory import make_resolver

    params = {**load_defaults()["taxonomy"], "resolver": "backbone"}
    with pytest.raises(Exception, match="docs/taxonomy-data.md"):
        make_resolver(params, None)
