"""The effective config: documented defaults, the frozen config of the work root, the user's TOML
file and `--set section.key=value` overrides, merged in that order.

The effective config is frozen into `<root>/tolpipe.toml` when a stage runs, so resuming needs no
flags: the next run starts from it.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from pipeline import atomic
from pipeline.digest import digest_json
from pipeline.errors import ConfigError

FROZEN_NAME = "tolpipe.toml"
PACKAGE_DIR = Path(__file__).resolve().parent
STAGES_DIR = PACKAGE_DIR.parent / "stages"


def default_files() -> list[Path]:
    """pipeline/defaults.toml, then every stage's defaults.toml in stage order."""
    return [PACKAGE_DIR / "defaults.toml", *sorted(STAGES_DIR.glob("*/defaults.toml"))]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_defaults() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in default_files():
        for section, values in _read_toml(path).items():
            merged.setdefault(section, {}).update(values)
    return merged


def defaults_text() -> str:
    """The documented default files, concatenated: what `tolpipe config --defaults` prints."""
    parts = []
    for path in default_files():
        rel = path.relative_to(PACKAGE_DIR.parent)
        parts.append(f"# ---- {rel} ----\n{path.read_text()}")
    return "\n".join(parts)


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int | float) and isinstance(value, int | float):
        return isinstance(default, float) or isinstance(value, int)
    return isinstance(value, type(default))


def merge(base: dict[str, Any], layer: dict[str, Any], origin: str) -> dict[str, Any]:
    """Overlay `layer` on `base`; unknown sections or keys and wrong types are errors."""
    out = copy.deepcopy(base)
    for section, values in layer.items():
        if section not in out:
            raise ConfigError(f"{origin}: unknown section [{section}] (known: {', '.join(out)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in values.items():
            if key not in out[section]:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            default = out[section][key]
            if not _same_kind(default, value):
                raise ConfigError(
                    f"{origin}: {section}.{key} must be {type(default).__name__}, got {value!r}"
                )
            out[section][key] = float(value) if isinstance(default, float) else value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """'section.key=value' -> {section: {key: value}}; value is TOML, else a plain string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return {section: {key: value}}


def load_config(
    root: Path, config_file: Path | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    config = load_defaults()
    frozen = Path(root) / FROZEN_NAME
    if frozen.exists():
        config = merge(config, _read_toml(frozen), str(frozen))
    if config_file is not None:
        config = merge(config, _read_toml(Path(config_file)), str(config_file))
    for text in overrides or []:
        config = merge(config, parse_override(text), f"--set {text}")
    return config


def freeze(root: Path, config: dict[str, Any]) -> Path:
    """Write the effective config to <root>/tolpipe.toml (atomically)."""
    path = Path(root) / FROZEN_NAME
    header = "# Effective tolpipe config, frozen by the last run. Edit or override with --set.\n"
    atomic.write_text(path, header + tomli_w.dumps(config))
    return path


def config_digest(config: dict[str, Any]) -> str:
    return digest_json(config)
