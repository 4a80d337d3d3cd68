"""Installing the filters' extras never changes what the other stages write.

The download stage's JPEG bytes depend on the Pillow it runs (and its arrays on numpy), so an
extra that moves any package of the base install (as PytorchWildlife 1.3.0 does: Pillow 13.0 ->
12.3, python-dateutil 4.0 -> 2.9) would change 02's output on machines that run stage 04. pip's
resolver says what an install would pick without installing anything: every package the base
install resolves (`.[dev]`) must resolve to the same version with all the filter extras installed
together, as the Makefile installs them (an extra's upper bounds are a subset of the combined ones;
resolving every subset would multiply the time). And the Pillow this environment runs must be the
one a base install resolves today, or its outputs already differ from a fresh plain install's
(after a new Pillow release, reinstall the environment).

What it cannot see: two builds of the same version (a Pillow linked to another libjpeg, say).

Needs the package registry (CI has it); skipped, with the reason, only when pip finds no Pillow at
all. The two resolutions run in parallel: about 30-40 s on two CPUs with a warm pip cache.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FILTER_EXTRAS = ("filters", "megadetector")
# Installs to compare with the base one (the Makefile installs the filter extras together).
INSTALLS = {"+".join(FILTER_EXTRAS): f".[dev,{','.join(FILTER_EXTRAS)}]"}
RESOLVE_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _resolve(spec: str, report: Path) -> dict[str, str]:
    """Package -> version that `pip install spec` would install into an empty environment."""
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--report", str(report), spec,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S)
    if done.returncode != 0:
        raise AssertionError(f"pip cannot resolve {spec!r}:\n{(done.stdout + done.stderr)[-4000:]}")
    installs = json.loads(report.read_text())["install"]
    return {_name(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


def _skip_without_registry() -> None:
    """Skip when pip finds no Pillow at all: the registry (or the configured index) is unreachable.
    Once it answers, any failure to resolve is a real conflict and fails the test."""
    command = [sys.executable, "-m", "pip", "index", "versions", "pillow"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"pip cannot reach the package registry ({last})")


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory) -> dict[str, dict[str, str]]:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    missing = [extra for extra in FILTER_EXTRAS if extra not in declared]
    # pip ignores an unknown extra with a warning: the comparison would pass without checking it.
    assert not missing, f"pyproject.toml declares no extra {missing}"
    _skip_without_registry()
    folder = tmp_path_factory.mktemp("pip-reports")
    specs = {"base": ".[dev]", **INSTALLS}
    started = time.monotonic()
    with ThreadPoolExecutor(len(specs)) as pool:
        futures = {key: pool.submit(_resolve, spec, folder / f"{key}.json") for key, spec in specs.items()}
        found = {key: future.result() for key, future in futures.items()}
    print(f"pip resolved {len(specs)} installs in {time.monotonic() - started:.1f} s")
    return found


@pytest.mark.parametrize("install", list(INSTALLS))
def test_filter_extras_keep_every_base_package_version(resolutions, install):
    base, extended = resolutions["base"], resolutions[install]
    changed = {
        name: (version, extended.get(name)) for name, version in base.items() if extended.get(name) != version
    }
    assert "pillow" in base and "numpy" in base
    assert not changed, (
        f"installing {INSTALLS[install]} changes packages of the base install "
        f"(base -> with the extra; None: no longer installed): {changed}"
    )


def test_running_pillow_is_the_one_a_base_install_resolves(resolutions):
    running = importlib.metadata.version("pillow")
    resolved = resolutions["base"]["pillow"]
    assert running == resolved, (
        f"this environment runs Pillow {running} but a base install resolves {resolved}: the download "
        f"stage's JPEG bytes here differ from a plain install's (reinstall, or check what pinned Pillow)"
    )
