"""FathomNet: a COCO-format export (`fathomnet-generate --format coco`, or any COCO file of
FathomNet images), one record per image.

COCO layout (cocodataset.org/#format-data, as FathomNet writes it): `images` [{id, file_name,
width, height, license, coco_url, flickr_url, date_captured}; FathomNet exports may add `uuid`
and `url`], `annotations` [{id, image_id, category_id, bbox, area, iscrowd}], `categories`
[{id, name (the FathomNet concept), supercategory}], `licenses` [{id, name, url}].

- url: `coco_url`, else `url`, else `flickr_url`.
- source_id: the image's `uuid`, else its `file_name` without extension (FathomNet names files
  by image uuid), else its COCO `id`.
- scientific_name: the concept (category `name`) of the image's annotations; 03 resolves it like
  any verbatim name. An image whose annotations name several concepts is dropped
  `multiple_concepts` (`ingest.fathomnet_multiple_concepts = "drop"`), or keeps the concept
  with most boxes (`"most_boxes"`; a tie is still dropped); an image without annotations is
  dropped `no_concept`.
- license: the `licenses` entry the image's `license` id names (its `name`, else its `url`);
  null when the export has none. The export carries no rights holder: null.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.errors import InputError
from stages.ingest.options import ProviderOptions

REASON_MULTIPLE_CONCEPTS = "multiple_concepts"
REASON_NO_CONCEPT = "no_concept"
URL_KEYS = ("coco_url", "url", "flickr_url")


def load(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 JSON: byte offset {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(path, "not a COCO export: expected an object with an `images` list")
    for key in ("annotations", "categories", "licenses"):
        if not isinstance(data.get(key, []), list):
            raise InputError(path, f"COCO export: `{key}` must be a list")
    return data


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _source_id(image: dict[str, Any]) -> str | None:
    if _text(image.get("uuid")):
        return _text(image["uuid"])
    name = _text(image.get("file_name"))
    if name:
        return Path(name).stem
    return _text(image.get("id"))


def _licenses(data: dict[str, Any]) -> dict[Any, str | None]:
    return {entry.get("id"): _text(entry.get("name")) or _text(entry.get("url"))
            for entry in data.get("licenses", []) if isinstance(entry, dict)}  # fmt: skip


def _concepts(path: Path, data: dict[str, Any]) -> dict[Any, Counter[str]]:
    names = {c.get("id"): _text(c.get("name")) for c in data.get("categories", []) if isinstance(c, dict)}
    boxes: dict[Any, Counter[str]] = {}
    for i, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise InputError(path, f"annotations[{i}]: expected an object with image_id and category_id")
        name = names.get(ann.get("category_id"))
        if name is None:
            raise InputError(
                path, f"annotations[{i}]: category_id {ann.get('category_id')!r} has no named category"
            )
        boxes.setdefault(ann["image_id"], Counter())[name] += 1
    return boxes


def label(boxes: Counter[str] | None, rule: str) -> tuple[str | None, str | None, str | None]:
    """(concept, reason, detail) of one image's annotation concepts under the configured rule."""
    if not boxes:
        return None, REASON_NO_CONCEPT, "no annotation"
    ranked = sorted(boxes.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) == 1:
        return ranked[0][0], None, None
    listing = ", ".join(f"{name} ({n})" for name, n in ranked)
    if rule == "most_boxes" and ranked[0][1] > ranked[1][1]:
        return ranked[0][0], None, None
    tie = " (tie for most boxes)" if rule == "most_boxes" else ""
    return None, REASON_MULTIPLE_CONCEPTS, f"concepts: {listing}{tie}"


def iter_tables(path: Path, chunk_rows: int, options: ProviderOptions) -> Iterator[pa.Table]:
    data = load(path)
    licenses = _licenses(data)
    boxes = _concepts(path, data)
    rows: list[dict[str, Any]] = []
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict):
            raise InputError(path, f"images[{index}]: expected an object")
        concept, reason, detail = label(boxes.get(image.get("id")), options.fathomnet_multiple_concepts)
        rows.append({
            "source_id": _source_id(image),
            "url": next((_text(image.get(k)) for k in URL_KEYS if _text(image.get(k))), None),
            "scientific_name": concept,
            "license": licenses.get(image.get("license")),
            "reader_reason": reason,
            "reader_detail": detail,
            "source_file": str(path),
            "source_row": index,
        })  # fmt: skip
        if len(rows) == chunk_rows:
            yield _table(rows)
            rows = []
    if rows:
        yield _table(rows)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    names = [k for k in rows[0] if k != "source_row"]
    columns = {k: pa.array([r[k] for r in rows], pa.string()) for k in names}
    columns["source_row"] = pa.array([r["source_row"] for r in rows], pa.int64())
    return pa.table(columns)
