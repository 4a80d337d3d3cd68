"""Where test images come from: a folder of image files, a Parquet file with an image column, or
WebDataset tar shards (local paths or http(s) URLs, with `{000..009}` / `{a,b}` brace patterns).

Each source yields (test id, encoded image bytes) one image at a time, in a deterministic order:
the folder's files by relative path (the id), the Parquet file's rows in order (the id column, or
`row-N`), the shards in the order given and their samples in tar order (the id: the sample's
`__key__`, its member path up to the first dot of the file name). Ids must be unique.
"""

from __future__ import annotations

import re
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError

Item = tuple[str, bytes]
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
ID_COLUMNS = ("id", "test_id", "key", "__key__", "uuid", "image_id", "file_name", "filename", "path")
IMAGE_COLUMNS = ("image", "jpeg", "jpg", "png", "webp", "bytes", "img")
BATCH_ROWS = 256  # Parquet rows read at once
HTTP_TIMEOUT_S = 60.0
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")


def _is_image_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES if "." in name else False


def image_folder(folder: Path) -> Iterator[Item]:
    """Every image file under `folder` (by suffix, recursively), by relative path."""
    if not folder.is_dir():
        raise InputError(folder, "not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_image_name(p.name))
    if not files:
        raise InputError(folder, f"no image files ({', '.join(IMAGE_SUFFIXES)}) under this folder")
    for path in files:
        yield path.relative_to(folder).as_posix(), path.read_bytes()


def _pick(
    names: list[str], wanted: str | None, choices: tuple[str, ...], what: str, path: Path
) -> str | None:
    if wanted:
        if wanted not in names:
            raise InputError(path, f"no {what} column {wanted!r} (columns: {', '.join(names)})")
        return wanted
    return next((c for c in choices if c in names), None)


def _image_column(schema: pa.Schema, wanted: str | None, path: Path) -> str:
    def usable(field: pa.Field) -> bool:
        kind = field.type
        if pa.types.is_struct(kind):
            return any(kind.field(i).name == "bytes" for i in range(kind.num_fields))
        return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)

    name = _pick(schema.names, wanted, IMAGE_COLUMNS, "image", path)
    if name is None:
        name = next((f.name for f in schema if usable(f)), None)
    if name is None or not usable(schema.field(name)):
        raise InputError(path, "no image column: expected binary image bytes or a struct with a "
                         "`bytes` field (Hugging Face's Image); name it with --image-column")  # fmt: skip
    return name


def _image_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return value


def parquet_file(path: Path, id_column: str | None = None, image_column: str | None = None) -> Iterator[Item]:
    """Rows of a Parquet file: the id column (or row-N) and the image bytes."""
    try:
        handle = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(path, f"not a readable Parquet file: {exc}") from None
    with handle:
        schema = handle.schema_arrow
        image = _image_column(schema, image_column, path)
        ident = _pick(schema.names, id_column, ID_COLUMNS, "id", path)
        row = 0
        for batch in handle.iter_batches(batch_size=BATCH_ROWS, columns=[c for c in (ident, image) if c]):
            ids = batch[ident].to_pylist() if ident else [None] * batch.num_rows
            for test_id, value in zip(ids, batch[image].to_pylist(), strict=True):
                data = _image_bytes(value)
                if data is None:
                    raise InputError(path, f"row {row}: no image bytes in column {image!r}")
                yield (f"row-{row}" if test_id is None else str(test_id)), data
                row += 1


def expand_braces(pattern: str) -> list[str]:
    """'a-{000..002}.tar' -> a-000.tar, a-001.tar, a-002.tar; '{x,y}' -> x, y (nested, several)."""
    match = _BRACE.search(pattern)
    if not match:
        return [pattern]
    body, head, tail = match[1], pattern[: match.start()], pattern[match.end() :]
    span = _RANGE.match(body)
    if span:
        width = len(span[1])
        low, high = int(span[1]), int(span[2])
        step = 1 if high >= low else -1
        options = [f"{i:0{width}d}" for i in range(low, high + step, step)]
    else:
        options = body.split(",")
    return [out for option in options for out in expand_braces(head + option + tail)]


def _open_shard(url: str) -> Any:
    if url.startswith(("http://", "https://", "file://")):
        return urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S)  # noqa: S310 - http(s)/file only
    return open(url, "rb")


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset's key and extension of a member path: 'dir/abc.x.jpg' -> ('dir/abc', 'x.jpg')."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def _shard_samples(url: str) -> Iterator[Item]:
    """(key, image bytes) of one shard: the first image member of each sample."""
    current, image = None, None
    with _open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _split_member(member.name)
            if key != current:
                if current is not None and image is not None:
                    yield current, image
                current, image = key, None
            if image is None and ext.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES:
                image = tar.extractfile(member).read()  # type: ignore[union-attr]
    if current is not None and image is not None:
        yield current, image


def webdataset(patterns: list[str]) -> Iterator[Item]:
    """Samples of the shards the patterns expand to, in order; samples without an image are
    skipped (a WebDataset may hold text-only samples)."""
    for pattern in patterns:
        for url in expand_braces(pattern):
            try:
                yield from _shard_samples(url)
            except (OSError, tarfile.TarError) as exc:
                raise InputError(url, f"cannot read WebDataset shard: {exc}") from None


def unique_ids(items: Iterator[Item], source: str) -> Iterator[Item]:
    """Pass items through; a repeated id is an error naming it."""
    seen: set[str] = set()
    for test_id, data in items:
        if test_id in seen:
            raise InputError(source, f"test id {test_id!r} occurs twice (ids must be unique)")
        seen.add(test_id)
        yield test_id, data
