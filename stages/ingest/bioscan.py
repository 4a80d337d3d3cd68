"""BIOSCAN-5M: the published metadata CSV plus the image archive, read in place.

Layout (BIOSCAN-5M repository, `BIOSCAN_images/README.md` and the `bioscan-dataset` package):
the metadata file `BIOSCAN_5M_Insect_Dataset_metadata.csv` has one row per specimen with
`processid, sampleid, taxon, phylum, class, order, family, subfamily, genus, species, dna_bin,
dna_barcode, country, province_state, coord-lat, coord-lon, image_measurement_value,
area_fraction, scale_factor, inferred_ranks, split, index_bioscan_1M_insect, chunk`; images are
`bioscan5m/images/<imgtype>/<split>/<chunk>/<processid>.jpg` inside `BIOSCAN_5M_<imgtype>.zip`
(imgtype: original_full, cropped, original_256, cropped_256; `chunk` is empty for the small
splits, which then have no chunk folder).

Record columns: `processid` -> source_id, `taxon` (the most specific name) -> scientific_name,
`phylum` ... `species` as given, `split` -> split. The dataset holds insects only and leaves out
the kingdom: kingdom, phylum and class are filled where empty from `ingest.bioscan_kingdom`,
`bioscan_phylum`, `bioscan_class` (Animalia, Arthropoda, Insecta). Licence and rights holder are
the dataset's (`ingest.bioscan_license`, `bioscan_rights_holder`). The image is named by
`local_root` (the archive or folder) and `local_member`; nothing is extracted.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError
from pipeline.local_images import is_zip, join_member, local_url
from stages.ingest.dwca import TextDialect, iter_delimited, read_header
from stages.ingest.options import ProviderOptions

DIALECT = TextDialect(delimiter=",", quote_char='"', header=True)
# Metadata column -> record column (or a working column whose name starts with "_").
COLUMNS = {
    "processid": "source_id",
    "taxon": "scientific_name",
    "phylum": "phylum",
    "class": "class",
    "order": "order",
    "family": "family",
    "genus": "genus",
    "species": "species",
    "split": "split",
    "chunk": "_chunk",
}
REQUIRED = ("processid", "split")
IMAGES_PREFIX = "bioscan5m/images"
IMAGE_TYPES = ("original_full", "cropped", "original_256", "cropped_256")
IMAGE_SUFFIX = ".jpg"


def _opener(path: Path):
    return lambda: pa.input_stream(str(path), compression="detect")


def mapping(path: Path) -> dict[str, str]:
    header = read_header(_opener(path), str(path), DIALECT)
    present = {h.strip().lower(): h for h in header}
    for required in REQUIRED:
        if required not in present:
            raise InputError(path, f"missing required BIOSCAN-5M metadata column {required!r} "
                             "(expected the published BIOSCAN_5M_Insect_Dataset_metadata.csv)")  # fmt: skip
    return {record: present[name] for name, record in COLUMNS.items() if name in present}


def image_root(path: Path, options: ProviderOptions) -> Path:
    root = options.bioscan_root(path)
    if not root.exists():
        raise InputError(root, f"BIOSCAN-5M images not found (archive or folder for {path.name}); "
                         "set ingest.bioscan_images to the image zip or its extracted folder")  # fmt: skip
    if root.is_file() and not is_zip(root):
        raise InputError(root, "not a zip archive (ingest.bioscan_images: a BIOSCAN-5M image zip or folder)")
    return root


def image_type(root: Path, options: ProviderOptions) -> str:
    """The archive's imgtype folder: the configured one, or the only one present."""
    if options.bioscan_image_type != "auto":
        return options.bioscan_image_type
    found = sorted(_types_in(root))
    if len(found) != 1:
        what = ", ".join(found) if found else f"no {IMAGES_PREFIX}/<imgtype>/ folder"
        raise InputError(root, f"cannot tell the BIOSCAN-5M image type ({what}); "
                         f"set ingest.bioscan_image_type to one of {', '.join(IMAGE_TYPES)}")  # fmt: skip
    return found[0]


def _types_in(root: Path) -> set[str]:
    prefix = IMAGES_PREFIX + "/"
    if root.is_file():
        with zipfile.ZipFile(root) as archive:
            names = (n for n in archive.namelist() if n.startswith(prefix))
            return {n[len(prefix) :].split("/", 1)[0] for n in names if "/" in n[len(prefix) :]}
    folder = root / IMAGES_PREFIX
    return {e.name for e in os.scandir(folder) if e.is_dir()} if folder.is_dir() else set()


def iter_tables(path: Path, chunk_rows: int, options: ProviderOptions) -> Iterator[pa.Table]:
    root = image_root(path, options)
    kind = image_type(root, options)
    columns = mapping(path)
    for table in iter_delimited(_opener(path), str(path), DIALECT, columns, chunk_rows):
        yield _records(table, path, root, kind, options)


def _records(table: pa.Table, path: Path, root: Path, kind: str, options: ProviderOptions) -> pa.Table:
    n = table.num_rows

    def col(name: str) -> list:
        return table[name].to_pylist() if name in table.column_names else [None] * n

    members = [
        join_member(IMAGES_PREFIX, kind, split, chunk, f"{pid}{IMAGE_SUFFIX}") if pid and split else None
        for pid, split, chunk in zip(col("source_id"), col("split"), col("_chunk"), strict=True)
    ]
    fills = {"kingdom": options.bioscan_kingdom, "phylum": options.bioscan_phylum,
             "class": options.bioscan_class}  # fmt: skip
    out = {name: table[name] for name in table.column_names if not name.startswith("_")}
    for rank, value in fills.items():
        given = out.get(rank, pa.nulls(n, pa.string()))
        out[rank] = pc.coalesce(given, pa.scalar(value or None, pa.string()))
    out["license"] = pa.array([options.bioscan_license or None] * n, pa.string())
    out["rights_holder"] = pa.array([options.bioscan_rights_holder or None] * n, pa.string())
    out["local_root"] = pa.array([str(root)] * n, pa.string())
    out["local_member"] = pa.array(members, pa.string())
    out["url"] = pa.array([local_url(root, m) if m else None for m in members], pa.string())
    out["source_file"] = pa.array([str(path)] * n, pa.string())
    return pa.table(out)
