"""Plate geometry (96 / 384 wells) and the configuration of a layout."""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cached_property

from experiment_design.assays import DEFAULT_ASSAYS, Scale
from experiment_design.space import DesignSpace

#: Edge-well policies: leave the outer ring empty, fill it with buffer
#: negative controls, or use it like any other well.
EDGE_POLICIES = ("empty", "controls", "use")

#: Rows x columns of the supported plate sizes.
_SHAPES = {96: (8, 12), 384: (16, 24)}


@dataclass(frozen=True)
class PlateFormat:
    """A microplate: ``n_rows`` lettered rows by ``n_cols`` numbered columns.

    Wells are named with a zero-padded column, ``"A01"`` .. ``"H12"`` (96) or
    ``"P24"`` (384). Positions are 0-based ``(row, column)`` indices.

    Attributes:
        n_rows: Number of rows (8 or 16).
        n_cols: Number of columns (12 or 24).

    """

    n_rows: int
    n_cols: int

    @classmethod
    def of(cls, n_wells: int) -> PlateFormat:
        """The 96- or 384-well format.

        Raises:
            ValueError: For any other size.

        """
        if n_wells not in _SHAPES:
            raise ValueError(f"plate size {n_wells} is not supported; use one of {sorted(_SHAPES)}")
        return cls(*_SHAPES[n_wells])

    @property
    def n_wells(self) -> int:
        """Number of wells."""
        return self.n_rows * self.n_cols

    def row_letter(self, r: int) -> str:
        """Letter of 0-based row ``r``."""
        return string.ascii_uppercase[r]

    def well_name(self, r: int, c: int) -> str:
        """``"B07"`` for 0-based ``(1, 6)``."""
        return f"{self.row_letter(r)}{c + 1:02d}"

    def parse_well(self, well: str) -> tuple[int, int]:
        """0-based ``(row, column)`` of a well name like ``"B07"`` or ``"B7"``.

        Raises:
            ValueError: If the name is not a well of this plate.

        """
        w = str(well).strip().upper()
        r = string.ascii_uppercase.find(w[:1]) if w else -1
        if r < 0 or r >= self.n_rows or not w[1:].isdigit() or not 1 <= int(w[1:]) <= self.n_cols:
            last = self.well_name(self.n_rows - 1, self.n_cols - 1)
            raise ValueError(f"well {well!r} is not on a {self.n_wells}-well plate; expected A01..{last}")
        return r, int(w[1:]) - 1

    def positions(self) -> list[tuple[int, int]]:
        """Every ``(row, column)``, row-major (A01, A02, ..)."""
        return [(r, c) for r in range(self.n_rows) for c in range(self.n_cols)]

    def is_edge(self, r: int, c: int) -> bool:
        """True on the outer ring of wells."""
        return r in (0, self.n_rows - 1) or c in (0, self.n_cols - 1)

    def edge_wells(self) -> list[tuple[int, int]]:
        """The outer ring, row-major."""
        return [p for p in self.positions() if self.is_edge(*p)]

    def usable_wells(self, edge: str) -> list[tuple[int, int]]:
        """Wells that may hold samples and the required controls under an edge policy."""
        if edge == "use":
            return self.positions()
        return [p for p in self.positions() if not self.is_edge(*p)]

    def row_record(self, plate: str, r: int, c: int) -> dict:
        """The position columns of one well's table row."""
        return {
            "plate": plate,
            "well": self.well_name(r, c),
            "row": self.row_letter(r),
            "column": c + 1,
            "edge": self.is_edge(r, c),
        }


@dataclass(frozen=True)
class LayoutConfig:
    """How to lay a round out on plates.

    Attributes:
        plate_size: 96 or 384 wells.
        n_negative: Negative controls per plate; default 4 per 96 wells (16 on 384).
        n_positive: Positive controls per plate; default 2 per 96 wells (8 on 384).
        edge: ``"empty"`` (default): outer ring left empty; ``"controls"``:
            outer ring filled with buffer negative controls (the required
            controls still sit spread over the interior); ``"use"``: outer
            ring used like any well.
        max_plates: Largest number of plates (``None``: no limit).
        one_context_per_plate: Keep each plate to one context (cell line +
            site) when that fits in ``max_plates``; if False, every context
            is spread over all plates.
        tissue_assays: Assay names that are not plated; default (``None``):
            the tissue-scale assays of the design space (or of the default
            catalogue).

    """

    plate_size: int = 96
    n_negative: int | None = None
    n_positive: int | None = None
    edge: str = "empty"
    max_plates: int | None = None
    one_context_per_plate: bool = True
    tissue_assays: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        fmt = PlateFormat.of(self.plate_size)
        scale = fmt.n_wells // 96
        if self.n_negative is None:
            object.__setattr__(self, "n_negative", 4 * scale)
        if self.n_positive is None:
            object.__setattr__(self, "n_positive", 2 * scale)
        for name in ("n_negative", "n_positive"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise ValueError(f"LayoutConfig: {name} must be a non-negative integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.edge not in EDGE_POLICIES:
            raise ValueError(f"LayoutConfig: edge={self.edge!r}; accepted: {', '.join(EDGE_POLICIES)}")
        if self.max_plates is not None and (int(self.max_plates) != self.max_plates or self.max_plates < 1):
            raise ValueError(f"LayoutConfig: max_plates must be a positive integer or None, got {self.max_plates!r}")
        if self.tissue_assays is not None:
            object.__setattr__(self, "tissue_assays", tuple(self.tissue_assays))

    @cached_property
    def plate_format(self) -> PlateFormat:
        """The plate geometry."""
        return PlateFormat.of(self.plate_size)

    def tissue_assays_of(self, space: DesignSpace | None) -> frozenset[str]:
        """Assay names that are not plated (see :attr:`tissue_assays`)."""
        if self.tissue_assays is not None:
            return frozenset(self.tissue_assays)
        assays = space.assays if space is not None else DEFAULT_ASSAYS
        return frozenset(a.name for a in assays if a.scale is Scale.TISSUE)
