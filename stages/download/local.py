"""Local images (01 rows with `local_root` and `local_member`: BIOSCAN-5M archives, folders of
images): read in place through `pipeline.local_images` and put through the same image rules as
downloaded bytes (size limit, bomb guard, decode check, orientation, resize, re-encode, MD5 of
the original and of the stored bytes), into the same spool, store and manifest columns.

Such a row makes no HTTP request: `http_status`, `final_url`, `content_type` and `robots` stay
null, `attempts` is 1 and `attempt_log` is `local`. Reasons: `unsafe_path` (the member would
read outside its root), `local_missing` (not in the archive / folder), `local_read_error` (a
corrupt archive or an I/O error), `too_large_body`, and the image reasons of any download.
Decoding releases the GIL, so `download.local_threads` threads read and encode in parallel; the
store is written in manifest order afterwards, so the result does not depend on timing.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from pipeline.local_images import LocalReader, LocalReadError
from stages.download.attempt import Outcome
from stages.download.images import ImageError, ImageRules, md5_hex, process
from stages.download.manifest import RowInput
from stages.download.progress import RowProgress
from stages.download.reasons import INTERNAL_ERROR, status_of
from stages.download.scheduler import RowFinal
from stages.download.settings import DownloadSettings, image_rules
from stages.download.store import Spool

LOG_CODE = "local"
# Seconds between progress checks while waiting on the reader threads.
PROGRESS_POLL_S = 0.5


class _Readers:
    """One LocalReader per root of the partition (a root that cannot be opened is remembered as
    the error every row of it gets)."""

    def __init__(self) -> None:
        self._readers: dict[str, LocalReader | LocalReadError] = {}

    def get(self, root: str | None) -> LocalReader:
        key = root or ""
        if key not in self._readers:
            try:
                self._readers[key] = LocalReader(key)
            except LocalReadError as exc:
                self._readers[key] = exc
        found = self._readers[key]
        if isinstance(found, LocalReadError):
            raise found
        return found


def read_one(row: RowInput, reader: LocalReader, s: DownloadSettings, rules: ImageRules,
             spool: Spool) -> RowFinal:  # fmt: skip
    started = time.monotonic()
    fetched_at = int(time.time() * 1000)
    out = Outcome(None)
    spooled = None
    try:
        body = reader.read(row.local_member, s.max_body_bytes)
        out.body_bytes, out.md5 = len(body), md5_hex(body)
        image = process(body, rules)
        out.width, out.height = image.width, image.height
        out.stored_width, out.stored_height = image.stored_width, image.stored_height
        out.stored_bytes, out.stored_md5 = len(image.jpeg), image.stored_md5
        spooled = spool.append(image.jpeg)
    except LocalReadError as exc:
        out.reason, out.detail = exc.reason, exc.detail
    except ImageError as exc:
        out.reason, out.detail, out.width, out.height = exc.reason, exc.detail, exc.width, exc.height
    return RowFinal(out, 1, [LOG_CODE], 0.0, 0.0, time.monotonic() - started, fetched_at, spooled)


def read_local(rows: dict[int, RowInput], s: DownloadSettings, spool: Spool,
               progress: RowProgress | None) -> dict[int, RowFinal]:  # fmt: skip
    """Decide every local row (keyed by its position in the partition)."""
    if not rows:
        return {}
    rules = image_rules(s)
    readers = _Readers()
    finals: dict[int, RowFinal] = {}

    def decide(row: RowInput) -> RowFinal:
        try:
            return read_one(row, readers.get(row.local_root), s, rules, spool)
        except LocalReadError as exc:
            return RowFinal(Outcome(exc.reason, exc.detail), 1, [LOG_CODE], 0.0, 0.0, 0.0, None)
        except Exception as exc:  # noqa: BLE001 - recorded on the row (failed, retryable), never lost
            detail = f"{type(exc).__name__}: {exc}"
            return RowFinal(Outcome(INTERNAL_ERROR, detail), 1, [LOG_CODE], 0.0, 0.0, 0.0, None)

    # Readers are opened here, before the threads start: opening a zip parses its member list
    # once, and the threads then only look readers up.
    for root in sorted({row.local_root or "" for row in rows.values()}):
        with contextlib.suppress(LocalReadError):  # remembered; each of its rows gets the error
            readers.get(root)
    with ThreadPoolExecutor(max_workers=min(s.local_threads, len(rows)), thread_name_prefix="local") as pool:
        pending = {pool.submit(decide, row): index for index, row in rows.items()}
        while pending:
            done, _ = wait(pending, timeout=PROGRESS_POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                final = future.result()
                finals[pending.pop(future)] = final
                if progress is not None:
                    progress.decided(_status(final))
            if progress is not None:
                progress.tick()
    return finals


def _status(final: RowFinal) -> str:
    return "ok" if final.outcome.reason is None else status_of(final.outcome.reason)
