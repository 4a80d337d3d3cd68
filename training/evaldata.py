"""Evaluation data: images with their 7-rank lineage and any other per-image columns.

Three layouts, told apart by the path:

- Parquet (`*.parquet`, or a folder of them): an `image` column of encoded bytes (or `path`,
  relative to the file), the rank columns `kingdom` ... `species` (missing ones are ""), every
  other column kept row-aligned (e.g. `variant`, trait labels);
- WebDataset (`*.tar`, a brace-expanded list, or a folder of tars): `jpg` and a `json` member
  with the rank fields (stage 06's attribution layout); the json's other fields become columns;
- an image folder: `DIR/<label>/<image>`; the label is the species, and `DIR/taxa.csv` (columns
  `label`, `kingdom` ... `species`) gives the other ranks when present.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InputError

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass
class EvalSet:
    images: list[Any]  # PIL images, or callables that open one
    lineages: list[tuple[str, ...]]
    columns: Any  # pandas.DataFrame, row-aligned


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()


def _open(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def read_parquet(path: Path) -> EvalSet:
    import pandas as pd
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    if "image" not in frame and "path" not in frame:
        raise InputError(path, "expected an `image` (bytes) or `path` column")
    if not any(rank in frame for rank in RANKS):
        raise InputError(path, f"expected taxonomy columns ({', '.join(RANKS)})")
    if "image" in frame:
        images = [_open(b) for b in frame["image"]]
    else:
        from PIL import Image

        images = [Image.open(files[0].parent / p).convert("RGB") for p in frame["path"]]
    lineages = [tuple(_text(row.get(rank)) for rank in RANKS) for row in frame.to_dict("records")]
    columns = frame.drop(columns=[c for c in ("image", "path", *RANKS) if c in frame])
    return EvalSet(images, lineages, columns.reset_index(drop=True))


def _tar_samples(urls: list[str]) -> Iterator[dict[str, Any]]:
    import webdataset as wds

    yield from wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())


def read_webdataset(path: Path, spec: str) -> EvalSet:
    import braceexpand
    import pandas as pd

    urls = (
        sorted(str(p) for p in path.glob("*.tar")) if path.is_dir() else list(braceexpand.braceexpand(spec))
    )
    images, lineages, extra = [], [], []
    for sample in _tar_samples(urls):
        if "jpg" not in sample or "json" not in sample:
            raise InputError(
                sample.get("__url__", spec), f"sample {sample.get('__key__')}: needs jpg and json"
            )
        record = json.loads(sample["json"])
        images.append(_open(sample["jpg"]))
        lineages.append(tuple(_text(record.get(rank)) for rank in RANKS))
        extra.append({k: v for k, v in record.items() if k not in RANKS})
    if not images:
        raise InputError(spec, "no samples in these shards")
    return EvalSet(images, lineages, pd.DataFrame(extra))


def read_folder(path: Path) -> EvalSet:
    import pandas as pd
    from PIL import Image

    taxa: dict[str, tuple[str, ...]] = {}
    table = path / "taxa.csv"
    if table.exists():
        frame = pd.read_csv(table, dtype=str).fillna("")
        if "label" not in frame:
            raise InputError(table, "expected a `label` column and the rank columns")
        taxa = {r["label"]: tuple(_text(r.get(rank)) for rank in RANKS) for r in frame.to_dict("records")}
    images, lineages, labels = [], [], []
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        for file in sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            images.append(Image.open(file).convert("RGB"))
            lineages.append(taxa.get(folder.name, ("",) * 6 + (folder.name.replace("_", " "),)))
            labels.append(folder.name)
    if not images:
        raise InputError(path, "no images under <label>/ folders")
    return EvalSet(images, lineages, pd.DataFrame({"label": labels}))


def read_eval_set(spec: str | Path) -> EvalSet:
    path = Path(spec)
    text = str(spec)
    if text.endswith(".parquet") or (path.is_dir() and any(path.glob("*.parquet"))):
        return read_parquet(path)
    if text.endswith(".tar") or "{" in text or (path.is_dir() and any(path.glob("*.tar"))):
        return read_webdataset(path, text)
    if path.is_dir():
        return read_folder(path)
    raise InputError(spec, "not found; expected a Parquet file, WebDataset shards or an image folder")
