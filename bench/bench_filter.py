"""Stage 04 filter throughput: the face filter (MTCNN) against a bare detect loop, in one run.

Images: the 44 real photos of tests/data (42 animals, 2 portraits) re-encoded as stage 02 stores
images (longest side 720 px, JPEG quality 95, 4:2:0; the shipped photos are 512 px at most, so
they are enlarged here to the stored size most downloads have), repeated to `--images` (800) as
files of their own, served by the loopback server and taken through 01 ingest, 02 download and
03 taxonomy by the real CLI (not timed; see bench/filter_inputs.py). All three measurements run
over the same bytes: the JPEGs of that root's image store.

  (a) baseline: a bare loop over the JPEG bytes, Pillow decode + `MTCNN.detect` one image at a
      time, as a straightforward filter script would do it;
  (b) tolpipe: `FaceDetector.score` over the same bytes in batches of `--batch-size` (decode
      included; the detector groups equal sizes for MTCNN's batched detect);
  (c) the stage end to end: `tolpipe run filter` on a copy of the root, as a subprocess with the
      default config (no embedder or MegaDetector configured, so only the face filter runs):
      process start, cluster start, model loads, reading the store, decisions, commits. The
      default local cluster has 2 workers, and the filter's are threads of the command's process
      (cluster.threaded_stages): torch imported and MTCNN loaded once;
  (d) the same command with 2 worker processes (`cluster.threaded_stages=[]`), each of which
      imports torch and loads MTCNN: (d) - (c) is what that costs, and whether processes score
      any faster once started.

(a) and (b) run in this process, interleaved batch by batch (alternating which goes first), a
third of the batches before (c), a third between (c) and (d) and a third after, so that all four
see the same machine load; their model loads and a warm-up batch are not timed. Prints images/s
and CPU figures of each; for (c) and (d) also of the run record's span, of the partitions alone
(first worker process start to last commit) and of the steady state (after each worker's first
commit: model loaded), from the commit times and the sampled CPU of the worker processes; their
timelines; the ratios against (a); peak RSS (this process with both models; the process trees of
(c) and (d)); whether (a)-(d) dropped the same images (the portraits); and a note when other
processes took CPU meanwhile (the figures are then not comparable: (a)'s two OpenMP threads
suffer most).
Without torch (the filters extra) it prints "skipped: needs the filters extra" and exits 0, since
`make bench` runs every bench.

    python bench/bench_filter.py [--images 800] [--partitions 8] [--batch-size 8] [--device cpu]
                                 [--threads N] [--work DIR] [--env KEY=VALUE]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

from bench.sampling import Proc, TreeSampler, children_cpu, workdir  # noqa: E402
from stages.filter.faces import FaceDetector, FaceSettings, face_drop  # noqa: E402

WARMUP = 8  # images scored before timing (first calls allocate and pick kernels)
FILTER = "04_filter"
PROCESSES = ("--set", "cluster.threaded_stages=[]")  # (d): the filter's workers as processes
# Images scored by default: (c) and (d) pay about 10 s once (torch import, model load, the first
# calls) that (a) does before timing: at 800 images (about 45 s of (a)) that is a fifth of the
# command, at 400 a third; a real run of millions of images never notices it.
IMAGES = 800
BUSY = 0.2  # cores other processes may use while timing before the figures are called unreliable


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def machine_busy() -> float:
    """CPU seconds all processes of this machine have used (all cores), from /proc/stat."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class Timer:
    """Wall and CPU seconds (all threads of this process) summed over the timed calls, the CPU
    seconds other processes used meanwhile, and the drop decision of every image timed, in order."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.others = 0.0
        self.drops: list[bool] = []

    def time(self, fn: Callable[[list[bytes]], list[bool]], chunk: list[bytes]) -> None:
        wall, cpu, busy = time.perf_counter(), time.process_time(), machine_busy()
        self.drops += fn(chunk)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.others += machine_busy() - busy - (time.process_time() - cpu)

    @property
    def images(self) -> int:
        return len(self.drops)


def baseline(settings: FaceSettings) -> Callable[[list[bytes]], list[bool]]:
    """(a) One image at a time, straight into MTCNN; returns the drop decisions."""
    from facenet_pytorch import MTCNN

    model = MTCNN(keep_all=True, thresholds=list(settings.stage_thresholds),
                  min_face_size=settings.min_face_px, device=settings.device)  # fmt: skip

    def run(chunk: list[bytes]) -> list[bool]:
        drops = []
        for data in chunk:
            _, probs = model.detect(decode(data))
            values = [float(p) for p in probs if p is not None]  # [None] when no face
            drops.append(any(v >= settings.face_threshold for v in values))
        return drops

    return run


def tolpipe(settings: FaceSettings) -> Callable[[list[bytes]], list[bool]]:
    """(b) FaceDetector.score on a decoded batch; returns the drop decisions."""
    detector = FaceDetector(settings)

    def run(chunk: list[bytes]) -> list[bool]:
        return [face_drop(s, settings) for s in detector.score([decode(d) for d in chunk])]

    return run


# ---- (c) the stage as a subprocess ------------------------------------------------------------


@dataclass
class Worker:
    """One process that computed partitions of (c) or (d): its commits as (epoch seconds, rows),
    in time order, and how many partitions it ran at once (its dask worker threads)."""

    pid: int
    commits: list[tuple[float, int]] = field(default_factory=list)
    at_once: int = 1

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.commits)

    def steady(self) -> tuple[int, float]:
        """Rows and seconds after its first round of commits (models loaded, everything warm)."""
        first = self.at_once
        if len(self.commits) <= first:
            return 0, 0.0
        return sum(r for _, r in self.commits[first:]), self.commits[-1][0] - self.commits[first - 1][0]


@dataclass
class StageRun:
    launched: float  # epoch seconds
    wall: float
    cpu: float  # user + system of the whole tree (reaped children)
    others: float  # CPU seconds other processes of the machine used meanwhile (this one's included)
    sampler: TreeSampler
    record: dict
    workers: list[Worker]
    statuses: dict[str, int]
    dropped: set[str]

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.workers)

    def epoch(self, key: str) -> float:
        return datetime.fromisoformat(self.record[key]).timestamp()


def commits(root: Path, at_once: int) -> list[Worker]:
    """04's committed partitions grouped by the process that computed them."""
    from pipeline.ledger import ManifestStore

    store = ManifestStore(root, FILTER)
    workers: dict[int, Worker] = {}
    for index, record in store.committed_records().items():
        pid = int(record["computed_on"]["pid"])
        worker = workers.setdefault(pid, Worker(pid, at_once=at_once))
        worker.commits.append((store.record_path(index).stat().st_mtime, int(record["rows"])))
    for worker in workers.values():
        worker.commits.sort()
    return sorted(workers.values(), key=lambda w: w.commits[0][0])


