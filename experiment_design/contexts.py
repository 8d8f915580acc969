"""Biological and technical context of a measurement."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    """Where a query is measured.

    Attributes:
        cell_line: Cell line or donor: shifts biology (baseline, EC50).
        site: Lab / platform: shifts measurement (library size, batch effects).

    """

    cell_line: str
    site: str

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"cell_line": self.cell_line, "site": self.site}

    @classmethod
    def from_dict(cls, d: dict) -> Context:
        """Inverse of :meth:`to_dict`."""
        return cls(cell_line=d["cell_line"], site=d["site"])
