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
from pipeline.constraints import alternatives, alternatives_text, check
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


def _same_kind(default: Any, value: Any, allowed: tuple[str, ...] = ()) -> bool:
    """Same TOML kind (an int where a float is expected too). `allowed`: strings a numeric setting
    also takes ("auto"), in either role, since a frozen config may hold one as the base."""
    if (isinstance(value, str) and value in allowed) or (isinstance(default, str) and default in allowed):
        return isinstance(value, str | int | float) and not isinstance(value, bool)
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int | float) and isinstance(value, int | float):
        return isinstance(default, float) or isinstance(value, int)
    return isinstance(value, type(default))


def merge(base: dict[str, Any], layer: dict[str, Any], origin: str) -> dict[str, Any]:
    """Overlay `layer` on `base`; unknown sections or keys, wrong types and values outside their
    documented range (pipeline/constraints.py) are errors."""
    out = copy.deepcopy(base)
    for section, values in layer.items():
        if section not in out:
            raise ConfigError(f"{origin}: unknown section [{section}] (known: {', '.join(out)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        for key, value in values.items():
            if key not in out[section]:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            default, allowed = out[section][key], alternatives(section, key)
            if not _same_kind(default, value, allowed):
                kind = type(default).__name__ + alternatives_text(allowed)
                raise ConfigError(f"{origin}: {section}.{key} must be {kind}, got {value!r}")
            check(origin, section, key, value)  # the range or choices documented in defaults.toml
            as_float = isinstance(default, float) and not isinstance(value, str)
            out[section][key] = float(value) if as_float else value
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


# Settings that name files or folders: relative values are taken relative to the folder of the
# file that sets them (the current folder for --set), and stored absolute, so a frozen config
# works from any folder.
PATH_KEYS = {
    ("cluster", "scheduler_file"), ("cluster", "local_directory"), ("cluster", "log_directory"),
    ("taxonomy", "backbone_path"), ("taxonomy", "index_dir"),
    ("filter", "megadetector_weights"), ("filter", "embedder_weights"), ("filter", "support_set"),
}  # fmt: skip
# Lists of "KIND:PATH" entries, made absolute the same way.
KIND_PATH_LIST_KEYS = {("ingest", "sources")}
# Sections that only tune how a run executes: never frozen unless --save.
ONE_OFF_SECTIONS = ("run", "cluster")
FROZEN_ORIGIN = "tolpipe.toml"


def _absolute(value: str, base: Path) -> str:
    if not value:
        return value
    return str((base / Path(value).expanduser()).resolve())


def absolutize(layer: dict[str, Any], base: Path) -> dict[str, Any]:
    """A config layer with its relative paths resolved against `base`."""
    out = copy.deepcopy(layer)
    for (section, key) in PATH_KEYS:
        value = out.get(section, {}).get(key)
        if isinstance(value, str):
            out[section][key] = _absolute(value, base)
    for (section, key) in KIND_PATH_LIST_KEYS:
        values = out.get(section, {}).get(key)
        if isinstance(values, list):
            out[section][key] = [_absolute_source(v, base) for v in values]
    return out


def _absolute_source(entry: Any, base: Path) -> Any:
    if not isinstance(entry, str) or ":" not in entry:
        return entry  # the stage reports malformed entries with their context
    kind, path = entry.split(":", 1)
    return f"{kind}:{_absolute(path, base)}" if path else entry


def _layers(
    root: Path, config_file: Path | None, overrides: list[str] | None
) -> list[tuple[str, dict[str, Any]]]:
    """(origin, layer) in merge order, paths already absolute."""
    layers = []
    frozen = Path(root) / FROZEN_NAME
    if frozen.exists():
        layers.append((FROZEN_ORIGIN, absolutize(_read_toml(frozen), Path(root).resolve())))
    if config_file is not None:
        path = Path(config_file)
        layers.append((f"--config {path}", absolutize(_read_toml(path), path.resolve().parent)))
    for text in overrides or []:
        layers.append((f"--set {text}", absolutize(parse_override(text), Path.cwd())))
    return layers


def load_layers(
    root: Path, config_file: Path | None = None, overrides: list[str] | None = None
) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """The effective config, and where each setting that is not a default came from."""
    config = load_defaults()
    origins: dict[tuple[str, str], str] = {}
    for origin, layer in _layers(root, config_file, overrides):
        config = merge(config, layer, origin if origin != FROZEN_ORIGIN else str(Path(root) / FROZEN_NAME))
        for section, values in layer.items():
            for key in values:
                origins[(section, key)] = origin.split(" ", 2)[0] if origin.startswith("--set") else origin
    defaults = load_defaults()
    differing = {k: o for k, o in origins.items() if config[k[0]][k[1]] != defaults[k[0]][k[1]]}
    return config, differing


def load_config(
    root: Path, config_file: Path | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    return load_layers(root, config_file, overrides)[0]


def describe_settings(config: dict[str, Any], origins: dict[tuple[str, str], str]) -> list[str]:
    """'section.key = value (origin)' for every setting that differs from its default."""
    import json

    return [
        f"{section}.{key} = {json.dumps(config[section][key], default=str)} ({origin})"
        for (section, key), origin in sorted(origins.items())
    ]


def frozen_base(root: Path) -> dict[str, Any]:
    """Defaults plus the root's frozen config: what a plain run starts from."""
    config = load_defaults()
    frozen = Path(root) / FROZEN_NAME
    if frozen.exists():
        config = merge(config, absolutize(_read_toml(frozen), Path(root).resolve()), str(frozen))
    return config


def freeze(
    root: Path,
    config: dict[str, Any],
    tuning: set[tuple[str, str]] | None = None,
    save: bool = False,
) -> Path:
    """Write the config the next plain run starts from to <root>/tolpipe.toml (atomically).

    Output parameters and locations are frozen as this run used them. Tuning settings (the
    `tuning` keys and the [run] and [cluster] sections) keep their frozen values unless `save`:
    a throttled or widened one-off run must not slow down or reshape the runs after it."""
    path = Path(root) / FROZEN_NAME
    frozen = copy.deepcopy(config)
    if not save and tuning is not None:
        base = frozen_base(root)
        one_off = set(tuning) | {(s, k) for s in ONE_OFF_SECTIONS for k in config.get(s, {})}
        for section, key in one_off:
            if section in base and key in base[section]:
                frozen[section][key] = base[section][key]
    header = (
        "# tolpipe config of this work root: output parameters and locations of the last run, and\n"
        "# tuning settings saved with --save. Edit it, or override per run with --config / --set.\n"
    )
    atomic.write_text(path, header + tomli_w.dumps(frozen))
    return path


def config_digest(config: dict[str, Any]) -> str:
    return digest_json(config)
