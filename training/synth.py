"""`tolpipe synth`: taxonomy-structured synthetic images, to check that training learns the tree.

A small tree (default 3 kingdoms down to 40 species) where every rank adds a visual trait:

| rank | trait |
|---|---|
| kingdom | background hue |
| phylum | body shape (circle, square, triangle, diamond, ...) |
| class | texture on the body (stripes, bars, dots, checks, rings, ...) |
| order | body colour |
| family | outline colour and thickness |
| genus | a small satellite shape's corner |
| species | a mark: a bar with its own angle and colour |

Each species has two variants (`small` / `large` body, and a paler shade for `large`), and every
image has random placement and noise. Output, under DIR:

- `shards/shard-NNNNN.tar` + `shards/sizes.json`: stage 06's sample layout (jpg, the ten caption
  files made by stage 06's own caption rules, txt, and a json with the attribution fields, the
  seven ranks and `variant`), for training;
- `replay/replay-NNNNN.tar`: image-text pairs (`jpg` + `txt`, as img2dataset writes them) of
  plain geometric scenes, as replay data;
- `eval/eval.parquet`: other images of the same species (`image` JPEG bytes, the seven ranks,
  `common_name`, `variant`), the evaluation set.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
# How many children a node gets at each rank below kingdom, at most (until one species each).
BRANCHING = (2, 2, 2, 1, 2, 2)
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "hexagon")
TEXTURES = ("hstripes", "vstripes", "dots", "checks", "rings", "plain")
VARIANTS = ("small", "large")
SYLLABLES = ("ka", "lo", "mi", "ru", "te", "zo", "phy", "dra", "cen", "vul", "mor", "thi", "as", "gel",
             "bri", "nox", "pan", "sel", "tor", "quen")  # fmt: skip
ADJECTIVES = ("red", "pale", "dusky", "golden", "lesser", "greater", "striped", "spotted", "crested",
              "silver", "northern", "southern", "banded", "hooded", "tufted", "ringed", "bright",
              "long", "short", "black", "white", "green", "blue", "royal", "common", "rare", "tiny",
              "giant", "swift", "slow", "wild", "marsh", "forest", "desert", "alpine", "coastal",
              "river", "cave", "reef", "meadow")  # fmt: skip
NOUNS = ("glimmer", "thornet", "wisp", "bramble", "quill", "drift", "knot", "burrow", "frond", "spire",
         "pebble", "shard", "bloom", "crawler", "flutter", "hopper", "creeper", "sprout")  # fmt: skip
IMAGE_PX = 80
SAMPLES_PER_SHARD = 500
REPLAY_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "grey", "cyan")


@dataclass(frozen=True)
class Species:
    index: int
    lineage: tuple[str, ...]  # 7 ranks
    path: tuple[int, ...]  # child index at each rank (kingdom first)
    common_name: str


def _name(rng: random.Random, used: set[str], suffix: str, capital: bool = True) -> str:
    while True:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))) + suffix
        if word not in used:
            used.add(word)
            return word.capitalize() if capital else word


def _split(items: list[int], parts: int) -> list[list[int]]:
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def make_tree(species: int, kingdoms: int = 3, seed: int = 0) -> list[Species]:
    """`species` leaves under `kingdoms` kingdoms, the ranks between split by BRANCHING."""
    rng = random.Random(f"tree:{seed}")
    used: set[str] = set()
    suffixes = ("ia", "ota", "ea", "ales", "idae", "us")
    paths: dict[int, list[int]] = {i: [] for i in range(species)}
    names: dict[int, list[str]] = {i: [] for i in range(species)}

    def descend(members: list[int], depth: int) -> None:
        if depth == 6:
            return
        parts = kingdoms if depth == 0 else BRANCHING[depth - 1]
        for child, group in enumerate(_split(members, parts)):
            label = _name(rng, used, suffixes[depth])
            for i in group:
                paths[i].append(child)
                names[i].append(label)
            descend(group, depth + 1)

    descend(list(range(species)), 0)
    out = []
    for i in range(species):
        genus = names[i][5]
        epithet = _name(rng, used, "", capital=False)
        common = f"{ADJECTIVES[i % len(ADJECTIVES)]} {NOUNS[(i * 7 + paths[i][5]) % len(NOUNS)]}"
        out.append(Species(i, (*names[i], f"{genus} {epithet}"), tuple(paths[i]), common))
    return out


def _hue_rgb(hue: float, sat: float = 0.6, val: float = 0.9) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def _trait_ids(tree: list[Species]) -> dict[int, list[int]]:
    """Per rank, a dense id of each species' node at that rank (so traits differ across nodes)."""
    ids: dict[int, list[int]] = {}
    for depth in range(7):
        keys = sorted({sp.lineage[: depth + 1] for sp in tree})
        index = {k: n for n, k in enumerate(keys)}
        ids[depth] = [index[sp.lineage[: depth + 1]] for sp in tree]
    return ids


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    import math

    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "hexagon":
        return [(cx + r * math.cos(a * math.pi / 3), cy + r * math.sin(a * math.pi / 3)) for a in range(6)]
    w = r / 2.5  # cross
    return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
            (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
            (cx - r, cy - w), (cx - w, cy - w)]  # fmt: skip


