"""Benchmark of stage 02 against img2dataset, in one run on this machine.

Both download the same generated images from the same loopback server (8 hosts, 20 ms latency,
run as its own process). Sizes are drawn evenly from SIZES (thumbnails under 224 px, web sizes,
iNaturalist originals, 6-12 MP camera and museum originals). Both use the same output
rule: longest side shrunk to 720 px keeping the aspect ratio (area filter, never upscaled),
shortest side under 224 px dropped, JPEG quality 95, MD5 of the bytes. tolpipe runs with its
per-host token buckets on (rates set high enough not to bind on loopback) and robots.txt on.
img2dataset is installed from PyPI into .venv-img2dataset (created when missing: its pins may
conflict with ours) and run as a subprocess with 2 processes, like tolpipe's 2 dask workers.

Prints images/s (wall clock) for both, the ratio (goal: tolpipe >= 1.5x), CPU seconds (user +
system of the whole process tree: a figure less sensitive to other load on the machine) and
peak RSS of each process tree. `--small` runs a quick version (600 images, 4 hosts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

from bench.sampling import TreeSampler, children_cpu  # noqa: E402

I2D_VENV = REPO / ".venv-img2dataset"
I2D_PACKAGE = "img2dataset==1.47.0"
WORKERS = 2  # worker processes for both tools (this machine has 2 cores)
THREADS = 32  # fetch threads per process for both tools
GOAL = 1.5
# Image sizes, drawn evenly, after the sources of TreeOfLife-200M: a few thumbnails under the
# 224 px minimum, web sizes at or under 720 px, mid sizes, iNaturalist originals (2048 px long
# side) and camera / museum-specimen originals (6-12 megapixels).
SIZES = [
    (160, 120), (200, 150),
    (500, 375), (640, 480), (720, 540),
    (1024, 768), (1280, 960), (1600, 1200),
    (2048, 1536), (1536, 2048), (2048, 1365), (2048, 1152),
    (3000, 2000), (4000, 3000), (3024, 4032),
]  # fmt: skip


def set_threads(n: int) -> None:
    global THREADS
    THREADS = n


def ensure_img2dataset() -> Path:
    python = I2D_VENV / "bin" / "python"
    probe = [str(python), "-c", "import img2dataset"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing {I2D_PACKAGE} into {I2D_VENV} ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(I2D_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", I2D_PACKAGE], check=True)
    return python


def timed(cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> tuple[float, int, float]:
    """Run a command; (wall seconds, peak RSS bytes of its process tree, CPU seconds)."""
    cpu = children_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    rss = TreeSampler(proc.pid)
    output, _ = proc.communicate()
    took = time.monotonic() - started
    peak = rss.finish()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{output[-3000:]}")
    return took, peak, children_cpu() - cpu


def start_server(work: Path, count: int, hosts: int, distinct: int) -> tuple[subprocess.Popen, Path]:
    urls = work / "urls.csv"
    cmd = [sys.executable, "-m", "tests.support.loopback_server", "--hosts", str(hosts),
           "--port", "0", "--latency-ms", "20", "--write-urls", str(urls), "--count", str(count),
           "--distinct", str(distinct), "--warm", "--duration", "1800",
           "--sizes", ",".join(f"{w}x{h}" for w, h in SIZES)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc, urls
    raise SystemExit("loopback server did not start")


def run_tolpipe(work: Path, urls: Path) -> dict:
    root = work / "tolpipe"
    conf = work / "tolpipe.toml"
    conf.write_text(
        "[download]\n"
        "rate_per_host = 5000.0\nrate_ceiling = 5000.0\nburst = 500.0\n"
        f"concurrency = {THREADS}\n"
        f"[cluster]\nworkers = {WORKERS}\nthreads_per_worker = 1\n"
        "[run]\nprogress = false\n"
    )
    tolpipe = [sys.executable, "-m", "pipeline.cli", "--root", str(root), "--config", str(conf)]
    subprocess.run([*tolpipe, "run", "ingest", "--source", f"table:{urls}"], cwd=REPO,
                   check=True, capture_output=True)  # fmt: skip
    took, peak, cpu = timed([*tolpipe, "run", "download"])
    manifests = sorted((root / "manifests" / "02_download").glob("part-*.parquet"))
    table = pq.read_table(manifests, columns=["status", "reason"])
    ok = pc.sum(pc.equal(table["status"], "ok")).as_py()
    stores = sorted((root / "store" / "images").glob("part-*.parquet"))
    stored = sum(pq.ParquetFile(p).metadata.num_rows for p in stores)
    assert stored == ok
    reasons = table.filter(pc.not_equal(table["status"], "ok"))["reason"].value_counts().to_pylist()
    return {"seconds": took, "ok": ok, "rows": table.num_rows, "peak_rss": peak, "cpu": cpu,
            "not_ok": {r["values"]: r["counts"] for r in reasons}}  # fmt: skip


def run_img2dataset(work: Path, urls: Path, python: Path, per_shard: int) -> dict:
    out = work / "img2dataset"
    kwargs = {
        "url_list": str(urls), "input_format": "csv", "url_col": "url",
        "output_folder": str(out), "output_format": "parquet",
        "processes_count": WORKERS, "thread_count": THREADS,
        "number_sample_per_shard": per_shard,
        "image_size": 720, "resize_mode": "keep_ratio_largest", "resize_only_if_bigger": True,
        "min_image_size": 224, "downscale_interpolation": "area",
        "encode_format": "jpg", "encode_quality": 95, "compute_hash": "md5",
        "extract_exif": False, "timeout": 30, "retries": 0, "enable_wandb": False,
    }  # fmt: skip
    code = f"from img2dataset import download; download(**{json.dumps(kwargs)!s})"
    code = code.replace("true", "True").replace("false", "False")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    took, peak, cpu = timed([str(python), "-c", code], env=env, cwd=work)
    ok = failed = 0
    for stats in out.glob("*_stats.json"):
        data = json.loads(stats.read_text())
        ok += data["successes"]
        failed += data["failed_to_download"] + data["failed_to_resize"]
    return {"seconds": took, "ok": ok, "rows": ok + failed, "peak_rss": peak, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="600 images on 4 hosts")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS,
        help=f"fetch threads per process, both tools (default {THREADS})",
    )
    args = parser.parse_args()
    set_threads(args.threads)
    count, hosts, distinct = (600, 4, 60) if args.small else (5000, 8, 140)
    python = ensure_img2dataset()
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    server, urls = start_server(work, count, hosts, distinct)
    try:
        ours = run_tolpipe(work, urls)
        theirs = run_img2dataset(work, urls, python, per_shard=max(1, count // hosts))
    finally:
        server.terminate()
        server.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{count} URLs ({distinct} distinct images, {len(SIZES)} sizes from 160x120 to "
          f"4000x3000), {hosts} loopback hosts, 20 ms latency, {WORKERS} processes x {THREADS} "
          f"threads each; load average before: {os.getloadavg()[0]:.1f}")  # fmt: skip
    for name, r in (("tolpipe", ours), ("img2dataset", theirs)):
        rate = r["ok"] / r["seconds"]
        print(f"  {name:12s} {r['ok']:5d} images stored of {r['rows']} in {r['seconds']:6.1f} s "
              f"= {rate:6.1f} images/s; {r['cpu']:6.1f} CPU s = {r['ok'] / r['cpu']:5.1f} "
              f"images/CPU s; peak RSS {r['peak_rss'] / 2**20:5.0f} MiB")  # fmt: skip
    print(f"  tolpipe not ok: {ours['not_ok']}")
    ratio = (ours["ok"] / ours["seconds"]) / (theirs["ok"] / theirs["seconds"])
    cpu_ratio = (ours["ok"] / ours["cpu"]) / (theirs["ok"] / theirs["cpu"])
    print(
        f"  ratio tolpipe / img2dataset: {ratio:.2f}x images/s (goal >= {GOAL}x), "
        f"{cpu_ratio:.2f}x images per CPU second"
    )
    if ours["ok"] != theirs["ok"]:
        print(f"  note: stored counts differ ({ours['ok']} vs {theirs['ok']})")


if __name__ == "__main__":
    main()
