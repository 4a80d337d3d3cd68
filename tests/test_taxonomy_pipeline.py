"""01 (its real schema) -> 02 (the real download stage, loopback image server) -> 03: only the
rows 02 stored reach 03, each with its resolved taxonomy."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ledger import ManifestStore
from pipeline.runner import stage_context
from stages.taxonomy import STAGE as TAXONOMY
from tests.support.backbone_fixture import gbif_dump  # noqa: F401
from tests.support.download_fixtures import config, ingest_schema, run_download
from tests.support.loopback_server import LoopbackServer

ROWS = [  # (kingdom, genus, species, scientific name)
    ("Animalia", "Ursus", "Ursus arctos", "Ursus arctos Linnaeus, 1758"),
    ("Plantae", None, "Spruceanthus marianus", None),
    ("Animalia", "Apis", "mellifera", None),
    ("Metazoa", "Dugesia", None, None),
    ("unknown", None, None, None),
]


def write_ingest(root: Path, srv: LoopbackServer) -> list[str]:
    """One 01 partition (01's real schema): a good image per row, plus one missing URL."""
    schema = ingest_schema()
    urls = [srv.image_url(0, 500 + i, 640, 480) for i in range(len(ROWS))]
    urls.append(srv.url(0, "/missing.jpg"))
    rows = [*ROWS, ROWS[0]]
    columns: dict[str, list] = {name: [None] * len(urls) for name in schema.names}
    columns.update(
        uuid=[str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, u)) for u in urls], status=["ok"] * len(urls),
        url=urls, host=[u.split("/")[2] for u in urls], provider=["loopback"] * len(urls),
        kingdom=[r[0] for r in rows], genus=[r[1] for r in rows], species=[r[2] for r in rows],
        scientific_name=[r[3] for r in rows],
    )  # fmt: skip
    table = pa.table([pa.array(columns[f.name], f.type) for f in schema], schema=schema)
    ManifestStore(root, "01_ingest").commit(0, table, schema, len(urls), {"source": "test"}, {})
    return columns["uuid"]


def test_real_download_manifest_feeds_taxonomy(tmp_path: Path, gbif_dump: Path):  # noqa: F811
    root = tmp_path / "root"
    cfg = config()
    cfg["taxonomy"]["backbone_path"] = str(gbif_dump)
    with LoopbackServer(hosts=1) as server:
        uuids = write_ingest(root, server)
        run_download(root, cfg)
    downloaded = pq.read_table(ManifestStore(root, "02_download").part_path(0))
    ok = [u for u, s in zip(downloaded["uuid"].to_pylist(), downloaded["status"].to_pylist(),
                            strict=True) if s == "ok"]  # fmt: skip
    assert ok == uuids[:-1]  # the missing URL failed in 02

    ctx = stage_context(root, "03_taxonomy", cfg)
    (part,) = TAXONOMY.plan(ctx)
    out = TAXONOMY.run_partition(part, ctx)
    rows = out.table.to_pylist()
    assert out.rows_in == len(ok) and [r["uuid"] for r in rows] == ok
    by_input = {(r["input_kingdom"], r["input_genus"], r["input_species"]): r for r in rows}
    assert by_input[("Animalia", "Ursus", "Ursus arctos")]["family"] == "Ursidae"
    assert by_input[("Plantae", None, "Spruceanthus marianus")]["species"] == "Cheilolejeunea mariana"
    assert by_input[("Animalia", "Apis", "mellifera")]["common_name"] == "western honey bee"
    assert by_input[("Metazoa", "Dugesia", None)]["phylum"] == "Platyhelminthes"
    assert by_input[("unknown", None, None)]["resolution_status"] == "empty_input"
    assert {r["status"] for r in rows} == {"ok"}
