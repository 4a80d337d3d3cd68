"""HTTP client of the GNVerifier API (`POST /verifications`), as a resolver.

Each request carries one batch of name-strings and exactly one data source (sources are never
mixed in a batch, so every answer is attributable). Batches run concurrently; each is retried
on 429, 5xx and network errors with exponential backoff and full jitter (honouring Retry-After),
and a batch that still fails yields an error for its names only.

Responses are read leniently, as the service's own responses differ from its OpenAPI document:
`dataSourceId` (spec: `dataSourceID`), `stemEditDistance` (spec: `editDistanceStem`),
`classificationIds` (absent from the spec), `name`/`id` (spec: `input`/`inputId`) and match
types newer than the spec are all accepted; unknown match types are kept as they are.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import requests

from pipeline import __version__
from stages.taxonomy.resolver import NO_MATCH, Answer, BatchOutcome, Match, Resolver, ResolverError

# HTTP statuses worth another attempt (rate limiting and server-side trouble).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"tolpipe/{__version__} (taxonomy)"


def _first(data: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if key in data and data[key] is not None:
            return data[key]
    return default


def parse_result(data: dict[str, Any]) -> Match:
    """One ResultData object -> Match."""
    record_id = str(_first(data, "recordId", default=""))
    path = str(_first(data, "classificationPath", default="") or "")
    ranks = str(_first(data, "classificationRanks", default="") or "")
    names = path.split("|") if path else []
    rank_list = ranks.split("|") if ranks else []
    rank_list += [""] * (len(names) - len(rank_list))
    status = _first(data, "taxonomicStatus", default="")
    if not status:
        status = "Synonym" if data.get("isSynonym") else "N/A"
    return Match(
        data_source_id=int(_first(data, "dataSourceId", "dataSourceID", default=0)),
        record_id=record_id,
        match_type=str(_first(data, "matchType", default=NO_MATCH)),
        matched_name=str(_first(data, "matchedName", default="")),
        matched_canonical=str(_first(data, "matchedCanonicalSimple", default="")),
        matched_cardinality=int(_first(data, "matchedCardinality", default=0)),
        current_record_id=str(_first(data, "currentRecordId", default=record_id)),
        current_name=str(_first(data, "currentName", default="")),
        current_canonical=str(_first(data, "currentCanonicalSimple", default="")),
        taxonomic_status=str(status),
        classification=tuple(
            (r.strip().lower(), n.strip()) for r, n in zip(rank_list, names, strict=False) if n.strip()
        ),
        edit_distance=int(_first(data, "editDistance", default=0)),
        stem_edit_distance=int(_first(data, "stemEditDistance", "editDistanceStem", default=0)),
        sort_score=float(_first(data, "sortScore", default=0.0)),
    )


def parse_response(data: Any, terms: Sequence[str], source: int) -> list[Answer]:
    """A VerificationOutput -> one Answer per requested term (same order)."""
    if not isinstance(data, dict) or not isinstance(data.get("names"), list):
        raise ResolverError("response has no 'names' array")
    names = data["names"]
    if len(names) != len(terms):
        raise ResolverError(f"response has {len(names)} names for {len(terms)} requested")
    answers = []
    for term, item in zip(terms, names, strict=True):
        if item.get("error"):
            raise ResolverError(f"server error for {term!r}: {item['error']}")
        results = item.get("results")
        if not results:
            results = [item["bestResult"]] if item.get("bestResult") else []
        matches = [parse_result(r) for r in results]
        # Only the requested source counts (a server ignoring dataSources must not leak others).
        matches = [m for m in matches if m.data_source_id == source]
        matches.sort(key=lambda m: m.order_key())
        match_type = str(item.get("matchType") or NO_MATCH)
        answers.append(Answer(term, source, match_type if matches else NO_MATCH, tuple(matches)))
    return answers


class GNVerifierResolver(Resolver):
    kind = "gnverifier"

    def __init__(
        self,
        url: str,
        sources: Sequence[int],
        batch_size: int,
        timeout_s: float,
        max_attempts: int,
        backoff_s: float,
        backoff_max_s: float,
        concurrency: int,
        capitalize: bool,
        uninomial_fuzzy: bool,
    ):
        self.url = url.rstrip("/")
        self._sources = [int(s) for s in sources]
        self.batch_size = max(1, int(batch_size))
        self.timeout_s = timeout_s
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.concurrency = max(1, int(concurrency))
        self.capitalize = capitalize
        self.uninomial_fuzzy = uninomial_fuzzy
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "capitalize": self.capitalize,
                "uninomial_fuzzy": self.uninomial_fuzzy, "all_matches": True}  # fmt: skip

    def sources(self) -> list[int]:
        return list(self._sources)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def request_body(self, terms: Sequence[str], source: int) -> dict[str, Any]:
        return {
            "nameStrings": list(terms), "dataSources": [source], "withAllMatches": True,
            "withCapitalization": self.capitalize, "withSpeciesGroup": False,
            "withUninomialFuzzyMatch": self.uninomial_fuzzy, "withStats": False,
        }  # fmt: skip

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.backoff_max_s)
            except ValueError:
                pass
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2**attempt))

    def post_batch(self, terms: Sequence[str], source: int) -> list[Answer]:
        """POST one batch, retrying transient failures; raises ResolverError when it gives up."""
        endpoint = f"{self.url}/verifications"
        body = self.request_body(terms, source)
        last = ""
        for attempt in range(self.max_attempts):
            retry_after = None
            try:
                response = self._session().post(endpoint, json=body, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        data = response.json()
                    except ValueError as exc:
                        raise ResolverError(f"POST {endpoint}: invalid JSON ({exc})") from None
                    return parse_response(data, terms, source)
                last = f"HTTP {response.status_code} {response.reason}: {response.text[:200]}"
                if response.status_code not in RETRY_STATUSES:
                    break
                retry_after = response.headers.get("Retry-After")
            if attempt + 1 < self.max_attempts:
                time.sleep(self._delay(attempt, retry_after))
        raise ResolverError(f"POST {endpoint} (source {source}, {len(terms)} names) failed after "
                            f"{attempt + 1} attempt(s): {last}")  # fmt: skip

    def _outcome(self, batch: list[str], source: int) -> BatchOutcome:
        try:
            return BatchOutcome(batch, source, answers=self.post_batch(batch, source))
        except ResolverError as exc:
            return BatchOutcome(batch, source, error=str(exc))

    def verify(self, terms: Sequence[str], source: int) -> Iterator[BatchOutcome]:
        batches = [list(terms[i : i + self.batch_size]) for i in range(0, len(terms), self.batch_size)]
        if self.concurrency == 1 or len(batches) <= 1:
            for batch in batches:
                yield self._outcome(batch, source)
            return
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="gnverifier") as pool:
            futures = [pool.submit(self._outcome, batch, source) for batch in batches]
            for future in as_completed(futures):
                yield future.result()

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
