"""Stage 02 on local images (a BIOSCAN-5M-style zip read in place) against a bare
decode-resize-encode loop over the same files, in one run on this machine.

Images: the shipped photos of the demo corpus (512 px long side), each written in several sizes
and crops (`--images`, default 400): as they are (decode and re-encode only), enlarged to 1440 px
and to 2048 px long side (shrunk back to 720 px by both loops), as JPEG quality 90 members
`bioscan5m/images/original_full/<split>/<chunk>/<processid>.jpg` of an uncompressed zip, with a
BIOSCAN-5M metadata CSV (the published columns). Building them is not timed.

  (a) baseline: a bare loop in this process, one image at a time: read the member from the
      zip, Pillow decode, box resize to 720 px long side, JPEG quality 95 encode, MD5 of both
      byte strings, as a straightforward conversion script would do it;
  (b) 02's local reader in this process: `stages.download.local.read_local` over the same rows
      (its `download.local_threads` threads, the same image rules and spool as the stage) plus
      writing the image store, i.e. a partition's work without the run around it;
  (c) the stage end to end: `tolpipe run download` as a subprocess on a root whose 01 was
      ingested from the zip (not timed): process start, dask cluster start (the default local
      cluster: 2 worker processes), planning, partitions, commits;
  (d) the same command on a copy of that root with `cluster.local_processes = false` (dask
      workers are threads of the command's process): (c) - (d) is the cost of starting worker
      processes, which does not grow with the images.

(a) runs in two halves, before and after (b) and (c), so all see the same machine load. Prints
images/s of each, the ratios (b)/(a) and (c)/(a) (goal: >= 0.8), CPU seconds, and a note when
other processes took CPU meanwhile (this machine's cores are shared).

    python bench/bench_local.py [--images 400] [--threads 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.sampling import children_cpu, own_cpu, workdir  # noqa: E402
from demo.corpus import corpus_dir  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from stages.download.local import read_local  # noqa: E402
from stages.download.manifest import RowInput  # noqa: E402
from stages.download.settings import load_settings  # noqa: E402
from stages.download.store import Spool, write_store  # noqa: E402

GOAL = 0.8
# Long side of each size variant (None: the photo as shipped).
VARIANT_SIDES = (None, 1440, 2048)
SOURCE_QUALITY = 90
MAX_SIDE = 720  # download.max_side
STORED_QUALITY = 95  # download.jpeg_quality
BATCH_SIZE = 100  # ingest.batch_size: partitions of the stage run
IMAGE_TYPE = "original_full"
HEADER = ("processid", "sampleid", "taxon", "phylum", "class", "order", "family", "subfamily", "genus",
          "species", "dna_bin", "dna_barcode", "country", "province_state", "coord-lat", "coord-lon",
          "image_measurement_value", "area_fraction", "scale_factor", "inferred_ranks", "split",
          "index_bioscan_1M_insect", "chunk")  # fmt: skip


def variant(photo: Image.Image, side: int | None, crop: int) -> bytes:
    im = photo.crop((crop, crop, photo.width - crop, photo.height - crop))
    if side is not None:
        scale = side / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=SOURCE_QUALITY)
    return out.getvalue()


def build(folder: Path, n: int) -> tuple[Path, Path, list[str]]:
    """The zip and metadata CSV; returns their paths and the member names in row order."""
    photos = [Image.open(p).convert("RGB") for p in sorted(corpus_dir().glob("*.jpg"))]
    archive, metadata = folder / "BIOSCAN_5M_original_full.zip", folder / "metadata.csv"
    members = []
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf, open(metadata, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(n):
            photo = photos[i % len(photos)]
            side = VARIANT_SIDES[(i // len(photos)) % len(VARIANT_SIDES)]
            crop = i // (len(photos) * len(VARIANT_SIDES))
            pid = f"BENCH{i:05d}-22"
            chunk = hashlib.md5(pid.encode()).hexdigest()[0]
            member = f"bioscan5m/images/{IMAGE_TYPE}/train/{chunk}/{pid}.jpg"
            zf.writestr(member, variant(photo, side, crop))
            members.append(member)
            row = {"processid": pid, "taxon": "Apis mellifera", "split": "train", "chunk": chunk}
            writer.writerow([row.get(h, "") for h in HEADER])
    return archive, metadata, members


def bare(archive: Path, members: list[str]) -> int:
    """(a): one image at a time; returns the images kept."""
    kept = 0
    with zipfile.ZipFile(archive) as zf:
        for member in members:
            data = zf.read(member)
            im = Image.open(io.BytesIO(data)).convert("RGB")
            scale = min(1.0, MAX_SIDE / max(im.size))
            if scale < 1.0:
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BOX)
            out = io.BytesIO()
            im.save(out, "JPEG", quality=STORED_QUALITY, subsampling=2)
            hashlib.md5(data).hexdigest()
            hashlib.md5(out.getvalue()).hexdigest()
            kept += 1
    return kept


def local_reader(archive: Path, members: list[str], threads: int, work: Path) -> int:
    """(b): 02's local path over the same rows, then the store file."""
    params = dict(load_config(work / "reader-root")["download"], local_threads=threads)
    settings = load_settings(params)
    rows = {i: RowInput(f"u{i}", f"local://{archive.name}/{m}", archive.name, str(archive), m)
            for i, m in enumerate(members)}  # fmt: skip
    spool = Spool(work / "bench.spool")
    try:
        finals = read_local(rows, settings, spool, None)
        kept = [(rows[i].uuid, spool.read(*f.spooled)) for i, f in sorted(finals.items()) if f.spooled]
        write_store(work / "bench-store.parquet", kept, settings.store_row_group_rows)
    finally:
        spool.close()
    return len(kept)


