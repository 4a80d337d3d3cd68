"""Inputs of bench/bench_shard.py: a work root built 01 -> 05 through the real CLI with `count`
rows, each with an image of its own.

Rows cycle through the lineages of the shipped photo corpus (03 resolves them against the
corpus backbone of tests/support/shard_root.py), two providers and HOSTS hosts. Images are made
by the loopback server's generator (photo-like: colour fields and fine noise): SEEDS distinct
images per size, each row's file that image with a JPEG comment naming the row, so every row
has bytes of its own (05 drops MD5 duplicates) without encoding `count` images. Sizes cycle
through one of two lists, both at or under 02's 720 px (stored as they are): SMALL (about 40 KB
stored: many samples on little disk, for the memory runs) and STORED (720 px on the long side,
as 02 stores most images, about 120 KB: the throughput run). The files are served from a folder
and removed once 02 has stored them. Stage 04 runs with every filter's scope empty and 05 with
no test set and PDQ's scope empty (the bench measures sharding, not filtering): 05 drops MD5
duplicates only, and there are none.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from tests.conftest import cli
from tests.support.loopback_server import ImageFactory, LoopbackServer
from tests.support.photo_corpus import RANKS, load_corpus
from tests.support.pipeline_root import settings
from tests.support.shard_root import PROVIDERS, build_corpus_dump, with_comment

HOSTS = 2
SEEDS = 61  # distinct generated images per size
SMALL = [(400, 300), (300, 400), (448, 299), (360, 360)]
STORED = [(720, 540), (540, 720), (720, 480), (720, 405)]
SIZES = {"small": SMALL, "stored": STORED}
# ingest.batch_size: upstream partitions of 5,000 rows at every size measured (10,000 rows on 2
# hosts: 2 partitions; 100,000 rows: 20), so that the sizes differ in rows only, not in how much
# one task holds (a task holds one upstream partition: at most ingest.batch_size rows).
BATCH = 5_000
BUILT = "built.txt"  # in a finished root: the row count it was built for
FIELDS = ["url", "source_id", "provider", "scientific_name", *RANKS, "license", "rights_holder"]
NO_FILTERS = [arg for name in ("face", "camera_trap", "museum", "occurrence")
              for arg in ("--set", f"filter.{name}_image_types=[]")]  # fmt: skip
NO_FILTERS += ["--set", "dedup.pdq_image_types=[]"]
JPEG_QUALITY = 90  # of the generated originals (the server's)


def write_files(folder: Path, count: int, sizes: list[tuple[int, int]]) -> list[str]:
    """`count` files, row i's a generated image of size i % len(sizes) with a comment naming it."""
    folder.mkdir(parents=True)
    bases = {(seed, size): ImageFactory.render(seed, *size, "jpg", 0, JPEG_QUALITY)
             for seed in range(SEEDS) for size in sizes}  # fmt: skip
    names = []
    for i in range(count):
        name = f"{i:06d}.jpg"
        (folder / name).write_bytes(with_comment(bases[(i % SEEDS, sizes[i % len(sizes)])], f"row {i}"))
        names.append(name)
    return names


def write_source(path: Path, names: list[str], server: LoopbackServer) -> Path:
    photos = load_corpus()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for i, name in enumerate(names):
            photo = photos[i % len(photos)]
            writer.writerow({"url": server.url(i % HOSTS, f"/files/{name}"), "source_id": f"row-{i}",
                             "provider": PROVIDERS[i % 2], "scientific_name": photo.scientific_name,
                             **photo.ranks, "license": photo.license,
                             "rights_holder": photo.author})  # fmt: skip
    return path


def build(work: Path, count: int, sizes: str = "small") -> tuple[Path, list[str]]:
    """A root of `count` rows of images of SIZES[sizes] built 01 -> 05 under
    work/root-<count>-<sizes> (reused when already built); returns it and the --set arguments
    later runs of it use."""
    root = work / f"root-{count}-{sizes}"
    args = settings(build_corpus_dump(work / "backbone.zip"), batch_size=BATCH) + NO_FILTERS
    args += ["--set", "download.concurrency=16", "--set", "download.rate_per_host=2000.0",
             "--set", "download.rate_ceiling=4000.0", "--set", "download.burst=200.0"]  # fmt: skip
    stamp = f"{count} rows on {HOSTS} hosts, ingest.batch_size {BATCH}, 01 -> 05\n"
    if (root / BUILT).is_file() and (root / BUILT).read_text() == stamp:
        return root, args
    files = work / f"files-{count}-{sizes}"
    for old in (root, files):
        shutil.rmtree(old, ignore_errors=True)
    root.mkdir(parents=True)
    names = write_files(files, count, SIZES[sizes])
    with LoopbackServer(hosts=HOSTS, folder=files) as server:
        table = write_source(work / f"rows-{count}-{sizes}.csv", names, server)
        cli(root, *args, "run", "ingest", "--source", f"table:{table}", processes=True, timeout=3600)
        cli(root, *args, "run", "download", processes=True, timeout=3600)
    shutil.rmtree(files)
    for stage in ("taxonomy", "filter", "dedup"):
        cli(root, *args, "run", stage, processes=True, timeout=3600)
    (root / BUILT).write_text(stamp)
    return root, args
