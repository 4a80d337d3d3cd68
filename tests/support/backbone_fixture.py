"""The demo's mini GBIF backbone (demo/backbone.py) and session fixtures built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.backbone import (
    HAND_SOURCE,
    SOURCE_1_TAXA,
    TAXON_HEADER,
    USAGES,
    VERNACULAR_HEADER,
    _row,
    build_gbif_dump,
    build_source1_dump,
    taxon_rows,
    vernacular_rows,
    write_dump,
    write_if_changed,
)

__all__ = [
    "HAND_SOURCE",
    "SOURCE_1_TAXA",
    "TAXON_HEADER",
    "USAGES",
    "VERNACULAR_HEADER",
    "_row",
    "build_gbif_dump",
    "build_source1_dump",
    "taxon_rows",
    "vernacular_rows",
    "write_dump",
    "write_if_changed",
]


@pytest.fixture(scope="session")
def gbif_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mini GBIF backbone as a zip (the form GBIF publishes)."""
    return build_gbif_dump(tmp_path_factory.mktemp("backbone") / "backbone.zip", as_zip=True)


@pytest.fixture(scope="session")
def gbif_index(gbif_dump: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stages.taxonomy.index import ensure_index

    return ensure_index(gbif_dump, tmp_path_factory.mktemp("index"))


@pytest.fixture(scope="session")
def source1_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stages.taxonomy.index import ensure_index

    dump = build_source1_dump(tmp_path_factory.mktemp("source1") / "dump")
    return ensure_index(dump, tmp_path_factory.mktemp("index1"))