def tolpipe(root: Path, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "--root", str(root), *args], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"tolpipe {' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - started


def busy_cpu() -> float:
    """CPU seconds spent by every process of the machine so far (not idle, not waiting)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def main() -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2, help="download.local_threads for (b) and (c)")
    parser.add_argument("--work", type=Path, help="keep inputs and roots here (default: a temp folder)")
    args = parser.parse_args()
    with workdir(args.work, "bench-local-") as work:
        data = work / "bioscan"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        archive, metadata, members = build(data, args.images)
        half = len(members) // 2
        root = work / "root"
        shutil.rmtree(root, ignore_errors=True)
        common = ["--set", f"ingest.batch_size={BATCH_SIZE}", "--set", "run.progress=false",
                  "--set", f"download.local_threads={args.threads}"]  # fmt: skip
        tolpipe(root, *common, "--set", f'ingest.bioscan_images="{archive.name}"', "run", "ingest",
                "--source", f"bioscan:{metadata}")  # fmt: skip
        threaded = work / "root-threads"
        shutil.rmtree(threaded, ignore_errors=True)
        shutil.copytree(root, threaded)
        busy_before, mine_before = busy_cpu(), own_cpu() + children_cpu()

        cpu0, t0 = own_cpu(), time.perf_counter()
        kept_a = bare(archive, members[:half])
        a_first = (time.perf_counter() - t0, own_cpu() - cpu0)

        cpu0, t0 = own_cpu(), time.perf_counter()
        kept_b = local_reader(archive, members, args.threads, work)
        b_time, b_cpu = time.perf_counter() - t0, own_cpu() - cpu0

        cpu0 = children_cpu()
        c_time = tolpipe(root, *common, "run", "download")
        c_cpu = children_cpu() - cpu0

        cpu0 = children_cpu()
        d_time = tolpipe(threaded, *common, "--set", "cluster.local_processes=false", "run", "download")
        d_cpu = children_cpu() - cpu0

        cpu0, t0 = own_cpu(), time.perf_counter()
        kept_a += bare(archive, members[half:])
        a_time = a_first[0] + time.perf_counter() - t0
        a_cpu = a_first[1] + own_cpu() - cpu0
        others = busy_cpu() - busy_before - (own_cpu() + children_cpu() - mine_before)

    n = len(members)
    rate_a, rate_b, rate_c, rate_d = n / a_time, n / b_time, n / c_time, n / d_time
    print(f"images: {n} ({len(VARIANT_SIDES)} sizes of {len(list(corpus_dir().glob('*.jpg')))} photos), "
          f"kept: bare {kept_a}, reader {kept_b}; {os.cpu_count()} cores")  # fmt: skip
    print(f"  (a) bare decode-resize-encode loop  {rate_a:7.1f} images/s  "
          f"{a_cpu / n * 1000:6.1f} ms CPU/image")  # fmt: skip
    print(f"  (b) 02 local reader ({args.threads} threads)    {rate_b:7.1f} images/s  "
          f"{b_cpu / n * 1000:6.1f} ms CPU/image  ratio {rate_b / rate_a:.2f} (goal >= {GOAL})")  # fmt: skip
    print(f"  (c) tolpipe run download (command)  {rate_c:7.1f} images/s  "
          f"{c_cpu / n * 1000:6.1f} ms CPU/image  ratio {rate_c / rate_a:.2f}; "
          f"fixed costs beyond (b)'s work: {c_time - b_time:.1f} s, {c_cpu - b_cpu:.1f} CPU s")  # fmt: skip
    print(f"  (d) the same, worker threads          {rate_d:7.1f} images/s  "
          f"{d_cpu / n * 1000:6.1f} ms CPU/image  ratio {rate_d / rate_a:.2f}; "
          f"fixed costs beyond (b)'s work: {d_time - b_time:.1f} s, {d_cpu - b_cpu:.1f} CPU s")  # fmt: skip
    share = others / ((a_time + b_time + c_time + d_time) * (os.cpu_count() or 1))
    if share > 0.1:
        print(f"  note: other processes took {share:.0%} of the machine's CPU meanwhile: the figures "
              "are not comparable with a quiet machine's")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
