"""Errors of the DNS wire codec. Each carries a stable ``code`` (logged, counted, tested)."""

from __future__ import annotations


class WireFormatError(ValueError):
    """Bytes that do not form what the codec expected. ``code`` names the problem."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