def run_stage(
    work: Path, built: Path, cli_args: list[str], device: str, batch_size: int, env: dict[str, str],
    extra: tuple[str, ...] = (),
) -> StageRun:  # fmt: skip
    """(c) or (d): `tolpipe run filter` on a fresh copy of the 01 -> 03 root, timed and sampled."""
    from bench.filter_inputs import stage_drops
    from pipeline.runrecord import read_runs

    root = work / "root-04"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(built, root)
    cmd = [sys.executable, "-m", "pipeline.cli", "--root", str(root), *cli_args,
           "--set", f"filter.device={device}", "--set", f"filter.batch_size={batch_size}",
           *extra, "run", "filter"]  # fmt: skip
    cpu, busy, launched, started = children_cpu(), machine_busy(), time.time(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    sampler = TreeSampler(proc.pid)
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    sampler.finish(launched)
    if proc.returncode != 0:
        raise SystemExit(f"tolpipe run filter failed ({proc.returncode}):\n{output[-3000:]}")
    cpu, busy = children_cpu() - cpu, machine_busy() - busy
    statuses, dropped = stage_drops(root, FILTER)
    record = read_runs(root, FILTER)[-1]
    return StageRun(launched, wall, cpu, busy - cpu, sampler, record, commits(root, at_once(record)),
                    statuses, dropped)  # fmt: skip


def at_once(record: dict) -> int:
    """Partitions one process of the run computed at once: its dask worker threads."""
    from pipeline.executors import stage_cluster

    cluster = stage_cluster(record["config"]["cluster"], "filter")
    threads = int(cluster["threads_per_worker"])
    return threads if cluster["local_processes"] else threads * int(cluster["workers"])


# ---- reporting ---------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def report(label: str, t: Timer) -> float:
    rate = t.images / t.wall
    print(f"  {label:36s} {rate:6.1f} images/s = {1000 / rate:6.1f} ms/image wall, "
          f"{1000 * t.cpu / t.images:6.1f} CPU ms/image; dropped {sum(t.drops)}; other processes "
          f"used {t.others / t.wall:.2f} cores meanwhile")  # fmt: skip
    return rate


def report_stage(label: str, c: StageRun) -> dict[str, float]:
    """Prints the figures of (c) or (d); returns its images/s by span."""
    from pipeline.executors import stage_cluster

    cluster, params = stage_cluster(c.record["config"]["cluster"], "filter"), c.record["config"]["filter"]
    kind = "processes" if cluster["local_processes"] else "threads of the command's process"
    first_start = min(c.sampler.procs[w.pid].started for w in c.workers if w.pid in c.sampler.procs)
    last_commit = max(w.commits[-1][0] for w in c.workers)
    steady = sum(rows / secs for rows, secs in (w.steady() for w in c.workers) if secs > 0)
    rates = {
        "whole command": c.rows / c.wall,
        "run record": c.rows / c.record["elapsed_s"],
        "partitions": c.rows / (last_commit - first_start),
    }
    print(f"  {label} tolpipe run filter: local cluster of {cluster['workers']} workers x "
          f"{cluster['threads_per_worker']} thread, {kind}, "
          f"filter.torch_threads {params['torch_threads']}, batch {params['batch_size']}, "
          f"{c.record['partitions_computed']} partitions, {c.rows} rows {c.statuses}")  # fmt: skip
    print(f"      whole command            {rates['whole command']:6.1f} images/s ({c.wall:.1f} s); "
          f"{c.cpu:.1f} CPU s of the tree = {1000 * c.cpu / c.rows:.1f} CPU ms/image; other processes "
          f"used {c.others / c.wall:.2f} cores meanwhile")  # fmt: skip
    print(f"      run record (elapsed_s)   {rates['run record']:6.1f} images/s "
          f"({c.record['elapsed_s']:.1f} s: cluster start and close, model loads, partitions)")  # fmt: skip
    print(f"      partitions               {rates['partitions']:6.1f} images/s "
          f"({last_commit - first_start:.1f} s from the first start of a process that computed "
          "partitions to the last commit)")  # fmt: skip
    if steady > 0:  # some worker committed twice
        rates["steady"] = steady
        print(f"      steady partitions        {steady:6.1f} images/s (after each worker's first commit, "
              f"summed over processes); the command's fixed costs beyond that work: "
              f"{c.wall - c.rows / steady:.1f} s")  # fmt: skip
    report_timeline(c, first_start, last_commit)
    return rates


def worker_line(w: Worker, seen: Proc | None) -> str:
    """Start-up, steady rate and CPU per image, peak RSS of one worker process."""
    if seen is None:
        return "not sampled"
    first = f"process start -> first commit {w.commits[0][0] - seen.started:.1f} s ({w.commits[0][1]} rows)"
    rows, secs = w.steady()
    if secs <= 0:
        return f"{first}; peak RSS {mib(seen.peak_rss)}"
    cpu = seen.cpu_at(w.commits[-1][0]) - seen.cpu_at(w.commits[w.at_once - 1][0])
    per_partition = secs * w.at_once / (len(w.commits) - w.at_once)
    return (f"{first}, then {per_partition:.1f} s/partition = {rows / secs:.1f} images/s, "
            f"{1000 * cpu / rows:.0f} CPU ms/image ({cpu / secs:.2f} cores busy); "
            f"peak RSS {mib(seen.peak_rss)}")  # fmt: skip


def report_timeline(c: StageRun, first_start: float, last_commit: float) -> None:
    at = lambda t: f"{t - c.launched:.1f}"  # noqa: E731 - seconds after launch
    worker_pids = {w.pid for w in c.workers}
    print(f"      timeline (s after launch): run record started {at(c.epoch('started_utc'))}, "
          f"first worker process {at(first_start)}, first commit "
          f"{at(min(w.commits[0][0] for w in c.workers))}, last commit {at(last_commit)}, "
          f"run record ended {at(c.epoch('ended_utc'))}, exit {c.wall:.1f}")  # fmt: skip
    for w in c.workers:
        seen = c.sampler.procs.get(w.pid)
        who = f"process {w.pid} ({w.at_once} worker threads)" if w.at_once > 1 else f"worker {w.pid}"
        print(f"      {who}: {len(w.commits)} partitions, {w.rows} rows; {worker_line(w, seen)}")
    driver = c.sampler.procs.get(c.sampler.pid)
    others = [p for pid, p in c.sampler.procs.items() if pid not in worker_pids and p is not driver]
    print(f"      peak RSS of the process tree {mib(c.sampler.peak)} (driver "
          f"{mib(driver.peak_rss) if driver else '?'}, {len(others)} other processes "
          f"{mib(sum(p.peak_rss for p in others))})")  # fmt: skip


def check_drops(names: list[str], timers: dict[str, Timer], stages: dict[str, StageRun]) -> None:
    from bench.filter_inputs import photo_of, portrait_names

    found = {key: {n for n, d in zip(names, t.drops, strict=True) if d} for key, t in timers.items()}
    found |= {key: run.dropped for key, run in stages.items()}
    portraits = {n for n in names if photo_of(n) in portrait_names()}
    same = all(found[key] == found["a"] for key in found)
    by_photo = Counter(photo_of(n) for n in found["c"])
    counts = ", ".join(f"({key}) {len(found[key])}" for key in sorted(found))
    print(f"  drops: {counts} images ({', '.join(f'{k} x{v}' for k, v in sorted(by_photo.items()))} in (c)); "
          f"the same images: {same}; exactly the portraits: {found['c'] == portraits}")  # fmt: skip
    for key in sorted(found)[1:]:
        if found[key] != found["a"]:
            print(f"  note: ({key}) differs from (a): only ({key}) {sorted(found[key] - found['a'])[:5]}, "
                  f"only (a) {sorted(found['a'] - found[key])[:5]}")  # fmt: skip


def rounds(images: list[bytes], size: int) -> list[list[bytes]]:
    return [images[start : start + size] for start in range(0, len(images), size)]


def interleaved(methods: dict, timers: dict[str, Timer], chunks: list[list[bytes]], offset: int) -> None:
    """Each chunk through every method, alternating which goes first: the same machine load."""
    for round_, chunk in enumerate(chunks, offset):
        for key in sorted(methods, reverse=bool(round_ % 2)):
            timers[key].time(methods[key], chunk)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=IMAGES, help=f"images scored (default {IMAGES})")
    parser.add_argument("--partitions", type=int, default=8, help="about this many 04 partitions (8)")
    parser.add_argument("--batch-size", type=int, default=FaceSettings.batch_size)
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads of (a), (b) (default: torch's)")
    parser.add_argument("--work", type=Path, help="build the root here and keep it (reused when it fits)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of (c)'s command (e.g. MALLOC_MMAP_THRESHOLD_=67108864)",
    )
    return parser.parse_args()


@dataclass
class Results:
    names: list[str]  # source_id of every stored image, in the order (a) and (b) scored them
    timers: dict[str, Timer]
    stages: dict[str, StageRun]  # "c": the default command, "d": with worker processes
    load: float  # load average before timing


def measure(args: argparse.Namespace, settings: FaceSettings, env: dict[str, str]) -> Results:
    """Builds the root, then (a) and (b) interleaved, a third of their batches before (c), a third
    between (c) and (d), a third after."""
    from bench.filter_inputs import build, stored_images

    with workdir(args.work, "bench-filter-") as work:
        built, cli_args = build(work, args.images, args.partitions)
        stored = stored_images(built)
        images = [s.jpeg for s in stored]
        methods = {"a": baseline(settings), "b": tolpipe(settings)}
        for run in methods.values():  # warm-up, not timed: first calls allocate and pick kernels
            run(images[:WARMUP])
        timers = {key: Timer() for key in methods}
        chunks = rounds(images, args.batch_size)
        third = len(chunks) // 3
        load = os.getloadavg()[0]
        stages = {}
        for step, (key, extra) in enumerate((("c", ()), ("d", PROCESSES))):
            interleaved(methods, timers, chunks[step * third : (step + 1) * third], step * third)
            stages[key] = run_stage(work, built, cli_args, args.device, args.batch_size, env, extra)
        interleaved(methods, timers, chunks[2 * third :], 2 * third)
    return Results([s.name for s in stored], timers, stages, load)


def report_all(args: argparse.Namespace, settings: FaceSettings, env: dict[str, str], r: Results) -> None:
    import torch

    from bench.filter_inputs import STORED_SIDE

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(f"face filter (MTCNN, stages {settings.stage_thresholds}, min face {settings.min_face_px} px, "
          f"drop at any box >= {settings.face_threshold}): {len(r.names)} stored images (44 real photos "
          f"at {STORED_SIDE} px, repeated), device {args.device}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads in (a) and (b), load average {r.load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")  # fmt: skip
    a, b = r.timers["a"], r.timers["b"]
    rate_a = report("(a) bare loop: decode + detect x1", a)
    rate_b = report(f"(b) FaceDetector.score, batch {args.batch_size}", b)
    rates = {key: report_stage(f"({key})", run) for key, run in r.stages.items()}
    if env:
        print(f"      (c) and (d) ran with the extra environment {env}")
    print(f"  ratio (b)/(a): {rate_b / rate_a:.2f}x images/s, {a.cpu / b.cpu:.2f}x images per CPU second")
    for key, run in r.stages.items():
        ratios = ", ".join(f"{k} {v / rate_a:.2f}x" for k, v in rates[key].items())
        goal = " (goal >= 0.8x)" if key == "c" else ""
        print(f"  ratio ({key})/(a){goal}: {ratios} images/s; whole command "
              f"{(run.rows / run.cpu) / (a.images / a.cpu):.2f}x images per CPU second")  # fmt: skip
    trees = ", ".join(f"({key}) process tree {mib(run.sampler.peak)}" for key, run in r.stages.items())
    print(f"  peak RSS: this process ((a) and (b) models loaded) {mib(peak)}; {trees}")
    check_drops(r.names, r.timers, r.stages)
    busy = max(a.others / a.wall, *(run.others / run.wall for run in r.stages.values()))
    if busy > BUSY:
        print(f"  note: other processes used up to {busy:.2f} cores while timing: the figures and ratios are "
              "not reliable ((a)'s OpenMP threads slow down most when a core is taken)")  # fmt: skip


def main() -> None:
    args = parse_args()
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("facenet_pytorch") is None:
        print("skipped: needs the filters extra (pip install -e '.[filters]')")
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = FaceSettings(batch_size=args.batch_size, device=args.device)
    env = dict(item.split("=", 1) for item in args.env)
    report_all(args, settings, env, measure(args, settings, env))


if __name__ == "__main__":
    main()
