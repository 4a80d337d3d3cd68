"""Hash a stream of test images in worker processes: MD5 of the bytes, PDQ of the decoded image.

Images are sent to a process pool in chunks with a bounded number in flight, and results come
back in input order, so memory holds a few chunks whatever the size of the set and the output
does not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import Any

from stages.dedup.pdq import try_hash
from stages.dedup.settings import HashSettings

CHUNK = 32  # images per task
IN_FLIGHT_PER_WORKER = 4  # chunks queued per worker process

Row = dict[str, Any]  # test_id, md5, pdq (hex or None), pdq_quality, error


def hash_one(test_id: str, data: bytes, settings: HashSettings) -> Row:
    found, error = try_hash(data, settings)
    return {"test_id": test_id, "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "pdq": found.hex if found else None, "pdq_quality": found.quality if found else None,
            "error": error}  # fmt: skip


def hash_chunk(chunk: list[tuple[str, bytes]], settings: HashSettings) -> list[Row]:
    return [hash_one(test_id, data, settings) for test_id, data in chunk]


def _chunks(items: Iterable[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, CHUNK)):
        yield chunk


def worker_count(configured: int) -> int:
    from pipeline.executors import usable_cpus

    return configured if configured > 0 else usable_cpus()


def hash_items(items: Iterable[tuple[str, bytes]], settings: HashSettings, workers: int) -> Iterator[Row]:
    """Rows in input order; `workers` = 1 hashes in this process."""
    if workers <= 1:
        for chunk in _chunks(items):
            yield from hash_chunk(chunk, settings)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future] = deque()
        for chunk in _chunks(items):
            pending.append(pool.submit(hash_chunk, chunk, settings))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
