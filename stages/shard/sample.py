"""One WebDataset sample: its members (`<uuid>.<ext>`) as bytes, from a row and its JPEG.

Members: `jpg`; the ten caption and name files (`sci.txt` ... `common_name.txt`, UTF-8, no
trailing newline); `json`, the sample's attribution (uuid, provider, source URL, licence, rights
holder, the seven ranks, common name, image type) so a shard carries its own credits; and `txt`,
one of the captions again (shard.txt_caption) for loaders that read `txt`, such as open_clip's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stages.shard.captions import RANKS, TEXT_KINDS, Names, caption_texts, clean, names_of
from stages.shard.settings import NO_TXT

# Attribution fields of the `json` member, in this order; values as in the 06 manifest (null
# when unknown). `url` is 01's source URL, `common_name` 03's (null when none: the captions'
# fallback is not a common name).
ATTRIBUTION = ("uuid", "provider", "url", "license", "rights_holder", *RANKS, "common_name", "image_type")


TAXON_FIELDS = (*RANKS, "common_name")


@dataclass(frozen=True)
class TaxonMembers:
    """What a row's taxonomy puts in its sample: the text members and the json's taxonomy
    fields (cleaned like the captions'). Rows of one taxon share it."""

    texts: dict[str, bytes]
    fields: dict[str, str | None]


def text_members(names: Names, txt_caption: str) -> dict[str, bytes]:
    """`<kind>.txt` for the ten text kinds, and `txt` unless txt_caption is "none"."""
    texts = caption_texts(names)
    members = {f"{kind}.txt": texts[kind].encode("utf-8") for kind in TEXT_KINDS}
    if txt_caption != NO_TXT:
        members["txt"] = texts[txt_caption].encode("utf-8")
    return members


def taxon_members(row: Mapping[str, Any], missing: frozenset[str], txt_caption: str) -> TaxonMembers | None:
    """None when the row has no taxon (see captions.names_of)."""
    names = names_of({r: row[r] for r in RANKS}, row["scientific_name"], row["common_name"], missing)
    if names is None:
        return None
    fields = {name: clean(row[name], missing) for name in TAXON_FIELDS}
    return TaxonMembers(text_members(names, txt_caption), fields)


def attribution(row: Mapping[str, Any], taxon_fields: Mapping[str, str | None]) -> dict[str, Any]:
    """The `json` member's fields, in ATTRIBUTION order."""
    return {name: taxon_fields[name] if name in taxon_fields else row.get(name) for name in ATTRIBUTION}


def json_member(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def member_names(txt_caption: str) -> list[str]:
    """The extensions of every sample's members, in the order they are written (sorted: the
    order webdataset's TarWriter writes a sample's keys in)."""
    kinds = ["jpg", "json", *(f"{kind}.txt" for kind in TEXT_KINDS)]
    return sorted(kinds + ([] if txt_caption == NO_TXT else ["txt"]))


def sample_members(row: Mapping[str, Any], taxon: TaxonMembers, jpeg: Any) -> dict[str, Any]:
    """Every member of one sample, by extension (the jpg as bytes, or where to read them)."""
    return {"jpg": jpeg, "json": json_member(attribution(row, taxon.fields)), **taxon.texts}
