"""The on-disk cache of resolver answers and of per-tuple decisions (SQLite, WAL mode).

- answers: keyed by (resolver identity digest, data source, name-string); written in one
  transaction per batch, so a killed run loses at most the batches in flight and a rerun asks
  the resolver only for names it has not answered yet.
- decisions: keyed by (decision parameters digest, name tuple key): what a partition's rows
  get. Failed decisions are kept (with reason and detail) until a later attempt replaces them.

Several processes may share the file (the driver resolving, workers retrying): writers wait on
SQLite's lock (busy timeout) instead of failing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from stages.taxonomy.resolver import Answer

# SQLite bound parameters per IN (...) query.
_CHUNK = 500
# Seconds a writer waits for another process's transaction.
BUSY_TIMEOUT_S = 120

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers(
    resolver TEXT, source INTEGER, term TEXT, answer BLOB, PRIMARY KEY(resolver, source, term)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions(
    params TEXT, tuple_key TEXT, ok INTEGER, decision BLOB, PRIMARY KEY(params, tuple_key)
) WITHOUT ROWID;
"""


def _pack(value: Any) -> bytes:
    return zlib.compress(json.dumps(value, sort_keys=True, separators=(",", ":")).encode(), 1)


def _unpack(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob))


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class AnswerCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a committed batch survives a killed process (not a power cut).
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._conn.commit()

    # -- answers ----------------------------------------------------------------------------

    def get_answers(self, resolver: str, source: int, terms: Sequence[str]) -> dict[str, Answer]:
        found: dict[str, Answer] = {}
        with self._lock:
            for chunk in _chunks(list(terms)):
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT term, answer FROM answers WHERE resolver = ? AND source = ? "
                    f"AND term IN ({marks})", (resolver, source, *chunk),
                ).fetchall()  # fmt: skip
                found.update((term, Answer.from_json(_unpack(blob))) for term, blob in rows)
        return found

    def put_answers(self, resolver: str, answers: Sequence[Answer]) -> None:
        rows = [(resolver, a.source, a.term, _pack(a.to_json())) for a in answers]
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", rows)

    # -- decisions --------------------------------------------------------------------------

    def get_decisions(self, params: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for chunk in _chunks(sorted(set(keys))):
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT tuple_key, decision FROM decisions WHERE params = ? "
                    f"AND tuple_key IN ({marks})", (params, *chunk),
                ).fetchall()  # fmt: skip
                found.update((key, _unpack(blob)) for key, blob in rows)
        return found

    def decided_keys(self, params: str, keys: Sequence[str], include_failed: bool) -> set[str]:
        """Keys among `keys` that have a decision (an ok one unless `include_failed`)."""
        found: set[str] = set()
        condition = "" if include_failed else " AND ok = 1"
        with self._lock:
            for chunk in _chunks(sorted(set(keys))):
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT tuple_key FROM decisions WHERE params = ? AND tuple_key IN ({marks})"
                    + condition, (params, *chunk),
                ).fetchall()  # fmt: skip
                found.update(r[0] for r in rows)
        return found

    def put_decisions(self, params: str, decisions: Iterable[tuple[str, dict[str, Any]]]) -> None:
        rows = [(params, key, int(value["status"] == "ok"), _pack(value)) for key, value in decisions]
        if not rows:
            return
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
