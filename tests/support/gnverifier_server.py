"""A loopback HTTP server speaking GNVerifier's API v1 wire format, answering from backbone
indexes (one per data source id) built from the same dumps the offline resolver reads, so the
two resolvers can be compared name by name.

Wire format as the live service sends it (shared/reference/gnverifier.md): request
`nameStrings`, `dataSources`, `withAllMatches`, `withCapitalization`, `withUninomialFuzzyMatch`;
response `metadata` + `names[]` with `id` (UUIDv5 in the globalnames.org namespace), `name`,
`cardinality`, `matchType`, `bestResult`, `results[]`, `dataSourcesNum`, `dataSourcesIds`,
`curation`, `error`; results with `dataSourceId` (not the spec's `dataSourceID`),
`stemEditDistance` (not `editDistanceStem`), `classificationIds` and `scoreDetails`.

For tests it records every request (path, names, sources, HTTP status), can delay answers, fail
chosen batches with HTTP 500, and rewrite the match type of chosen names (e.g. to a type newer
than any client knows).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from stages.taxonomy.backbone import BackboneIndex, MatchOptions, ScoredMatch, match_name
from stages.taxonomy.names import name_id, parse_name

API = "/api/v1"
TITLES = {1: "Catalogue of Life", 11: "GBIF Backbone Taxonomy", 179: "Open Tree of Life"}
VERSION = {"version": "v1.1.2-loopback", "build": "test"}


@dataclass
class LoggedRequest:
    method: str
    path: str
    names: list[str]
    sources: list[int]
    status: int


class GNVerifierServer:
    def __init__(self, indexes: dict[int, Path], max_edit_distance: int = 1):
        self.indexes = {source: BackboneIndex(path) for source, path in indexes.items()}
        self.max_edit_distance = max_edit_distance
        self.requests: list[LoggedRequest] = []
        self.lock = threading.Lock()
        # (names, sources) -> True to fail that request with `fail_status` (and `retry_after`).
        self.fail_when: Callable[[list[str], list[int]], bool] | None = None
        self.fail_status = 500
        self.retry_after: str | None = None
        # input name -> match type to send instead of the computed one.
        self.match_type_overrides: dict[str, str] = {}
        self.delay_s = 0.0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{API}"

    def start(self) -> GNVerifierServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for index in self.indexes.values():
            index.close()

    def __enter__(self) -> GNVerifierServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers ------------------------------------------------------------------------

    def log(self, entry: LoggedRequest) -> None:
        with self.lock:
            self.requests.append(entry)

    def verification_requests(self) -> list[LoggedRequest]:
        with self.lock:
            return [r for r in self.requests if "verifications" in r.path]

    def names_requested(self, status: int | None = None) -> list[str]:
        return [n for r in self.verification_requests() if status in (None, r.status) for n in r.names]

    def reset_log(self) -> None:
        with self.lock:
            self.requests.clear()

    # -- answering ---------------------------------------------------------------------------

    def verify(self, names: list[str], sources: list[int], all_matches: bool, capitalize: bool,
               uninomial_fuzzy: bool) -> dict[str, Any]:  # fmt: skip
        options = MatchOptions(uninomial_fuzzy, self.max_edit_distance)
        out = [self._name(n, sources, all_matches, capitalize, options) for n in names]
        metadata = {
            "namesNumber": len(names), "withAllSources": False, "withAllMatches": all_matches,
            "withCapitalization": capitalize, "withSpeciesGroup": False,
            "withUninomialFuzzyMatch": uninomial_fuzzy, "withStats": False,
            "dataSources": sources, "mainTaxonThreshold": 0.5,
        }  # fmt: skip
        return {"metadata": metadata, "names": out}

    def _name(self, name: str, sources: list[int], all_matches: bool, capitalize: bool,
              options: MatchOptions) -> dict[str, Any]:  # fmt: skip
        parsed = parse_name(name, "gnparser", capitalize)
        scored: list[ScoredMatch] = []
        for source in sources:
            index = self.indexes.get(source)
            if index is not None:
                scored.extend(match_name(index, source, parsed, options)[1])
        scored.sort(key=lambda s: s.match.order_key())
        results = [self._result(s) for s in scored]
        override = self.match_type_overrides.get(name)
        if override:
            for result in results:
                result["matchType"] = override
        match_type = results[0]["matchType"] if results else ("Virus" if parsed.virus else "NoMatch")
        item: dict[str, Any] = {
            "id": name_id(name), "name": name, "cardinality": parsed.cardinality,
            "matchType": match_type,
            "dataSourcesNum": len({s.match.data_source_id for s in scored}),
            "dataSourcesIds": sorted({s.match.data_source_id for s in scored}),
            "curation": "Curated" if results else "NotCurated", "error": "",
        }  # fmt: skip
        if results:
            item["bestResult"] = results[0]
            if all_matches:
                item["results"] = results
        return item

    def _result(self, scored: ScoredMatch) -> dict[str, Any]:
        match = scored.match
        index = self.indexes[match.data_source_id]
        base = scored.current or scored.row
        ids = index.classification_ids(base)
        ranks = [rank for rank, _ in match.classification]
        path = [name for _, name in match.classification]
        matched = parse_name(match.matched_name, "gnparser", False)
        current = parse_name(match.current_name, "gnparser", False) if match.current_name else None
        return {
            "dataSourceId": match.data_source_id,
            "dataSourceTitleShort": TITLES.get(match.data_source_id, str(match.data_source_id)),
            "curation": "Curated", "recordId": match.record_id,
            "outlink": f"https://www.gbif.org/species/{match.record_id}",
            "entryDate": "2024-01-01", "sortScore": match.sort_score,
            "matchedName": match.matched_name, "matchedCardinality": match.matched_cardinality,
            "matchedCanonicalSimple": match.matched_canonical,
            "matchedCanonicalFull": matched.canonical_full or match.matched_canonical,
            "currentRecordId": match.current_record_id, "currentName": match.current_name,
            "currentCardinality": current.cardinality if current else 0,
            "currentCanonicalSimple": match.current_canonical,
            "currentCanonicalFull": (current.canonical_full if current else "") or match.current_canonical,
            "taxonomicStatus": match.taxonomic_status, "isSynonym": match.is_synonym,
            "classificationPath": "|".join(path), "classificationRanks": "|".join(ranks),
            "classificationIds": "|".join(ids.get(name, "") for name in path),
            "editDistance": match.edit_distance, "stemEditDistance": match.stem_edit_distance,
            "matchType": match.match_type, "scoreDetails": scored.details, "vernaculars": [],
        }  # fmt: skip


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


class _Handler(BaseHTTPRequestHandler):
    owner: GNVerifierServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:  # fmt: skip
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, names: list[str], sources: list[int], flags: dict[str, bool]) -> None:
        owner = self.owner
        if owner.delay_s:
            time.sleep(owner.delay_s)
        if owner.fail_when is not None and owner.fail_when(names, sources):
            owner.log(LoggedRequest(self.command, self.path, names, sources, owner.fail_status))
            headers = {"Retry-After": owner.retry_after} if owner.retry_after else None
            self._send(owner.fail_status, {"error": "induced failure"}, headers=headers)
            return
        body = owner.verify(names, sources, flags["all"], flags["cap"], flags["fuzzy"])
        owner.log(LoggedRequest(self.command, self.path, names, sources, 200))
        self._send(200, body)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if path != f"{API}/verifications":
            self._send(404, {"error": f"no route {path}"})
            return
        try:
            body = json.loads(raw)
            names = body["nameStrings"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("nameStrings must be an array of strings")
            sources = [int(s) for s in body.get("dataSources") or sorted(self.owner.indexes)]
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": f"bad request: {exc}"})
            return
        flags = {"all": _flag(body.get("withAllMatches")), "cap": _flag(body.get("withCapitalization")),
                 "fuzzy": _flag(body.get("withUninomialFuzzyMatch"))}  # fmt: skip
        self._answer(names, sources, flags)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == f"{API}/ping":
            self._send(200, "pong", "text/plain")
        elif path == f"{API}/version":
            self._send(200, VERSION)
        elif path == f"{API}/data_sources":
            self._send(200, [{"id": s, "titleShort": TITLES.get(s, str(s)), "title": TITLES.get(s, ""),
                              "curation": "Curated", "recordCount": 0, "updatedAt": "2024-01-01"}
                             for s in sorted(self.owner.indexes)])  # fmt: skip
        elif path.startswith(f"{API}/verifications/"):
            names = unquote(path[len(f"{API}/verifications/"):]).split("|")
            raw_sources = query.get("data_sources", [""])[0]
            sources = [int(s) for s in raw_sources.split("|") if s] or sorted(self.owner.indexes)
            flags = {"all": _flag(query.get("all_matches", ["false"])[0]),
                     "cap": _flag(query.get("capitalize", ["false"])[0]),
                     "fuzzy": _flag(query.get("fuzzy_uninomial", ["false"])[0])}  # fmt: skip
            self._answer(names, sources, flags)
        else:
            self._send(404, {"error": f"no route {path}"})
