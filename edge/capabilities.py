"""Capabilities: which operations a token allows on which channels. Pure.

A token's ``cap`` claim maps channel globs to operations, e.g.
``{"chat:*": ["subscribe", "publish"], "*": ["subscribe"]}``. In a glob, ``*``
matches any run of characters (including none); every other character, ``?``
and ``[`` included, stands for itself, because those are legal in channel names.
An operation is allowed on a channel when any glob that matches the channel
lists it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any


class Operation(StrEnum):
    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"
    HISTORY = "history"
    PRESENCE = "presence"


ALL_OPERATIONS = frozenset(Operation)
MAX_GLOBS = 64
MAX_GLOB_BYTES = 255


class CapabilityError(ValueError):
    """A malformed ``cap`` claim or capabilities request."""


@lru_cache(maxsize=4096)
def _compile(glob: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if part == "*" else re.escape(part) for part in _split(glob)))


def _split(glob: str) -> list[str]:
    return [p for p in re.split(r"(\*)", glob) if p]


def glob_matches(glob: str, channel: str) -> bool:
    """Whether `glob` (``*`` as the only wildcard) matches the whole of `channel`."""
    if glob == "*":
        return True
    if "*" not in glob:
        return glob == channel
    return _compile(glob).fullmatch(channel) is not None


@dataclass(frozen=True)
class Capabilities:
    """Globs and what each allows; ``unrestricted`` for API keys (every capability)."""

    grants: tuple[tuple[str, frozenset[Operation]], ...] = ()
    unrestricted: bool = False
    _cache: dict[tuple[Operation, str], bool] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def everything(cls) -> Capabilities:
        return cls(unrestricted=True)

    @classmethod
    def parse(cls, raw: Any) -> Capabilities:
        """Validate a ``cap`` claim. Raises CapabilityError naming the problem."""
        if not isinstance(raw, Mapping):
            raise CapabilityError("cap must be an object mapping channel globs to operations")
        if len(raw) > MAX_GLOBS:
            raise CapabilityError(f"cap has more than {MAX_GLOBS} globs")
        grants: list[tuple[str, frozenset[Operation]]] = []
        for glob, ops in raw.items():
            if not isinstance(glob, str) or not glob:
                raise CapabilityError("cap globs must be non-empty strings")
            if len(glob.encode("utf-8")) > MAX_GLOB_BYTES:
                raise CapabilityError(f"cap glob longer than {MAX_GLOB_BYTES} bytes")
            if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
                raise CapabilityError(f"cap[{glob!r}] must be a list of operations")
            try:
                grants.append((glob, frozenset(Operation(o) for o in ops)))
            except ValueError:
                known = ", ".join(sorted(ALL_OPERATIONS))
                raise CapabilityError(
                    f"cap[{glob!r}]: unknown operation (known: {known})"
                ) from None
        return cls(tuple(grants))

    def allows(self, op: Operation, channel: str) -> bool:
        if self.unrestricted:
            return True
        key = (op, channel)
        hit = self._cache.get(key)
        if hit is None:
            hit = any(op in ops and glob_matches(g, channel) for g, ops in self.grants)
            if len(self._cache) < 1024:
                self._cache[key] = hit
        return hit

    def to_claim(self) -> dict[str, list[str]]:
        return {g: sorted(ops) for g, ops in self.grants}
