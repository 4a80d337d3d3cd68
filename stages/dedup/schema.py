"""Stage 05's manifest: one row per 04 ok row, with its MD5 group, its test-set MD5 match, its PDQ
hash and the closest test image within the search radius, then the decision made from them."""

from __future__ import annotations

import pyarrow as pa

from pipeline.ledger import stage_schema

# pdq_state values.
APPLIED = "applied"  # hashed and searched against the test hashes
NOT_APPLICABLE = "not_applicable"  # outside dedup.pdq_image_types / pdq_providers
LOW_QUALITY = "low_quality"  # hashed, quality below dedup.pdq_min_quality: stored, not matched
UNREADABLE = "unreadable"  # the stored image could not be decoded
STATES = (APPLIED, NOT_APPLICABLE, LOW_QUALITY, UNREADABLE)

# Reasons of dropped rows, in the order a row's reason is chosen when several apply (every
# finding is in `detail`): leakage first, then duplicates within the training data.
TEST_LEAK_MD5 = "test_leak_md5"
TEST_LEAK_PDQ = "test_leak_pdq"
DUPLICATE_MD5 = "duplicate_md5"
REASONS = (TEST_LEAK_MD5, TEST_LEAK_PDQ, DUPLICATE_MD5)
# A stored image that cannot be decoded (a damaged image store file).
IMAGE_UNREADABLE = "image_unreadable"

SCHEMA = stage_schema(
    pa.field("image_type", pa.string()),
    pa.field("provider", pa.string()),
    pa.field("md5", pa.string()),
    pa.field("md5_copies", pa.int32()),
    pa.field("md5_kept", pa.string()),
    pa.field("md5_leak_testset", pa.string()),
    pa.field("md5_leak_test_id", pa.string()),
    pa.field("pdq_state", pa.string(), nullable=False),
    pa.field("pdq", pa.string()),
    pa.field("pdq_quality", pa.int32()),
    pa.field("pdq_min_distance", pa.int32()),
    pa.field("leak_testset", pa.string()),
    pa.field("leak_test_id", pa.string()),
)
