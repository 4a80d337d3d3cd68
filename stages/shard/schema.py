"""Stage 06's manifest: one row per row of the upstream stage's ok rows, in the partition (shard)
its order key gives it: where it is in the shard (or why it is not), what the sample carries,
and the shard's sample count (its sha256 and size are in the partition's commit record)."""

from __future__ import annotations

import pyarrow as pa

from pipeline.ledger import stage_schema
from stages.shard.captions import RANKS

# Reason codes.
NO_TAXON = "no_taxon"  # dropped: no rank and no scientific name, nothing to caption
IMAGE_MISSING = "image_missing"  # failed: the image store has no image for the row
IMAGE_MISMATCH = "image_mismatch"  # failed: the stored bytes' MD5 is not 02's stored_md5
IMAGE_UNREADABLE = "image_unreadable"  # failed: the stored bytes could not be decoded to resize
REASONS = (NO_TAXON, IMAGE_MISSING, IMAGE_MISMATCH, IMAGE_UNREADABLE)

TEXT_COLUMNS = ("provider", "url", "license", "rights_holder", "image_type", *RANKS, "scientific_name",
                "common_name")  # fmt: skip

SCHEMA = stage_schema(
    pa.field("split", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("position", pa.int32()),
    pa.field("key", pa.string()),
    pa.field("source_partition", pa.int32(), nullable=False),
    *[pa.field(name, pa.string()) for name in TEXT_COLUMNS],
    pa.field("jpeg_md5", pa.string()),
    pa.field("jpeg_bytes", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("resized", pa.bool_()),
    pa.field("shard_samples", pa.int32(), nullable=False),
)
