"""Rebuild the shipped photo corpus (demo/data/photos/) from the Debian package gcompris-qt-data.

The package stores real animal photos, with their Wikimedia credits, inside Qt resource
collection bundles (`.rcc`). This one-off, re-runnable script downloads the package with apt (no
other network), reads the bundles, keeps the public-domain / CC0 photos listed in SELECTION,
converts them to JPEG no larger than LONGEST_SIDE and writes CREDITS.csv next to them.

    .venv/bin/python demo/extract_gcompris.py            # apt-get download
    .venv/bin/python demo/extract_gcompris.py --deb FILE  # an already downloaded .deb

Photos whose shortest side would fall below MIN_SHORT_SIDE are skipped and listed, never upscaled.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

PACKAGE = "gcompris-qt-data"
# Where the bundles live inside the package.
RCC_DIR = Path("usr/share/gcompris-qt/rcc")
# Longest side (px) of a shipped photo: keeps the corpus to a few MB.
LONGEST_SIDE = 512
# JPEG quality of a shipped photo.
JPEG_QUALITY = 90
# Stage 02's default `download.min_side` (TreeOfLife-200M: 224 px): smaller photos would be
# dropped `too_small`, so they are not shipped as examples of valid images.
MIN_SHORT_SIDE = 224
# Licences of the package README that may be shipped, mapped to the corpus spelling.
SHIPPABLE_LICENCES = {"public domain": "public domain", "cc0-1.0": "CC0-1.0"}
CREDITS_COLUMNS = (
    "file", "scientific_name", "kingdom", "phylum", "class", "order", "family", "genus",
    "species", "common_name", "license", "author", "source", "origin",
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Qt resource collection (.rcc) reader
#
# Layout (qtbase src/corelib/io/qresource.cpp, tools/rcc/rcc.cpp), all integers big-endian:
#   header: b"qres", u32 version, u32 tree offset, u32 data offset, u32 names offset,
#           and from version 3 a u32 of flags used anywhere in the file.
#   tree:   fixed-size nodes (14 bytes in version 1, 22 from version 2: + u64 mtime), node 0 is
#           the root. u32 name offset, u16 flags, then either (directory) u32 child count +
#           u32 index of the first child, or (file) u16 territory + u16 language + u32 data
#           offset.
#   names:  u16 length in UTF-16 units, u32 hash, UTF-16BE characters.
#   data:   u32 length, payload. zlib-compressed payloads start with a u32 uncompressed size
#           (qCompress format); zstd-compressed ones are a bare zstd frame.
# ---------------------------------------------------------------------------------------------

RCC_MAGIC = b"qres"
FLAG_COMPRESSED = 0x01
FLAG_DIRECTORY = 0x02
FLAG_COMPRESSED_ZSTD = 0x04


class RccError(ValueError):
    """A bundle that does not follow the Qt resource collection layout."""


def read_rcc(blob: bytes) -> dict[str, bytes]:
    """Every file of a Qt resource collection, by its path inside the bundle (no leading '/')."""
    try:
        return _read_rcc(blob)
    except struct.error as exc:
        raise RccError(f"truncated or corrupt bundle: {exc}") from exc


def _read_rcc(blob: bytes) -> dict[str, bytes]:
    if len(blob) < 20 or blob[:4] != RCC_MAGIC:
        raise RccError("not a Qt resource collection (missing 'qres' magic)")
    version, tree, data, names = struct.unpack_from(">IIII", blob, 4)
    if version not in (1, 2, 3):
        raise RccError(f"unsupported rcc format version {version}")
    node_size = 14 if version == 1 else 22
    files: dict[str, bytes] = {}
    pending = [(0, "")]  # (node index, parent path)
    while pending:
        index, parent = pending.pop()
        offset = tree + index * node_size
        name_offset, flags = struct.unpack_from(">IH", blob, offset)
        path = f"{parent}{_rcc_name(blob, names + name_offset)}" if index else ""
        if flags & FLAG_DIRECTORY:
            count, first = struct.unpack_from(">II", blob, offset + 6)
            prefix = f"{path}/" if path else ""
            pending.extend((first + k, prefix) for k in range(count))
            continue
        (data_offset,) = struct.unpack_from(">I", blob, offset + 10)
        if path in files:
            raise RccError(f"{path}: several locale variants; this reader expects one")
        files[path] = _rcc_payload(blob, data + data_offset, flags, path)
    return files


def _rcc_name(blob: bytes, offset: int) -> str:
    (length,) = struct.unpack_from(">H", blob, offset)
    return blob[offset + 6 : offset + 6 + 2 * length].decode("utf-16-be")


def _rcc_payload(blob: bytes, offset: int, flags: int, path: str) -> bytes:
    (length,) = struct.unpack_from(">I", blob, offset)
    payload = blob[offset + 4 : offset + 4 + length]
    if len(payload) != length:
        raise RccError(f"{path}: entry runs past the end of the bundle")
    if flags & FLAG_COMPRESSED_ZSTD:
        try:
            import zstandard
        except ImportError as exc:
            raise RccError(f"{path}: zstd-compressed entry; pip install zstandard") from exc
        return zstandard.ZstdDecompressor().decompress(payload)
    if flags & FLAG_COMPRESSED:
        (expected,) = struct.unpack_from(">I", payload, 0)
        content = zlib.decompress(payload[4:])
        if len(content) != expected:
            raise RccError(f"{path}: {len(content)} bytes inflated, header says {expected}")
        return content
    return payload


# ---------------------------------------------------------------------------------------------
# Credits: the package's README files, in Debian copyright style blocks
#   Copyright: AUTHOR / License: LICENCE / Source: URL / Files: NAME ... (inline or one a line)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credit:
    author: str
    license: str
    source: str


_FIELD = re.compile(r"^(Copyright|License|Source|Files|Comments):\s*(.*)$")


def parse_credits(readme: str) -> dict[str, Credit]:
    """File name -> credit, for every block of a README that names files."""
    credits: dict[str, Credit] = {}
    for block in re.split(r"\n\s*\n", readme):
        fields: dict[str, list[str]] = {}
        key = None
        for line in block.splitlines():
            match = _FIELD.match(line.strip())
            if match:
                key = match.group(1)
                fields[key] = [match.group(2)] if match.group(2) else []
            elif key and line.strip():
                fields[key].append(line.strip())
        credit = Credit(
            author=" ".join(fields.get("Copyright", [])),
            license=" ".join(fields.get("License", [])),
            source=" ".join(fields.get("Source", [])),
        )
        for name in " ".join(fields.get("Files", [])).split():
            credits[name] = credit
    return credits


# ---------------------------------------------------------------------------------------------
# Selection: the public-domain / CC0 organism photos of the package, with their taxonomy.
# Ranks are left empty where the placement is not settled (e.g. the order of many former
# Perciformes fishes). A genus-only row is a photo not identifiable to species with certainty.
# ---------------------------------------------------------------------------------------------

FISHES = "categorization.rcc:gcompris/src/activities/categorization/resource/images/fishes"
WORLD = "explore_world_animals.rcc:gcompris/src/activities/explore_world_animals/resource/animals"
FARM = "explore_farm_animals.rcc:gcompris/src/activities/explore_farm_animals/resource/animals"
ERASE = "erase.rcc:gcompris/src/activities/erase/resource"
SEA = "clickgame.rcc:gcompris/src/activities/clickgame/resource"


@dataclass(frozen=True)
class Pick:
    folder: str  # "BUNDLE.rcc:directory inside the bundle"
    member: str
    scientific_name: str
    lineage: str  # "kingdom|phylum|class|order|family|genus", empty where unsettled
    common_name: str

    @property
    def ranks(self) -> dict[str, str]:
        values = self.lineage.split("|")
        names = ("kingdom", "phylum", "class", "order", "family", "genus")
        if len(values) != len(names):
            raise ValueError(f"{self.member}: lineage needs {len(names)} fields")
        ranks = dict(zip(names, values, strict=True))
        words = self.scientific_name.split()
        ranks["species"] = " ".join(words[:2]) if len(words) >= 2 else ""
        return ranks


ACTINOPTERYGII = "Animalia|Chordata|Actinopterygii"
MAMMALIA = "Animalia|Chordata|Mammalia"
AVES = "Animalia|Chordata|Aves"
REPTILIA = "Animalia|Chordata|Reptilia"

SELECTION: tuple[Pick, ...] = (
    Pick(FISHES, "fish1.webp", "Pomacanthus arcuatus",
         f"{ACTINOPTERYGII}||Pomacanthidae|Pomacanthus", "gray angelfish"),
    Pick(FISHES, "fish2.webp", "Atherina hepsetus",
         f"{ACTINOPTERYGII}|Atheriniformes|Atherinidae|Atherina", "Mediterranean sand smelt"),
    Pick(FISHES, "fish3.webp", "Placidochromis electra",
         f"{ACTINOPTERYGII}||Cichlidae|Placidochromis", "deepwater hap"),
    Pick(FISHES, "fish4.webp", "Perca flavescens",
         f"{ACTINOPTERYGII}|Perciformes|Percidae|Perca", "yellow perch"),
    Pick(FISHES, "fish5.webp", "Anthias anthias",
         f"{ACTINOPTERYGII}|Perciformes||Anthias", "swallowtail seaperch"),
    Pick(FISHES, "fish6.webp", "Symphysodon",
         f"{ACTINOPTERYGII}||Cichlidae|Symphysodon", "discus"),
    Pick(FISHES, "fish7.webp", "Mullus barbatus ponticus",
         f"{ACTINOPTERYGII}||Mullidae|Mullus", "Black Sea red mullet"),
    Pick(FISHES, "fish8.webp", "Salmo salar",
         f"{ACTINOPTERYGII}|Salmoniformes|Salmonidae|Salmo", "Atlantic salmon"),
    Pick(FISHES, "fish9.webp", "Amphiprion ocellaris",
         f"{ACTINOPTERYGII}||Pomacentridae|Amphiprion", "ocellaris clownfish"),
    Pick(FISHES, "fish10.webp", "Pseudanthias",
         f"{ACTINOPTERYGII}|Perciformes||Pseudanthias", "anthias"),
    Pick(FISHES, "fish11.webp", "Oncorhynchus",
         f"{ACTINOPTERYGII}|Salmoniformes|Salmonidae|Oncorhynchus", "trout"),
    Pick(FISHES, "fish12.webp", "Pagellus acarne",
         f"{ACTINOPTERYGII}||Sparidae|Pagellus", "axillary seabream"),
    Pick(FISHES, "fish13.webp", "Symphodus ocellatus",
         f"{ACTINOPTERYGII}||Labridae|Symphodus", "ocellated wrasse"),
    Pick(FISHES, "fish14.webp", "Anthias anthias",
         f"{ACTINOPTERYGII}|Perciformes||Anthias", "swallowtail seaperch"),
    Pick(FISHES, "fish15.webp", "Labrus merula",
         f"{ACTINOPTERYGII}||Labridae|Labrus", "brown wrasse"),
    Pick(FISHES, "fish16.webp", "Pagellus erythrinus",
         f"{ACTINOPTERYGII}||Sparidae|Pagellus", "common pandora"),
    Pick(FISHES, "fish17.webp", "Coelorinchus caelorhincus",
         f"{ACTINOPTERYGII}|Gadiformes|Macrouridae|Coelorinchus", "hollowsnout grenadier"),
    Pick(FISHES, "fish18.webp", "Capros aper",
         f"{ACTINOPTERYGII}||Caproidae|Capros", "boarfish"),
    Pick(FISHES, "fish19.webp", "Pagrus pagrus",
         f"{ACTINOPTERYGII}||Sparidae|Pagrus", "red porgy"),
    Pick(FISHES, "fish20.webp", "Oedalechilus labeo",
         f"{ACTINOPTERYGII}|Mugiliformes|Mugilidae|Oedalechilus", "boxlip mullet"),
    Pick(FISHES, "fish21.webp", "Trachinotus ovatus",
         f"{ACTINOPTERYGII}||Carangidae|Trachinotus", "pompano"),
    Pick(FISHES, "fish22.webp", "Symphodus tinca",
         f"{ACTINOPTERYGII}||Labridae|Symphodus", "East Atlantic peacock wrasse"),
    Pick(FISHES, "fish23.webp", "Coris julis",
         f"{ACTINOPTERYGII}||Labridae|Coris", "Mediterranean rainbow wrasse"),
    Pick(FISHES, "fish24.webp", "Coris julis",
         f"{ACTINOPTERYGII}||Labridae|Coris", "Mediterranean rainbow wrasse"),
    Pick(FISHES, "fish25.webp", "Carassius auratus",
         f"{ACTINOPTERYGII}|Cypriniformes|Cyprinidae|Carassius", "goldfish"),
    Pick(FISHES, "fish26.webp", "Atherina hepsetus",
         f"{ACTINOPTERYGII}|Atheriniformes|Atherinidae|Atherina", "Mediterranean sand smelt"),
    Pick(FISHES, "fish27.webp", "Trachinus draco",
         f"{ACTINOPTERYGII}|Perciformes|Trachinidae|Trachinus", "greater weever"),
    Pick(FISHES, "fish28.webp", "Tetraodontidae",
         f"{ACTINOPTERYGII}|Tetraodontiformes|Tetraodontidae|", "pufferfish"),
    Pick(WORLD, "bison.webp", "Bison bison",
         f"{MAMMALIA}|Artiodactyla|Bovidae|Bison", "American bison"),
    # The source calls it a "garden chameleon"; the photo shows an agamid, not a chameleon.
    Pick(WORLD, "chameleon.webp", "Calotes versicolor",
         f"{REPTILIA}|Squamata|Agamidae|Calotes", "oriental garden lizard"),
    Pick(WORLD, "crocodile.webp", "Crocodylus porosus",
         f"{REPTILIA}|Crocodylia|Crocodylidae|Crocodylus", "saltwater crocodile"),
    Pick(WORLD, "dragon.webp", "Varanus komodoensis",
         f"{REPTILIA}|Squamata|Varanidae|Varanus", "Komodo dragon"),
    Pick(WORLD, "giraffe.webp", "Giraffa camelopardalis",
         f"{MAMMALIA}|Artiodactyla|Giraffidae|Giraffa", "giraffe"),
    Pick(WORLD, "hedgehog.webp", "Erinaceus roumanicus",
         f"{MAMMALIA}||Erinaceidae|Erinaceus", "northern white-breasted hedgehog"),
    Pick(WORLD, "jaguar.webp", "Panthera onca",
         f"{MAMMALIA}|Carnivora|Felidae|Panthera", "jaguar"),
    Pick(WORLD, "kangaroo.webp", "Macropus giganteus",
         f"{MAMMALIA}|Diprotodontia|Macropodidae|Macropus", "eastern grey kangaroo"),
    Pick(WORLD, "koala.webp", "Phascolarctos cinereus",
         f"{MAMMALIA}|Diprotodontia|Phascolarctidae|Phascolarctos", "koala"),
    Pick(WORLD, "lemur.webp", "Lemur catta",
         f"{MAMMALIA}|Primates|Lemuridae|Lemur", "ring-tailed lemur"),
    Pick(WORLD, "moose.webp", "Alces alces",
         f"{MAMMALIA}|Artiodactyla|Cervidae|Alces", "moose"),
    Pick(WORLD, "narwhal.webp", "Monodon monoceros",
         f"{MAMMALIA}||Monodontidae|Monodon", "narwhal"),
    Pick(WORLD, "panda.webp", "Ailuropoda melanoleuca",
         f"{MAMMALIA}|Carnivora|Ursidae|Ailuropoda", "giant panda"),
    Pick(WORLD, "polar_bear.webp", "Ursus maritimus",
         f"{MAMMALIA}|Carnivora|Ursidae|Ursus", "polar bear"),
    Pick(WORLD, "scarlet_macaw.webp", "Ara macao",
         f"{AVES}|Psittaciformes|Psittacidae|Ara", "scarlet macaw"),
    Pick(FARM, "cat.webp", "Felis catus",
         f"{MAMMALIA}|Carnivora|Felidae|Felis", "domestic cat"),
    Pick(FARM, "chicken.webp", "Gallus gallus domesticus",
         f"{AVES}|Galliformes|Phasianidae|Gallus", "chicken"),
    Pick(FARM, "cow.webp", "Bos taurus",
         f"{MAMMALIA}|Artiodactyla|Bovidae|Bos", "cattle"),
    Pick(FARM, "dog.webp", "Canis lupus familiaris",
         f"{MAMMALIA}|Carnivora|Canidae|Canis", "dog"),
    Pick(FARM, "duck.webp", "Anas platyrhynchos domesticus",
         f"{AVES}|Anseriformes|Anatidae|Anas", "domestic duck"),
    Pick(FARM, "horse.webp", "Equus caballus",
         f"{MAMMALIA}|Perissodactyla|Equidae|Equus", "horse"),
    Pick(FARM, "owl.webp", "Strix aluco",
         f"{AVES}|Strigiformes|Strigidae|Strix", "tawny owl"),
    Pick(FARM, "pig.webp", "Sus scrofa domesticus",
         f"{MAMMALIA}|Artiodactyla|Suidae|Sus", "domestic pig"),
    Pick(FARM, "sheep.webp", "Ovis aries",
         f"{MAMMALIA}|Artiodactyla|Bovidae|Ovis", "sheep"),
    Pick(ERASE, "crab.webp", "Grapsus grapsus",
         "Animalia|Arthropoda|Malacostraca|Decapoda|Grapsidae|Grapsus", "Sally Lightfoot crab"),
    Pick(ERASE, "giraffe.webp", "Giraffa camelopardalis",
         f"{MAMMALIA}|Artiodactyla|Giraffidae|Giraffa", "giraffe"),
    Pick(ERASE, "kingfisher.webp", "Alcedo atthis",
         f"{AVES}|Coraciiformes|Alcedinidae|Alcedo", "common kingfisher"),
    Pick(ERASE, "pika.webp", "Ochotona princeps",
         f"{MAMMALIA}|Lagomorpha|Ochotonidae|Ochotona", "American pika"),
    Pick(ERASE, "red_panda.webp", "Ailurus fulgens",
         f"{MAMMALIA}|Carnivora|Ailuridae|Ailurus", "red panda"),
    Pick(SEA, "sea4.webp", "Antipathella fiordensis",
         "Animalia|Cnidaria|Anthozoa|Antipatharia||Antipathella", "black coral"),
    Pick(SEA, "sea6.webp", "Astrophyton muriatum",
         "Animalia|Echinodermata|Ophiuroidea|Euryalida|Gorgonocephalidae|Astrophyton",
         "giant basket star"),
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def fetch_package(workdir: Path, deb: Path | None) -> Path:
    """Unpack the package (downloaded with apt unless `deb` is given); returns the unpacked root."""
    if deb is None:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, check=True)
        debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"expected one {PACKAGE} .deb in {workdir}, found {debs}")
        deb = debs[0]
    root = workdir / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def package_version(deb_root: Path) -> str:
    changelog = deb_root / "usr/share/doc" / PACKAGE / "changelog.Debian.gz"
    if changelog.exists():
        import gzip

        first = gzip.decompress(changelog.read_bytes()).decode().splitlines()[0]
        match = re.search(r"\(([^)]+)\)", first)
        if match:
            return match.group(1)
    return "unknown"


def to_jpeg(blob: bytes) -> tuple[bytes, tuple[int, int]]:
    """Decode, shrink to LONGEST_SIDE (never enlarge), encode as baseline JPEG without metadata."""
    with Image.open(io.BytesIO(blob)) as source:
        image = source.convert("RGB")
    width, height = image.size
    scale = LONGEST_SIDE / max(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue(), image.size


def output_name(scientific_name: str, taken: set[str]) -> str:
    stem = re.sub(r"[^a-z0-9]+", "_", scientific_name.lower()).strip("_")
    name, n = f"{stem}.jpg", 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}.jpg"
    taken.add(name)
    return name


def extract(deb_root: Path, out_dir: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Write the selected photos and CREDITS.csv into out_dir; returns (rows, skipped lines)."""
    version = package_version(deb_root)
    bundles: dict[str, dict[str, bytes]] = {}
    rows: list[dict[str, str]] = []
    skipped: list[str] = []
    taken: set[str] = set()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.jpg"):
        stale.unlink()
    for pick in SELECTION:
        bundle, directory = pick.folder.split(":", 1)
        if bundle not in bundles:
            bundles[bundle] = read_rcc((deb_root / RCC_DIR / bundle).read_bytes())
        files = bundles[bundle]
        credit = parse_credits(files[f"{directory}/README"].decode("utf-8"))[pick.member]
        licence = SHIPPABLE_LICENCES.get(credit.license.strip().lower())
        origin = f"{PACKAGE} {version} {RCC_DIR / bundle}:/{directory}/{pick.member}"
        if licence is None:
            raise RuntimeError(f"{origin}: licence {credit.license!r} may not be shipped")
        jpeg, (width, height) = to_jpeg(files[f"{directory}/{pick.member}"])
        if min(width, height) < MIN_SHORT_SIDE:
            skipped.append(f"{pick.folder}/{pick.member} ({pick.scientific_name}): "
                           f"{width}x{height}, shortest side < {MIN_SHORT_SIDE}")  # fmt: skip
            continue
        name = output_name(pick.scientific_name, taken)
        (out_dir / name).write_bytes(jpeg)
        rows.append({
            "file": name, "scientific_name": pick.scientific_name, **pick.ranks,
            "common_name": pick.common_name, "license": licence, "author": credit.author,
            "source": credit.source, "origin": origin,
        })  # fmt: skip
    with open(out_dir / "CREDITS.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CREDITS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent / "data" / "photos"
    parser.add_argument("--out", type=Path, default=default_out, help="output folder")
    parser.add_argument("--deb", type=Path, help=f"a downloaded {PACKAGE} .deb (default: apt)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        deb_root = fetch_package(Path(tmp), args.deb.resolve() if args.deb else None)
        rows, skipped = extract(deb_root, args.out)
    total = sum((args.out / row["file"]).stat().st_size for row in rows)
    print(f"{len(rows)} photos, {total / 1e6:.2f} MB in {args.out}")
    for line in skipped:
        print(f"skipped {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
