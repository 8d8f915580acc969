"""The result of a plate layout: one table row per well, and what the oracle needs from it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from experiment_design import keys
from experiment_design.contexts import Context
from experiment_design.perturbation import Perturbation
from experiment_design.plate_format import PlateFormat
from experiment_design.query import Query
from experiment_design.space import DesignSpace

#: Well roles.
SAMPLE, NEGATIVE, POSITIVE, EMPTY = "sample", "negative", "positive", "empty"
ROLES = (SAMPLE, NEGATIVE, POSITIVE, EMPTY)
CONTROL_ROLES = (NEGATIVE, POSITIVE)

#: Query metadata columns of a plate table (experiment_design.keys names).
META_COLUMNS = (
    keys.PERTURBATION,
    keys.DOSE_VALUE,
    keys.DOSE_UNIT,
    keys.TIME,
    keys.TIME_UNIT,
    keys.CELL_LINE,
    keys.SITE,
    keys.ASSAY,
)
_STRING_META = tuple(c for c in META_COLUMNS if c != keys.TIME)
#: Every column of a plate table, in order. ``edge`` marks the outer ring.
TABLE_COLUMNS = (
    keys.PLATE,
    keys.WELL,
    "row",
    "column",
    "edge",
    "role",
    keys.QUERY_ID,
    keys.REPLICATE,
    *META_COLUMNS,
)


def query_metadata(query: Query, space: DesignSpace | None = None) -> dict:
    """The :mod:`~experiment_design.keys` metadata of a query, scPerturb style.

    Args:
        query: The query.
        space: For dose units (``"uM"``, ``"fraction"``, joined by ``+``); without
            it, or for a target it does not know, the unit is left empty.

    Returns:
        ``{perturbation, dose_value, dose_unit, time, time_unit, cell_line, site, assay}``.

    """
    p = query.perturbation
    units = ""
    if space is not None and p.targets and all(t in space.target_index for t in p.targets):
        units = keys.COMBO_SEP.join(space.target(t).dose_unit for t in p.targets)
    return {
        keys.PERTURBATION: p.label,
        keys.DOSE_VALUE: p.dose_label,
        keys.DOSE_UNIT: units,
        keys.TIME: query.time_h,
        keys.TIME_UNIT: keys.HOURS,
        keys.CELL_LINE: query.context.cell_line,
        keys.SITE: query.context.site,
        keys.ASSAY: query.assay,
    }


def empty_metadata() -> dict:
    """Metadata of an empty well: empty strings, time NaN, no query."""
    return {c: "" for c in _STRING_META} | {keys.TIME: np.nan, keys.QUERY_ID: "", keys.REPLICATE: pd.NA}


def row_query(row: pd.Series | dict) -> Query:
    """The condition (one replicate) of a non-empty table row, rebuilt from its metadata.

    Raises:
        ValueError: If the metadata does not parse, or rebuilds another ``query_id``.

    """
    where = f"plate {row[keys.PLATE]} well {row[keys.WELL]}"
    try:
        pert = Perturbation.parse(row[keys.PERTURBATION], row[keys.DOSE_VALUE])
        q = Query(
            pert, float(row[keys.TIME]), Context(str(row[keys.CELL_LINE]), str(row[keys.SITE])), str(row[keys.ASSAY])
        )
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: metadata does not describe a query: {e}") from None
    if str(row[keys.QUERY_ID]) != q.query_id:
        raise ValueError(
            f"{where}: query_id {row[keys.QUERY_ID]!r} does not match its metadata (which gives {q.query_id})"
        )
    return q


@dataclass(frozen=True)
class PlateLayout:
    """A round laid out on plates.

    Attributes:
        table: One row per well of every plate (empty wells included), columns
            :data:`TABLE_COLUMNS`: ``plate`` (``"R0003-P01"``), ``well``
            (``"A01"``), ``row`` (letter), ``column`` (1-based int), ``edge``
            (outer ring), ``role`` (sample / negative / positive / empty),
            ``query_id``, ``replicate`` (nullable int; controls are numbered
            per condition after that condition's sample replicates), and the
            query metadata (:data:`META_COLUMNS`; empty strings and NaN time
            on empty wells).
        plate_format: The plate geometry.
        round_index: Round number the plates belong to.
        unplated: Queries that were not plated (tissue-scale assays).

    """

    table: pd.DataFrame
    plate_format: PlateFormat
    round_index: int = 0
    unplated: tuple[Query, ...] = field(default_factory=tuple)

    @property
    def plates(self) -> list[str]:
        """Plate names, in order."""
        return list(dict.fromkeys(self.table[keys.PLATE]))

    def plate(self, name: str) -> pd.DataFrame:
        """The rows of one plate.

        Raises:
            ValueError: For an unknown plate name.

        """
        if name not in self.plates:
            raise ValueError(f"unknown plate {name!r}; this layout has {self.plates}")
        return self.table[self.table[keys.PLATE] == name].reset_index(drop=True)

    def rows_of(self, roles: Iterable[str]) -> pd.DataFrame:
        """The rows with one of ``roles``."""
        return self.table[self.table["role"].isin(list(roles))]

    def to_layout_mapping(
        self, roles: Iterable[str] = (SAMPLE, NEGATIVE, POSITIVE)
    ) -> dict[tuple[str, int], tuple[str, str]]:
        """``{(query_id, replicate): (plate, well)}`` for ``Oracle.measure(..., layout=...)``.

        Args:
            roles: Which wells to include; default samples and controls.

        """
        t = self.rows_of(roles)
        return {
            (qid, int(rep)): (plate, well)
            for qid, rep, plate, well in zip(
                t[keys.QUERY_ID], t[keys.REPLICATE], t[keys.PLATE], t[keys.WELL], strict=True
            )
        }

    def _queries(self, roles: Iterable[str]) -> list[Query]:
        """One query per condition among ``roles`` rows, replicates = number of those wells."""
        t = self.rows_of(roles)
        first = t.drop_duplicates(keys.QUERY_ID)
        counts = t[keys.QUERY_ID].value_counts()
        return [row_query(row).with_replicates(int(counts[row[keys.QUERY_ID]])) for _, row in first.iterrows()]

    def sample_queries(self) -> list[Query]:
        """The plated queries (duplicates merged), replicates as laid out."""
        return self._queries([SAMPLE])

    def control_queries(self) -> list[Query]:
        """One query per control condition, replicates = its number of control wells.

        Control replicates are numbered after the sample replicates of the same
        condition (a round that also asks for the vehicle at the same time and
        assay); to measure every well exactly once, use :meth:`queries_to_measure`.
        """
        return self._queries(CONTROL_ROLES)

    def queries_to_measure(self) -> list[Query]:
        """Every non-empty well's condition once, replicates covering all its wells.

        ``oracle.measure(layout.queries_to_measure(), layout=layout.to_layout_mapping())``
        measures each sample and control well exactly once, at its position.
        """
        return self._queries((SAMPLE, *CONTROL_ROLES))

    @classmethod
    def from_table(cls, table: pd.DataFrame, round_index: int = 0, plate_size: int | None = None) -> PlateLayout:
        """Rebuild a layout from a plate table (e.g. the concatenated plate CSVs).

        Args:
            table: Columns :data:`TABLE_COLUMNS` (extra columns are dropped).
            round_index: Round number.
            plate_size: 96 or 384; default inferred from the largest row / column.

        Raises:
            ValueError: For a missing column, an unknown role, a well that is not
                on the plate, or a row whose query_id does not match its metadata.

        """
        missing = [c for c in TABLE_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"plate table lacks columns {missing}; expected {list(TABLE_COLUMNS)}")
        t = table[list(TABLE_COLUMNS)].reset_index(drop=True).copy()
        for c in (*_STRING_META, keys.QUERY_ID, keys.PLATE, keys.WELL, "role", "row"):
            t[c] = t[c].fillna("").astype(str)
        bad = sorted(set(t["role"]) - set(ROLES))
        if bad:
            raise ValueError(f"plate table: unknown roles {bad}; accepted {list(ROLES)}")
        if plate_size is None:
            big = t["column"].astype(int).max() > 12 or (t["row"].str.upper() > "H").any()
            plate_size = 384 if big else 96
        fmt = PlateFormat.of(plate_size)
        for plate, well in zip(t[keys.PLATE], t[keys.WELL], strict=True):
            try:
                fmt.parse_well(well)
            except ValueError as e:
                raise ValueError(f"plate {plate}: {e}") from None
        t["column"] = t["column"].astype(int)
        t["edge"] = t["edge"].astype(bool)
        t[keys.TIME] = t[keys.TIME].astype(float)
        t[keys.REPLICATE] = pd.array(t[keys.REPLICATE], dtype="Int64")
        for _, row in t[t["role"] != EMPTY].iterrows():
            row_query(row)
        return cls(t, fmt, round_index)
