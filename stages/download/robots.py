"""robots.txt (RFC 9309): parsing, matching, and a per-process cache fetched once per host.

The standard library's robotparser takes the first matching rule and knows no wildcards; RFC
9309 wants the longest match (Allow winning ties) and `*` / `$` patterns, so the matcher is here.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass(frozen=True)
class Rule:
    allow: bool
    pattern: str
    regex: re.Pattern[str]


def _compile(pattern: str) -> re.Pattern[str]:
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    text = ".*".join(re.escape(part) for part in body.split("*"))
    return re.compile(text + ("$" if anchored else ""))


def _normalise(path: str) -> str:
    # Compare percent-decoded paths (except an encoded slash), as RFC 9309 §2.2.2 asks.
    return unquote(path.replace("%2F", "%252F").replace("%2f", "%252f"))


@dataclass
class RobotsRules:
    """The rule groups of one robots.txt."""

    groups: dict[str, list[Rule]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> RobotsRules:
        groups: dict[str, list[Rule]] = {}
        agents: list[str] = []
        in_rules = False
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if ":" not in line:
                continue
            key, value = (part.strip() for part in line.split(":", 1))
            key = key.lower()
            if key == "user-agent":
                if in_rules:  # a new group starts
                    agents, in_rules = [], False
                agents.append(value.lower())
                for agent in agents:
                    groups.setdefault(agent, [])
            elif key in ("allow", "disallow") and agents:
                in_rules = True
                if not value:  # "Disallow:" with no path allows everything
                    continue
                rule = Rule(key == "allow", value, _compile(_normalise(value)))
                for agent in agents:
                    groups[agent].append(rule)
        return cls(groups)

    def rules_for(self, token: str) -> list[Rule]:
        # RFC 9309 §2.2.1: case-insensitive match of the product token; groups of the same
        # agent were merged while parsing; `*` applies when no group names us.
        rules = self.groups.get(token.lower())
        return rules if rules is not None else self.groups.get("*", [])

    def allowed(self, token: str, path: str) -> bool:
        """Longest matching pattern decides; Allow wins a tie; no match allows."""
        if path == "/robots.txt":
            return True
        target = _normalise(path or "/")
        best: Rule | None = None
        for rule in self.rules_for(token):
            if rule.regex.match(target) and (
                best is None
                or len(rule.pattern) > len(best.pattern)
                or (len(rule.pattern) == len(best.pattern) and rule.allow)
            ):
                best = rule
        return best is None or best.allow


ALLOW_ALL = RobotsRules()


@dataclass(frozen=True)
class RobotsVerdict:
    """What robots.txt says of a host: rules to apply, or the failure that stops us asking."""

    rules: RobotsRules | None
    failure: tuple[str, str] | None  # (reason code, detail) when robots.txt could not be had
    source: str  # "fetched", "absent" (4xx: allow all)


@dataclass
class _Entry:
    verdict: RobotsVerdict
    expires: float


class RobotsCache:
    """Process-wide: robots.txt of each (scheme, host, port) fetched once, then cached.

    `fetch(origin)` returns the verdict; concurrent callers for one origin wait for the first.
    Successful fetches live robots_ttl_s, failures robots_failure_ttl_s.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.clock = clock

    def _lock(self, origin: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(origin, threading.Lock())

    def verdict(
        self,
        origin: str,
        fetch: Callable[[str], RobotsVerdict],
        ttl_s: float,
        failure_ttl_s: float,
    ) -> RobotsVerdict:
        entry = self._entries.get(origin)
        if entry and entry.expires > self.clock():
            return entry.verdict
        with self._lock(origin):
            entry = self._entries.get(origin)
            if entry and entry.expires > self.clock():
                return entry.verdict
            verdict = fetch(origin)
            ttl = failure_ttl_s if verdict.failure else ttl_s
            self._entries[origin] = _Entry(verdict, self.clock() + ttl)
            return verdict

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()


ROBOTS = RobotsCache()
