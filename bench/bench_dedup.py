"""Stage 05 dedup: PDQ hashing throughput, the radius search against brute force, and the MD5
table at 10M rows, in one run.

(1) PDQ hashing per core, JPEG decode included. Images: the 44 real photos of tests/data
    re-encoded as stage 02 stores them (longest side 720 px, JPEG quality 95, 4:2:0), repeated to
    `--images` (400) files, taken through 01 ingest, 02 download and 03 taxonomy by the real CLI
    (not timed; bench/filter_inputs.py), so the bytes are those of a real image store.
      (a) a bare loop over the JPEG bytes (already in memory): Pillow decode to RGB +
          pdqhash.compute, as a straightforward script would do it;
      (b) the stage's own path, stages/dedup/hashcache.hash_store: the image store streamed from
          its Parquet file a row group at a time, draft decode to luma, the canonical square,
          pdqhash.
    Both in this process on one thread, interleaved partition by partition (alternating which
    goes first) after one warm-up partition each. Images/s per core = images / wall seconds of
    one thread; CPU seconds are printed too, with the load other processes put on the machine.
(2) Radius search: `--tests` (100k) random test codes; `--queries` (1M) training codes, of which
    1% are test codes with 0..12 bits flipped (planted neighbours), the rest random. The index
    (build + search, one thread) against numpy brute force (XOR + popcount of every pair, in
    blocks), which is timed on a random sample of `--brute-sample` queries and scaled to all of
    them (printed as such). Pairs: the index's answer on the sample equals brute force's, the
    faiss and numpy indexes give the same pairs on all queries, and every planted neighbour
    within the radius is found.
(3) MD5 dedup: `--md5-rows` (10M) generated rows (uuid, md5) in Parquet partition files of 10k
    rows, 2% of them copies of another row's MD5 spread over the partitions; the stage's table
    (stages/dedup/md5_table.find_duplicates) run in a fresh process reading those files, once
    with the default memory budget (one pass) and once with a budget that forces 4 passes.
    Prints time, peak RSS (and the RSS after imports), passes and the groups found.

    python bench/bench_dedup.py [--images 400] [--partitions 8] [--tests 100000]
                                [--queries 1000000] [--brute-sample 2000] [--md5-rows 10000000]
                                [--work DIR] [--only pdq,search,md5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

RADIUS = 10
PLANTED_SHARE = 0.01
DUPLICATE_SHARE = 0.02
ROWS_PER_PARTITION = 10_000


def machine_busy() -> float:
    """CPU seconds (user + system) the whole machine has spent since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system = (int(v) for v in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timer:
    wall: float = 0.0
    cpu: float = 0.0
    images: int = 0

    def run(self, fn, *args) -> int:
        wall, cpu = time.perf_counter(), time.process_time()
        count = fn(*args)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.images += count
        return count


# ---- (1) PDQ hashing --------------------------------------------------------------------------


def bare_loop(jpegs: list[bytes]) -> int:
    import pdqhash
    from PIL import Image

    for data in jpegs:
        with Image.open(io.BytesIO(data)) as im:
            pdqhash.compute(np.asarray(im.convert("RGB")))
    return len(jpegs)


def stage_path(root: Path, index: int, uuids: set[str], settings) -> int:
    from stages.dedup.hashcache import hash_store

    return len(hash_store(root, index, uuids, settings))


def bench_pdq(work: Path, images: int, partitions: int) -> None:
    from bench.filter_inputs import build
    from pipeline.config import load_defaults
    from pipeline.joined import iter_images
    from pipeline.ledger import ManifestStore
    from stages.dedup.settings import HashSettings, hash_settings

    root, _ = build(work, images, partitions)
    settings: HashSettings = hash_settings(load_defaults()["dedup"])
    indices = sorted(ManifestStore(root, "02_download").committed_records())
    stores = {i: list(iter_images(root, i)) for i in indices}
    sizes = {len(j) for i in indices for _, j in stores[i]}
    print(f"(1) PDQ hashing: {sum(len(s) for s in stores.values())} stored JPEGs of a real image store "
          f"({len(indices)} partitions, {min(sizes) // 1024}-{max(sizes) // 1024} KiB, 720 px), one thread; "
          f"canonical {settings.canonical_px} px, draft factor {settings.draft_factor}")  # fmt: skip
    bare, ours = Timer(), Timer()
    warm = indices[0]
    bare_loop([j for _, j in stores[warm]])
    stage_path(root, warm, {u for u, _ in stores[warm]}, settings)
    busy = machine_busy()
    started = time.perf_counter()
    for n, index in enumerate(indices):
        jpegs, uuids = [j for _, j in stores[index]], {u for u, _ in stores[index]}
        steps = [(bare, bare_loop, (jpegs,)), (ours, stage_path, (root, index, uuids, settings))]
        for timer, fn, args in steps if n % 2 == 0 else steps[::-1]:
            timer.run(fn, *args)
    elapsed = time.perf_counter() - started
    others = machine_busy() - busy - (bare.cpu + ours.cpu)
    labels = (("(a) bare loop: decode RGB + pdqhash", bare), ("(b) stage: store -> canonical PDQ", ours))
    for label, t in labels:
        print(f"  {label:38s} {t.images / t.wall:7.1f} images/s per core (wall of one thread), "
              f"{1000 * t.wall / t.images:5.2f} ms/image; {t.images / t.cpu:7.1f} images per CPU "
              "second")  # fmt: skip
    print(f"  ratio (b)/(a): {(ours.images / ours.wall) / (bare.images / bare.wall):.2f}x "
          f"(goals: >= 250 images/s/core, >= 0.8x); other processes used {max(0.0, others) / elapsed:.2f} "
          "cores meanwhile")  # fmt: skip


# ---- (2) radius search ------------------------------------------------------------------------


def generated_codes(tests: int, queries: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test codes, query codes, and per planted query its source test row and flipped bits."""
    from stages.dedup.search import flipped

    rng = np.random.default_rng(seed)
    test_codes = rng.integers(0, 256, size=(tests, 32), dtype=np.uint8)
    query_codes = rng.integers(0, 256, size=(queries, 32), dtype=np.uint8)
    planted = int(queries * PLANTED_SHARE)
    where = rng.choice(queries, size=planted, replace=False)
    sources = rng.integers(0, tests, size=planted)
    bits = np.arange(planted) % 13
    for b in range(13):
        chosen = bits == b
        query_codes[where[chosen]] = flipped(test_codes[sources[chosen]], b, rng)
    return test_codes, query_codes, np.stack([where, sources, bits], axis=1)


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def bench_search(tests: int, queries: int, sample: int) -> None:
    from stages.dedup import faiss_index
    from stages.dedup.brute import brute_pairs
    from stages.dedup.mih import MultiIndexHash, layout
    from stages.dedup.search import same_pairs

    test_codes, query_codes, planted = generated_codes(tests, queries)
    substrings, bits = layout(RADIUS)
    print(f"(2) radius {RADIUS} search: {queries:,} training codes against {tests:,} test codes "
          f"({int(queries * PLANTED_SHARE):,} planted neighbours at 0..12 bits), one thread; "
          f"{substrings} substrings of {bits} bits")  # fmt: skip
    rng = np.random.default_rng(11)
    picked = np.sort(rng.choice(queries, size=sample, replace=False))
    brute, brute_s = timed(brute_pairs, query_codes[picked], test_codes, RADIUS)
    scaled = brute_s * queries / sample
    print(f"  numpy brute force: {brute_s:.2f} s for a random sample of {sample:,} queries "
          f"-> {scaled:,.0f} s scaled to all {queries:,} (sampled and scaled, not run in full)")  # fmt: skip
    backends = [("numpy multi-index hashing", MultiIndexHash)]
    if faiss_index.available():
        faiss_index.set_threads(1)
        backends.insert(0, ("faiss IndexBinaryMultiHash", faiss_index.FaissMultiHash))
    answers = {}
    for label, backend in backends:
        index, build_s = timed(backend.build, test_codes, RADIUS)
        pairs, search_s = timed(index.pairs, query_codes)
        answers[label] = pairs
        on_sample = index.pairs(query_codes[picked])
        total = build_s + search_s
        print(f"  {label:28s} build {build_s:5.2f} s + search {search_s:5.2f} s = {total:5.2f} s; "
              f"speed-up over brute force {scaled / total:,.0f}x (search alone {scaled / search_s:,.0f}x; "
              f"goal >= 200x); {len(pairs[0]):,} pairs; sample pairs identical to brute force: "
              f"{same_pairs(on_sample, brute)}")  # fmt: skip
    first = next(iter(answers.values()))
    if len(answers) == 2:
        print(f"  faiss and numpy indexes: identical pairs on all {queries:,} queries: "
              f"{same_pairs(*answers.values())}")  # fmt: skip
    found = set(zip(first[0].tolist(), first[1].tolist(), strict=True))
    within = planted[planted[:, 2] <= RADIUS]
    missed = sum((int(q), int(t)) not in found for q, t, _ in within)
    print(f"  planted neighbours within the radius found: {len(within) - missed:,} of {len(within):,}")


# ---- (3) MD5 table ----------------------------------------------------------------------------


def _hex(raw: np.ndarray) -> np.ndarray:
    table = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), np.uint8).reshape(256, 2)
    return table[raw].reshape(len(raw), -1)


def _strings(chars: np.ndarray):
    import pyarrow as pa

    n, width = chars.shape
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())])


def write_md5_rows(folder: Path, rows: int, seed: int = 3) -> dict[str, int]:
    """Partition files of (uuid, md5); returns the planted groups and duplicate rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    md5 = rng.integers(0, 256, size=(rows, 16), dtype=np.uint8)
    copies = rng.choice(rows, size=int(rows * DUPLICATE_SHARE), replace=False)
    md5[copies] = md5[rng.integers(0, rows, size=len(copies))]
    ids = _hex(rng.integers(0, 256, size=(rows, 16), dtype=np.uint8))
    dash = np.full((rows, 1), ord("-"), np.uint8)
    groups = [ids[:, :8], ids[:, 8:12], ids[:, 12:16], ids[:, 16:20], ids[:, 20:]]
    uuids = np.hstack([part for group in groups for part in (group, dash)][:-1])
    hexed = _hex(md5)
    folder.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, rows, ROWS_PER_PARTITION)):
        part = slice(start, start + ROWS_PER_PARTITION)
        table = pa.table({"uuid": _strings(uuids[part]), "md5": _strings(hexed[part])})
        pq.write_table(table, folder / f"part-{k:05d}.parquet", compression="zstd")
    _, counts = np.unique(md5.view("V16").ravel(), return_counts=True)
    return {"groups": int((counts > 1).sum()), "duplicates": int((counts[counts > 1] - 1).sum())}


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, which starts afresh at exec (getrusage's
    ru_maxrss would carry the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def md5_child(folder: Path, budget_mb: int) -> None:
    """In a fresh process: run the table over the files, print one JSON line."""
    import psutil
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from stages.dedup.md5_table import find_duplicates, passes_needed

    files = sorted(folder.glob("part-*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    def read(index: int):
        table = pq.read_table(files[index], columns=["uuid", "md5"])
        return table["uuid"].combine_chunks(), table["md5"].combine_chunks()

    baseline = psutil.Process().memory_info().rss
    started = time.perf_counter()
    groups = members = 0
    for table in find_duplicates(list(range(len(files))), read, rows, budget_mb * 2**20):
        kept = int(pc.sum(pc.equal(table["uuid"], table["kept"])).as_py() or 0)
        groups, members = groups + kept, members + table.num_rows
    elapsed = time.perf_counter() - started
    peak = peak_rss()
    print(json.dumps({"rows": rows, "seconds": elapsed, "peak_rss": peak, "baseline_rss": baseline,
                      "passes": passes_needed(rows, budget_mb * 2**20), "groups": groups,
                      "duplicates": members - groups}))  # fmt: skip


def bench_md5(work: Path, rows: int) -> None:
    from stages.dedup.md5_table import BYTES_PER_ROW

    folder = work / f"md5-{rows}"
    marker = folder / "planted.json"
    started = time.perf_counter()
    if not marker.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        marker_data = write_md5_rows(folder, rows)
        marker.write_text(json.dumps(marker_data))
    planted = json.loads(marker.read_text())
    print(f"(3) MD5 table: {rows:,} generated rows in {rows // ROWS_PER_PARTITION:,} Parquet files of "
          f"{ROWS_PER_PARTITION:,} rows ({planted['groups']:,} groups of copies, {planted['duplicates']:,} "
          f"duplicate rows; generated in {time.perf_counter() - started:.0f} s or reused), read back from "
          "disk by the table in a fresh process")  # fmt: skip
    small = max(1, -(-rows * BYTES_PER_ROW // 4 // 2**20))
    for budget in (4096, small):
        command = [sys.executable, __file__, "--md5-child", str(folder), "--budget-mb", str(budget)]
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        right = (r["groups"], r["duplicates"]) == (planted["groups"], planted["duplicates"])
        print(f"  budget {budget:5d} MiB: {r['passes']} pass(es), {r['seconds']:5.1f} s, peak RSS "
              f"{r['peak_rss'] / 2**20:6.0f} MiB (after imports {r['baseline_rss'] / 2**20:.0f} MiB); "
              f"{r['groups']:,} groups, {r['duplicates']:,} duplicates: as planted {right}")  # fmt: skip
    print(f"  at 200M rows: {200_000_000 * BYTES_PER_ROW / 2**30:.1f} GiB of key table in one pass "
          "(budget 4096 MiB), plus the candidate rows (the copies) of that pass")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--tests", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000_000)
    parser.add_argument("--brute-sample", type=int, default=2000)
    parser.add_argument("--md5-rows", type=int, default=10_000_000)
    parser.add_argument("--work", type=Path, help="folder for the root and generated files (kept)")
    parser.add_argument("--only", default="pdq,search,md5", help="comma-separated parts to run")
    parser.add_argument("--md5-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget-mb", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.md5_child:
        md5_child(args.md5_child, args.budget_mb)
        return 0
    try:
        import pdqhash  # noqa: F401
    except ImportError:
        print("skipped: needs the dedup extra (pip install 'tolpipe[dedup]')")
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parts = set(args.only.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    try:
        if "pdq" in parts:
            bench_pdq(work / "pdq", args.images, args.partitions)
        if "search" in parts:
            bench_search(args.tests, args.queries, args.brute_sample)
        if "md5" in parts:
            bench_md5(work, args.md5_rows)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
