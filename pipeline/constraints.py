"""Ranges and choices of settings, read from the documentation of the defaults files.

The comment block above a setting in a defaults.toml ends with a machine-readable line, so the
documented range is the one enforced (at config load, for every layer):

    # range: >= 1              also > N, <= N, < N; `A..B` is inclusive
    # range: > 0 and <= 1      bounds joined by "and"
    # range: >= 1, or "auto"   strings allowed besides the numbers
    # one of: "local", "slurm"  an enumerated string
    # keys: rate_per_host, burst  a table of tables: the keys each entry may have

For an array the constraint applies to each element, for a table to each value.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

_KEY = re.compile(r"([A-Za-z0-9_-]+)\s*=")
_NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?)"
_BOUND = re.compile(rf"(>=|>|<=|<)\s*{_NUMBER}")
_SPAN = re.compile(rf"{_NUMBER}\s*\.\.\s*{_NUMBER}")
_QUOTED = re.compile(r'"([^"]*)"')
_MARKERS = ("# range:", "# one of:", "# keys:")


@dataclass(frozen=True)
class Constraint:
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    alternatives: tuple[str, ...] = ()  # strings allowed besides the range ("auto")
    choices: tuple[str, ...] = ()  # an enumerated string setting
    keys: tuple[str, ...] = ()  # a table of tables: the keys of each entry
    text: str = ""  # the range or choices as they read in messages

    def problem(self, name: str, value: Any) -> str | None:
        """Why `value` of setting `name` breaks this constraint, or None."""
        if isinstance(value, list | tuple):
            return _first(self.problem(f"{name}[{i}]", v) for i, v in enumerate(value))
        if isinstance(value, dict):
            return self._table_problem(name, value)
        if self._allows(value):
            return None
        return f"{name} must be {self.text}, got {value!r}"

    def _allows(self, value: Any) -> bool:
        if isinstance(value, str):
            return value in self.alternatives or value in self.choices
        if self.choices or isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def _table_problem(self, name: str, table: dict[str, Any]) -> str | None:
        for key, value in table.items():
            where = f"{name}.{json.dumps(key)}"
            if not self.keys:
                message = self.problem(where, value)
            elif not isinstance(value, dict):
                message = f"{where} must be a table of {', '.join(self.keys)}, got {value!r}"
            elif unknown := sorted(set(value) - set(self.keys)):
                message = f"{where}: unknown key {', '.join(unknown)} (known: {', '.join(self.keys)})"
            else:
                message = _first(self.problem(f"{where}.{k}", v) for k, v in value.items())
            if message:
                return message
        return None


def _first(messages: Any) -> str | None:
    return next((m for m in messages if m), None)


def alternatives_text(alternatives: tuple[str, ...]) -> str:
    """' (or "auto")' for messages; empty without alternatives."""
    return f" (or {', '.join(map(json.dumps, alternatives))})" if alternatives else ""


def _number(text: str) -> float:
    return float(text) if "." in text else int(text)


def _range(spec: str, where: str) -> Constraint:
    bounds, *alts = [part.strip() for part in spec.split(", or ")]
    quoted = [_QUOTED.fullmatch(alt) for alt in alts]
    if not all(quoted):
        raise ConfigError(f"{where}: alternatives must be quoted strings: {spec!r}")
    alternatives = tuple(q[1] for q in quoted if q)
    fields: dict[str, Any] = {}
    if span := _SPAN.fullmatch(bounds):
        fields = {"low": _number(span[1]), "high": _number(span[2])}
        text = f"in {span[1]}..{span[2]}"
    else:
        for term in bounds.split(" and "):
            bound = _BOUND.fullmatch(term.strip())
            if not bound:
                raise ConfigError(f"{where}: cannot read range {spec!r}")
            side = "low" if bound[1].startswith(">") else "high"
            fields |= {side: _number(bound[2]), f"{side}_open": "=" not in bound[1]}
        text = " and ".join(t.strip() for t in bounds.split(" and "))
    return Constraint(**fields, alternatives=alternatives, text=text + alternatives_text(alternatives))


def _choices(spec: str, where: str) -> Constraint:
    choices = tuple(_QUOTED.findall(spec))
    if not choices:
        raise ConfigError(f"{where}: 'one of' lists no quoted strings: {spec!r}")
    return Constraint(choices=choices, text="one of " + ", ".join(map(json.dumps, choices)))


def _parse_marker(line: str, where: str, found: Constraint | None) -> Constraint:
    """Fold one machine-readable comment line into the constraint read so far."""
    marker = next(m for m in _MARKERS if line.startswith(m))
    spec = line[len(marker) :].strip()
    if marker == "# keys:":
        keys = tuple(k.strip() for k in spec.split(",") if k.strip())
        return replace(found or Constraint(text="a number"), keys=keys)
    parsed = _range(spec, where) if marker == "# range:" else _choices(spec, where)
    return replace(parsed, keys=found.keys if found else ())


def _depth_change(text: str) -> int:
    """Brackets opened minus closed outside strings, up to an inline comment (multi-line arrays)."""
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(line number, stripped line), a long `# one of:` list joined with its `# "...` lines."""
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith('# "') and lines and lines[-1][1].startswith("# one of:"):
            lines[-1] = (lines[-1][0], f"{lines[-1][1]} {line[2:]}")
        else:
            lines.append((number, line))
    return lines


def parse_file(path: Path) -> dict[tuple[str, str], Constraint]:
    """{(section, key): constraint} of one defaults file."""
    found: dict[tuple[str, str], Constraint] = {}
    section: str | None = None  # None inside an array of tables: its keys are not settings
    pending: Constraint | None = None
    depth = 0
    for number, line in _logical_lines(path.read_text()):
        where = f"{path}:{number}"
        if depth:  # continuation of a multi-line value
            depth += _depth_change(line)
        elif line.startswith(_MARKERS):
            pending = _parse_marker(line, where, pending)
        elif line.startswith("#"):
            continue
        elif pending and not _KEY.match(line):
            raise ConfigError(f"{where}: a range or choice line must be right above its setting")
        elif line.startswith("["):
            section = None if line.startswith("[[") else line.strip("[] ")
        elif key := _KEY.match(line):
            if pending and section is not None:
                found[(section, key[1])] = pending
            pending, depth = None, _depth_change(line[key.end() :])
    if pending:
        raise ConfigError(f"{path}: a range or choice line at the end names no setting")
    return found


@functools.cache
def constraints() -> dict[tuple[str, str], Constraint]:
    """Every documented constraint of the default files (parsed once per process)."""
    from pipeline.config import default_files  # late: pipeline.config imports this module

    merged: dict[tuple[str, str], Constraint] = {}
    for path in default_files():
        merged.update(parse_file(path))
    return merged


def alternatives(section: str, key: str) -> tuple[str, ...]:
    """Strings a numeric setting accepts besides numbers (cluster.workers = "auto")."""
    found = constraints().get((section, key))
    return found.alternatives if found else ()


def problem(section: str, key: str, value: Any) -> str | None:
    """Why `value` is out of section.key's documented range or choices, or None."""
    found = constraints().get((section, key))
    return found.problem(f"{section}.{key}", value) if found else None


def check(origin: str, section: str, key: str, value: Any) -> None:
    """Raise a one-line ConfigError naming `origin` (the file or --set) when `value` is out of range."""
    message = problem(section, key, value)
    if message:
        raise ConfigError(f"{origin}: {message}")
