"""The GNVerifier client over real HTTP (loopback server), and its lenient response reading."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from stages.taxonomy.gnverifier import GNVerifierResolver, parse_response
from stages.taxonomy.names import name_id
from tests.support.backbone_fixture import gbif_dump, gbif_index  # noqa: F401
from tests.support.gnverifier_server import GNVerifierServer


@pytest.fixture
def server(gbif_index: Path) -> Iterator[GNVerifierServer]:  # noqa: F811
    with GNVerifierServer({11: gbif_index}) as srv:
        yield srv


def client(url: str, batch_size: int = 50, attempts: int = 3, concurrency: int = 1,
           timeout: float = 10.0) -> GNVerifierResolver:  # fmt: skip
    return GNVerifierResolver(url, [11, 1, 179], batch_size, timeout, attempts, 0.01, 0.05,
                              concurrency, True, False)  # fmt: skip


def test_wire_format_of_the_loopback_server(server: GNVerifierServer):
    body = {"nameStrings": ["Spruceanthus marianus (Gottsche) Mizut.", "Aaa vva"],
            "dataSources": [11], "withAllMatches": True, "withCapitalization": True}  # fmt: skip
    data = requests.post(f"{server.url}/verifications", json=body, timeout=10).json()
    assert data["metadata"]["namesNumber"] == 2
    found, missing = data["names"]
    assert found["id"] == name_id("Spruceanthus marianus (Gottsche) Mizut.")
    assert found["matchType"] == "Exact" and found["dataSourcesIds"] == [11]
    result = found["bestResult"]
    for key in ("dataSourceId", "stemEditDistance", "classificationIds", "scoreDetails",
                "currentRecordId", "taxonomicStatus", "isSynonym", "matchedCanonicalFull"):  # fmt: skip
        assert key in result, key
    assert "dataSourceID" not in result and "editDistanceStem" not in result  # as the service sends
    assert result["taxonomicStatus"] == "Synonym" and result["currentRecordId"] == "7362076"
    assert result["classificationPath"].endswith("|Cheilolejeunea|Cheilolejeunea mariana")
    assert result["classificationRanks"].split("|")[-2:] == ["genus", "species"]
    assert len(result["classificationIds"].split("|")) == len(result["classificationPath"].split("|"))
    assert missing["matchType"] == "NoMatch" and "bestResult" not in missing
    get = requests.get(f"{server.url}/verifications/Ursus arctos|Ursus?data_sources=11", timeout=10)
    assert [n["matchType"] for n in get.json()["names"]] == ["Exact", "Exact"]
    assert requests.get(f"{server.url}/ping", timeout=10).text == "pong"


def test_lenient_reading_of_spec_spellings_and_missing_results():
    result = {"dataSourceID": 11, "recordId": "5", "matchType": "Fuzzy", "matchedName": "Aus bus L.",
              "matchedCanonicalSimple": "Aus bus", "currentRecordId": "5", "currentName": "Aus bus L.",
              "currentCanonicalSimple": "Aus bus", "isSynonym": False, "editDistanceStem": 1,
              "classificationPath": "Animalia|Aus|Aus bus", "classificationRanks": "Kingdom|genus|species",
              "sortScore": 7.5}  # fmt: skip
    data = {"metadata": {}, "names": [{"input": "Aus bus", "matchType": "Fuzzy", "bestResult": result}]}
    (answer,) = parse_response(data, ["Aus bus"], 11)
    (match,) = answer.results
    assert match.data_source_id == 11 and match.stem_edit_distance == 1
    assert match.taxonomic_status == "N/A" and match.lineage() == {
        "kingdom": "Animalia", "genus": "Aus", "species": "Aus bus"}  # fmt: skip
    other_source = {"metadata": {}, "names": [{"name": "Aus bus", "matchType": "Exact",
                                               "results": [{**result, "dataSourceID": 1}]}]}  # fmt: skip
    assert parse_response(other_source, ["Aus bus"], 11)[0].match_type == "NoMatch"


def test_batches_never_mix_sources_and_run_concurrently(server: GNVerifierServer):
    names = ["Ursus arctos", "Ursus americanus", "Apis mellifera", "Apis cerana", "Poa annua",
             "Quercus douglasii", "Boa constrictor", "Dugesia", "Satyrium", "Zzz yyy"]  # fmt: skip
    resolver = client(server.url, batch_size=3, concurrency=3)
    for source in (11, 1):
        outcomes = list(resolver.verify(names, source))
        assert sorted(t for o in outcomes for t in o.terms) == sorted(names)
        assert all(o.error is None and o.source == source for o in outcomes)
    requests_seen = server.verification_requests()
    assert len(requests_seen) == 8 and all(len(r.names) <= 3 for r in requests_seen)
    assert [r.sources for r in requests_seen] == [[11]] * 4 + [[1]] * 4


def test_transient_errors_are_retried_with_retry_after(server: GNVerifierServer):
    calls = {"n": 0}

    def flaky(names: list[str], sources: list[int]) -> bool:
        calls["n"] += 1
        return calls["n"] <= 2

    server.fail_when, server.fail_status, server.retry_after = flaky, 429, "0"
    (outcome,) = client(server.url, attempts=3).verify(["Ursus arctos"], 11)
    assert outcome.error is None and outcome.answers[0].match_type == "Exact"
    assert [r.status for r in server.verification_requests()] == [429, 429, 200]


def test_a_batch_that_keeps_failing_fails_alone(server: GNVerifierServer):
    server.fail_when = lambda names, sources: "Apis mellifera" in names
    outcomes = list(client(server.url, batch_size=2, attempts=2).verify(
        ["Apis cerana", "Apis mellifera", "Ursus arctos", "Ursus americanus"], 11))  # fmt: skip
    failed = [o for o in outcomes if o.error]
    assert [o.terms for o in failed] == [["Apis cerana", "Apis mellifera"]]
    assert "HTTP 500" in failed[0].error and "after 2 attempt(s)" in failed[0].error
    assert sum(1 for o in outcomes if o.answers) == 1


def test_client_errors_are_not_retried(server: GNVerifierServer):
    server.fail_when, server.fail_status = (lambda names, sources: True), 400
    (outcome,) = client(server.url, attempts=4).verify(["Ursus arctos"], 11)
    assert "HTTP 400" in outcome.error and len(server.verification_requests()) == 1


def test_unreachable_server_fails_the_batch_with_the_network_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (outcome,) = client(f"http://127.0.0.1:{port}/api/v1", attempts=2, timeout=2).verify(["Aus"], 11)
    assert "ConnectionError" in outcome.error


def test_request_body_uses_the_documented_fields():
    body = client("http://127.0.0.1:9/api/v1").request_body(["Bubo bubo"], 1)
    assert json.loads(json.dumps(body)) == {
        "nameStrings": ["Bubo bubo"], "dataSources": [1], "withAllMatches": True,
        "withCapitalization": True, "withSpeciesGroup": False,
        "withUninomialFuzzyMatch": False, "withStats": False,
    }  # fmt: skip
