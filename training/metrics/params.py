"""The documented defaults of the metric families (defaults.toml beside this file) and the
merging of a caller's overrides over them, checked like the pipeline's settings."""

from __future__ import annotations

import copy
import functools
import tomllib
from pathlib import Path
from typing import Any

from pipeline.config import merge
from pipeline.errors import ConfigError

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")


@functools.cache
def _defaults() -> dict[str, Any]:
    return tomllib.loads(DEFAULTS_FILE.read_text())


def default_params(family: str) -> dict[str, Any]:
    """The defaults of one family (a copy)."""
    return copy.deepcopy(_defaults()[family])


def merged_params(family: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The family's defaults with `overrides` on top; unknown keys, wrong types and values outside
    their documented range raise ConfigError."""
    base = {family: default_params(family)}
    merged = merge(base, {family: dict(overrides)}, f"metrics params [{family}]")[family]
    for (section, key), constraint in _constraints().items():
        if section == family and (message := constraint.problem(f"{family}.{key}", merged[key])):
            raise ConfigError(f"metrics params: {message}")
    return merged


@functools.cache
def _constraints() -> dict[tuple[str, str], Any]:
    from pipeline.constraints import parse_file

    return parse_file(DEFAULTS_FILE)
