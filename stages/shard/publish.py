"""shards/sizes.json and shards/README.txt: written when every planned shard is committed (at the
end of the run that commits the last one, or of the next run), removed as soon as a run is about
to rebuild shards, so that a sizes.json present always describes committed shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import atomic
from stages.shard.assign import Layout
from stages.shard.captions import TEXT_KINDS
from stages.shard.sample import ATTRIBUTION
from stages.shard.settings import NO_TXT, ShardSettings

SIZES = "sizes.json"
README = "README.txt"


def shards_dir(root: Path) -> Path:
    return Path(root) / "shards"


def sizes_of(records: dict[int, dict[str, Any]], layout: Layout) -> dict[str, int]:
    """Shard file name -> samples (the ok rows of its commit record), every planned shard."""
    return {layout.name(i): int(records[i]["counts"]["by_status"]["ok"]) for i in range(layout.total)}


def sizes_text(sizes: dict[str, int]) -> str:
    return json.dumps(dict(sorted(sizes.items())), indent=1) + "\n"


def _range(prefix: str, count: int) -> str:
    return f"{prefix}-00000.tar" if count == 1 else f"{prefix}-{{00000..{count - 1:05d}}}.tar"


def readme_text(layout: Layout, sizes: dict[str, int], settings: ShardSettings) -> str:
    train = sum(n for name, n in sizes.items() if name.startswith("shard-"))
    val = sum(n for name, n in sizes.items() if name.startswith("val-"))
    kinds = ", ".join(f"{k}.txt" for k in TEXT_KINDS)
    txt = (f"`txt` (the {settings.txt_caption} caption again: what open_clip's own loader reads), "
           if settings.txt_caption != NO_TXT else "")  # fmt: skip
    lines = [
        "WebDataset shards written by tolpipe stage 06 (shard); tolpipe's manifests/README.md (06 shard)",
        "documents every file and caption rule.",
        "",
    ]
    if layout.train:
        lines.append(f"  {_range('shard', layout.train)}  {layout.train} training shards, {train} samples")
    if layout.val:
        lines.append(f"  {_range('val', layout.val)}  {layout.val} validation shards, {val} samples")
    lines += [
        f"  {SIZES}  samples per shard (open_clip reads it to know the dataset size)",
        "",
        f"Each sample (__key__ = its uuid): jpg, {kinds}, {txt}and json (its attribution: "
        f"{', '.join(ATTRIBUTION)}).",
        "Shards are shuffled across the whole dataset; samples within a shard too.",
        "",
        "Train with open_clip (SHARDS = this folder; at least as many shards as GPUs x loader workers):",
        "",
        "  python -m open_clip_train.main --dataset-type webdataset \\",
    ]
    if layout.train:
        lines.append(f"    --train-data \"$SHARDS/{_range('shard', layout.train)}\" \\")
    if layout.val:
        lines.append(f"    --val-data \"$SHARDS/{_range('val', layout.val)}\" --val-num-samples {val} \\")
    lines += [
        "    --model ... --batch-size ... --workers ...",
        "",
        "Another caption: pick its file by key, e.g. with webdataset",
        "  wds.WebDataset(urls).decode(\"pil\").to_tuple(\"jpg\", \"sci_com.txt\")",
        "",
        "Check the shards against the manifests: tolpipe --root ROOT verify shards",
        "",
    ]
    return "\n".join(lines)


def write_if_different(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic.write_text(path, text)
    return True


def publish(root: Path, layout: Layout, sizes: dict[str, int], settings: ShardSettings) -> None:
    folder = shards_dir(root)
    write_if_different(folder / SIZES, sizes_text(sizes))
    write_if_different(folder / README, readme_text(layout, sizes, settings))


def withdraw(root: Path) -> None:
    """Remove sizes.json and README.txt (shards are about to be rebuilt)."""
    for name in (SIZES, README):
        (shards_dir(root) / name).unlink(missing_ok=True)
