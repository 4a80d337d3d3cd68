"""Ingest throughput and memory: tolpipe's streaming ingest vs a whole-file pandas load.

Generates `table` sources of 100k and 1M rows (20 hosts, one host holding half of the rows, 1% of
URLs repeated), runs `tolpipe run ingest` on each (a real LocalCluster, 2 worker processes), and
prints rows/s and peak RSS of the whole process tree (driver + dask workers, sampled every 50 ms).
The baseline, measured in the same run, is what the streaming design replaces: pandas.read_csv of
the whole file plus a groupby by host.

Ingest's memory is bounded by its shuffle settings, not by the input: one classify task holds one
occurrence bucket (`ingest.occurrence_bucket_mb` of input), one dedup task one host sub-bucket
(`ingest.shuffle_rows` rows). The bench sets both small (SETTINGS) so that already the 100k input
fills them; memory must then stay flat from 100k to 1M rows.

    python bench/bench_ingest.py [--small | --rows 100000,1000000,3000000]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

from bench.sampling import TreeSampler  # noqa: E402


def generate(path: Path, rows: int, hosts: int = 20) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "source_id", "provider", "occurrence_id", "scientific_name",
                         "kingdom", "class", "license", "publisher"])  # fmt: skip
        for i in range(rows):
            j = i - 1 if i % 100 == 99 else i  # 1% of rows repeat the previous row's URL
            host = 0 if j % 2 == 0 else 1 + j % (hosts - 1)
            writer.writerow([f"https://media{host}.example.org/photos/{j}/original.jpg", f"r{i}",
                             "bench", f"occ{i // 3}", "Bubo bubo", "Animalia", "Aves",
                             "CC-BY", "iNaturalist.org"])  # fmt: skip
    return path


def measure(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid, interval=0.05)
    _, err = proc.communicate()
    peak = sampler.finish()
    if proc.returncode:
        sys.exit(f"command failed: {cmd}\n{err.decode()}")
    return time.perf_counter() - start, peak


SETTINGS = ["--set", "ingest.occurrence_bucket_mb=2", "--set", "ingest.shuffle_rows=25000"]

BASELINE = """
import sys, pandas as pd
frame = pd.read_csv(sys.argv[1], dtype=str)
frame["host"] = frame["url"].str.extract(r"^https?://([^/]+)")[0]
frame = frame.drop_duplicates("url")
for _, group in frame.groupby("host"):
    group.to_parquet("/dev/null")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="10k and 100k rows instead")
    parser.add_argument("--rows", type=lambda v: [int(n) for n in v.split(",")],
                        help="comma-separated input sizes instead, e.g. 100000,1000000,3000000")  # fmt: skip
    args = parser.parse_args()
    sizes = args.rows or ([10_000, 100_000] if args.small else [100_000, 1_000_000])
    print("tolpipe settings:", " ".join(SETTINGS[1::2]))
    print(f"{'rows':>10} {'tolpipe rows/s':>15} {'tolpipe peak RSS':>17} "
          f"{'pandas rows/s':>14} {'pandas peak RSS':>16} {'speed ratio':>12} {'RSS ratio':>10}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            source = generate(Path(tmp) / f"urls-{rows}.csv", rows)
            root = Path(tmp) / f"root-{rows}"
            ours_s, ours_rss = measure([
                sys.executable, "-m", "pipeline.cli", "--root", str(root), "--set", "run.progress=false",
                *SETTINGS, "run", "ingest", "--source", f"table:{source}",
            ])  # fmt: skip
            base_s, base_rss = measure([sys.executable, "-c", BASELINE, str(source)])
            print(f"{rows:>10,} {rows / ours_s:>15,.0f} {ours_rss / 2**20:>14,.0f} MiB "
                  f"{rows / base_s:>14,.0f} {base_rss / 2**20:>13,.0f} MiB "
                  f"{base_s / ours_s:>11.2f}x {ours_rss / base_rss:>9.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
