"""Stage 05's documentation names what the code writes: every manifest column and reason code in
manifests/README.md's 05 section, every [dedup] setting with its documented range or choices."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.config import load_defaults
from pipeline.constraints import constraints
from stages.dedup import schema as S

REPO = Path(__file__).resolve().parent.parent


def section(text: str, marker: str) -> str:
    start = text.index(marker)
    following = text.find("<!-- section:", start + len(marker))
    return text[start : following if following >= 0 else len(text)]


def test_every_column_and_reason_is_documented():
    text = section((REPO / "manifests" / "README.md").read_text(), "<!-- section: 05_dedup -->")
    documented = set(re.findall(r"`([a-z0-9_]+)`", text))
    assert set(S.SCHEMA.names) - {"uuid", "status", "reason", "detail"} <= documented
    assert {*S.REASONS, S.IMAGE_UNREADABLE, *S.STATES} <= documented


def test_numeric_and_enumerated_settings_state_their_range():
    found = constraints()
    for key, value in load_defaults()["dedup"].items():
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric or key in ("search_backend", "pdq_image_types"):
            assert ("dedup", key) in found, key