def _texture(draw: Any, kind: str, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if kind == "hstripes":
        for y in range(y0, y1, 6):
            draw.rectangle([x0, y, x1, y + 2], fill=colour)
    elif kind == "vstripes":
        for x in range(x0, x1, 6):
            draw.rectangle([x, y0, x + 2, y1], fill=colour)
    elif kind == "dots":
        for y in range(y0 + 2, y1, 7):
            for x in range(x0 + 2, x1, 7):
                draw.ellipse([x, y, x + 3, y + 3], fill=colour)
    elif kind == "checks":
        for y in range(y0, y1, 8):
            for x in range(x0 + (4 if (y - y0) // 8 % 2 else 0), x1, 8):
                draw.rectangle([x, y, x + 3, y + 3], fill=colour)
    elif kind == "rings":
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        for r in range(4, max(x1 - x0, y1 - y0), 7):
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=2)


def render(sp: Species, ids: dict[int, list[int]], variant: str, rng: random.Random) -> bytes:
    """One JPEG of species `sp` in `variant`."""
    import math

    from PIL import Image, ImageDraw

    i = sp.index
    kingdom, phylum, klass, order, family, genus = (ids[d][i] for d in range(6))
    shade = 0.75 if variant == "large" else 1.0
    image = Image.new("RGB", (IMAGE_PX, IMAGE_PX), _hue_rgb(kingdom / 3.0 + 0.08, 0.35, 0.95))
    body = Image.new("RGB", (IMAGE_PX, IMAGE_PX), (0, 0, 0))
    mask = Image.new("L", (IMAGE_PX, IMAGE_PX), 0)
    radius = (17 if variant == "small" else 25) + rng.uniform(-2, 2)
    cx, cy = IMAGE_PX / 2 + rng.uniform(-6, 6), IMAGE_PX / 2 + rng.uniform(-6, 6)
    shape = SHAPES[phylum % len(SHAPES)]
    colour = _hue_rgb(order * 0.1375 + 0.5, 0.8, 0.85 * shade)
    body_draw = ImageDraw.Draw(body)
    body_draw.rectangle([0, 0, IMAGE_PX, IMAGE_PX], fill=colour)
    _texture(body_draw, TEXTURES[klass % len(TEXTURES)], (0, 0, IMAGE_PX, IMAGE_PX),
             tuple(int(c * 0.35) for c in colour))  # fmt: skip
    mask_draw = ImageDraw.Draw(mask)
    outline = _hue_rgb(family * 0.29, 0.9, 0.6)
    if shape == "circle":
        mask_draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        mask_draw.polygon(_polygon(shape, cx, cy, radius), fill=255)
    image.paste(body, (0, 0), mask)
    draw = ImageDraw.Draw(image)
    width = 1 + family % 3
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=outline, width=width)
    else:
        draw.polygon(_polygon(shape, cx, cy, radius), outline=outline, width=width)
    corner = genus % 4  # the genus' satellite: a small disc in one corner
    sx, sy = (8 if corner in (0, 3) else IMAGE_PX - 16), (8 if corner < 2 else IMAGE_PX - 16)
    draw.ellipse([sx, sy, sx + 8, sy + 8], fill=_hue_rgb(genus * 0.21 + 0.3, 0.9, 0.5))
    angle = (i * 47 % 180) * math.pi / 180  # the species' mark: a bar across the body
    dx, dy = math.cos(angle) * radius * 0.8, math.sin(angle) * radius * 0.8
    draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=_hue_rgb(i * 0.618, 1.0, 1.0), width=3)
    pixels = image.load()
    for _ in range(60):  # sensor noise: a few random pixels
        x, y = rng.randrange(IMAGE_PX), rng.randrange(IMAGE_PX)
        pixels[x, y] = tuple(rng.randrange(256) for _ in range(3))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _row(sp: Species) -> dict[str, Any]:
    return {**dict(zip(RANKS, sp.lineage, strict=True)), "scientific_name": sp.lineage[-1],
            "common_name": sp.common_name}  # fmt: skip


def _samples(tree, ids, images_per_species: int, rng: random.Random, split: str):
    for sp in tree:
        for k in range(images_per_species):
            variant = VARIANTS[k % 2]
            yield sp, variant, f"{split}-{sp.index:04d}-{k:05d}", render(sp, ids, variant, rng)


def write_shards(out: Path, tree, ids, images_per_species: int, seed: int) -> int:
    """Stage 06's layout under out/shards/; the number of samples."""
    import webdataset as wds

    from stages.shard.sample import json_member, taxon_members

    shards = out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"train:{seed}")
    samples = list(_samples(tree, ids, images_per_species, rng, "train"))
    random.Random(f"order:{seed}").shuffle(samples)  # stage 06 shuffles the whole dataset
    sizes: dict[str, int] = {}
    for n, start in enumerate(range(0, len(samples), SAMPLES_PER_SHARD)):
        name = f"shard-{n:05d}.tar"
        chunk = samples[start : start + SAMPLES_PER_SHARD]
        with wds.TarWriter(str(shards / name)) as sink:
            for sp, variant, key, jpeg in chunk:
                row = _row(sp)
                members = taxon_members(row, frozenset({""}), "taxon_com")
                record = {"uuid": key, "provider": "synthetic", **members.fields, "variant": variant}
                sink.write({"__key__": key, "jpg": jpeg, "json": json_member(record), **members.texts})
        sizes[name] = len(chunk)
    (shards / "sizes.json").write_text(json.dumps(sizes, indent=1, sort_keys=True) + "\n")
    return len(samples)


