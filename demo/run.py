"""`make demo`: the pipeline end to end on the shipped corpus, offline, through the real CLI.

Builds the provider-style inputs (demo/inputs.py), serves the images from the loopback server on
three addresses, registers the held-out test set, runs every stage this version has (01 ingest
... 06 shard, and 07 train with the `cpu-tiny` profile plus its evaluation when the train stage
exists), then prints where everything is, a summary that accounts for every input row, and the
path of the HTML report.

    python -m demo [--root demo-root] [--port 8741] [--train-steps N]

A rerun on the same root and port rebuilds the inputs with the same bytes and skips every
committed partition.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

from demo import inputs as demo_inputs
from demo.server import LoopbackServer
from demo.summary import summary_text

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / "demo-root"
DEFAULT_PORT = 8741
HOSTS = 3
LATENCY_S = 0.01  # per request: enough to show politeness, short enough for a quick demo
TESTSET = "heldout"
TRAIN_PROFILE = "cpu-tiny"
# Training steps of the demo: the profile's 300 take about 10 minutes on two shared cores; 60 show
# the loss falling and keep `make demo` within a few minutes. --train-steps overrides.
DEMO_TRAIN_STEPS = 60
# Politeness for a local server: the defaults (one request a second per host) would make the
# download stage the slowest step of the demo.
RUN_SETTINGS = ("download.rate_per_host=20.0", "download.rate_ceiling=40.0")


class StepFailed(RuntimeError):
    pass


def tolpipe(root: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli", "--root", str(root), *args]
    print("$ tolpipe --root", root, *args, flush=True)
    result = subprocess.run(cmd, cwd=REPO, text=True, capture_output=capture)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
        raise StepFailed(f"`tolpipe {' '.join(args)}` failed with exit code {result.returncode} {detail}")
    return result


def host_of(file_name: str) -> int:
    """A file's host: stable across runs (the URL, hence the uuid, never changes)."""
    return zlib.crc32(file_name.encode()) % HOSTS


def train_stage_present() -> bool:
    return (
        importlib.util.find_spec("stages.train") is not None
        and (REPO / "stages" / "train" / "__init__.py").exists()
    )


def slurm_answers() -> bool:
    """Whether a Slurm controller answers here (then training goes through sbatch)."""
    if shutil.which("scontrol") is None:
        return False
    try:
        result = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "UP" in result.stdout


def run_pipeline(root: Path, port: int, train_steps: int) -> None:
    folder = root / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    files = demo_inputs.served_files(folder / "files")
    with LoopbackServer(hosts=HOSTS, port=port, folder=files, latency_s=LATENCY_S) as server:
        faults = {
            "html": server.url(1, "/img/5/800x600.jpg?fault=html"),
            "tiny": server.image_url(2, 7, 120, 90),
        }
        built = demo_inputs.build(
            folder, lambda name: server.url(host_of(name), f"/files/{name}"), faults.__getitem__
        )
        settings = [a for s in RUN_SETTINGS for a in ("--set", s)]
        settings += ["--set", f'taxonomy.backbone_path="{built.backbone}"']
        if not (root / "testsets" / TESTSET).is_dir():
            tolpipe(root, "testsets", "add", TESTSET, "--images", str(built.testset))
        tolpipe(
            root, *settings, "run", "ingest", "--source", f"gbif:{built.gbif}", "--source", f"eol:{built.eol}"
        )
        if train_stage_present():
            settings += train_settings(built.evalset, train_steps)
        else:
            print("demo: stage 07 train is not in this version: no model is trained", flush=True)
        tolpipe(root, *settings, "run", "all")


def train_settings(evalset: Path, train_steps: int) -> list[str]:
    """Stage 07 with the cpu-tiny profile, waiting for training and then the evaluation on the
    held-out photos; through Slurm when a controller answers, else as local processes."""
    executor = "slurm" if slurm_answers() else "local"
    where = "through Slurm" if executor == "slurm" else "locally (no Slurm controller answers)"
    print(f"demo: stage 07 trains profile {TRAIN_PROFILE} {where}, then evaluates on {evalset}", flush=True)
    values = [f'train.profile="{TRAIN_PROFILE}"', f'train.executor="{executor}"', "train.wait=true",
              f'train.eval_data="{evalset}"']  # fmt: skip
    if train_steps:
        values.append(f"train.max_steps={train_steps}")
    return [a for v in values for a in ("--set", v)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help=f"work root (default: {DEFAULT_ROOT.name}/)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of the loopback image server")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=DEMO_TRAIN_STEPS,
        help=f"stage 07: train this many steps (default {DEMO_TRAIN_STEPS}; 0: the profile's own)",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if root == REPO / "demo":
        parser.error("demo/ holds the demo's code and data: choose another work root")
    started = time.monotonic()
    try:
        run_pipeline(root, args.port, args.train_steps)
        tolpipe(root, "status")
        print(summary_text(root), flush=True)
        report = root / "report.html"
        if not args.no_report:
            tolpipe(root, "report", "--output", str(report))
    except StepFailed as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    print(
        f"\ndemo: done in {time.monotonic() - started:.0f} s. Inputs: {root / 'inputs'}; manifests: "
        f"{root / 'manifests'}; shards: {root / 'shards'}"
    )
    print(
        f"demo: audit a sample: tolpipe --root {root} audit UUID "
        f"(uuids: tolpipe --root {root} show shard --status ok)"
    )
    if not args.no_report:
        print(f"demo: report: {report}")
    return 0