def write_replay(out: Path, count: int, seed: int) -> int:
    """Image-text pairs of plain scenes (`jpg` + `txt`), img2dataset's layout."""
    import webdataset as wds
    from PIL import Image, ImageDraw

    rng = random.Random(f"replay:{seed}")
    folder = out / "replay"
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for n, start in enumerate(range(0, count, SAMPLES_PER_SHARD)):
        with wds.TarWriter(str(folder / f"replay-{n:05d}.tar")) as sink:
            for k in range(start, min(count, start + SAMPLES_PER_SHARD)):
                colour = rng.randrange(len(REPLAY_COLOURS))
                shape = rng.randrange(3)
                image = Image.new("RGB", (IMAGE_PX, IMAGE_PX), (250, 250, 250))
                fill = _hue_rgb(colour / len(REPLAY_COLOURS), 0.9, 0.8)
                box = [
                    rng.randrange(5, 30),
                    rng.randrange(5, 30),
                    rng.randrange(50, 75),
                    rng.randrange(50, 75),
                ]
                draw = ImageDraw.Draw(image)
                (draw.rectangle, draw.ellipse, draw.chord)[shape](box, fill=fill) if shape < 2 else \
                    draw.chord(box, 0, 180, fill=fill)  # fmt: skip
                buf = io.BytesIO()
                image.save(buf, format="JPEG", quality=90)
                text = f"a {REPLAY_COLOURS[colour]} {('box', 'ball', 'half moon')[shape]} on a white wall"
                sink.write({"__key__": f"{k:09d}", "jpg": buf.getvalue(), "txt": text})
                written += 1
    return written


def write_eval(out: Path, tree, ids, images_per_species: int, seed: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(f"eval:{seed}")
    rows: dict[str, list] = {k: [] for k in ("key", "image", *RANKS, "common_name", "variant")}
    for sp, variant, key, jpeg in _samples(tree, ids, images_per_species, rng, "eval"):
        rows["key"].append(key)
        rows["image"].append(jpeg)
        for rank, value in zip(RANKS, sp.lineage, strict=True):
            rows[rank].append(value)
        rows["common_name"].append(sp.common_name)
        rows["variant"].append(variant)
    folder = out / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({k: (pa.array(v, pa.binary()) if k == "image" else pa.array(v, pa.string()))
                      for k, v in rows.items()})  # fmt: skip
    pq.write_table(table, folder / "eval.parquet")
    return len(rows["key"])


def synthesize(out: Path, species: int = 40, images_per_species: int = 60, eval_per_species: int = 20,
               replay: int = 1000, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    from pipeline.errors import ConfigError

    if species < 3 or images_per_species < 2 or eval_per_species < 2:
        raise ConfigError("synth: need --species >= 3 and at least 2 images per species (two variants)")
    tree = make_tree(species, seed=seed)
    ids = _trait_ids(tree)
    summary = {
        "species": species,
        "train_samples": write_shards(out, tree, ids, images_per_species, seed),
        "eval_images": write_eval(out, tree, ids, eval_per_species, seed),
        "replay_samples": write_replay(out, replay, seed) if replay else 0,
        "ranks": {rank: len({sp.lineage[: d + 1] for sp in tree}) for d, rank in enumerate(RANKS)},
    }
    (out / "synth.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def add_parser(subparsers: Any, global_options: Any) -> None:
    parser = subparsers.add_parser(
        "synth", help="write taxonomy-structured synthetic training, replay and evaluation data",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    global_options(parser, True)
    parser.add_argument("--out", type=Path, required=True, help="output folder (shards/, replay/, eval/)")
    parser.add_argument("--species", type=int, default=40, help="species in the tree (default 40)")
    parser.add_argument("--images-per-species", type=int, default=60, help="training images per species")
    parser.add_argument("--eval-per-species", type=int, default=20, help="evaluation images per species")
    parser.add_argument("--replay", type=int, default=1000, help="replay image-text pairs (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of names, traits and noise")


def run_command(args: argparse.Namespace, config: dict) -> int:
    summary = synthesize(args.out, args.species, args.images_per_species, args.eval_per_species,
                         args.replay, args.seed)  # fmt: skip
    ranks = ", ".join(f"{n} {r}" for r, n in summary["ranks"].items())
    print(f"synthetic data in {args.out}: {summary['train_samples']} training samples (shards/), "
          f"{summary['eval_images']} evaluation images (eval/eval.parquet), {summary['replay_samples']} "
          f"replay pairs (replay/); tree: {ranks}")  # fmt: skip
    return 0
