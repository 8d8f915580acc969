"""From a ``MeasurementBatch`` to per-well tensors the CSL network trains on.

The network works per well (specimen): single-cell counts are summed over the
cells of a specimen (pseudobulk; a sum of ``n`` NB draws is close to an NB with
mean ``n μ`` and inverse dispersion ``n θ``), continuous per-cell features are
averaged. Each specimen points at a row of a :class:`QueryFeatures` table that
holds the condition (targets, log10 doses, time, context) as tensors, which is
also what the BoTorch view builds directly from a design encoding.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from experiment_design import DesignSpace, MeasurementBatch, Perturbation, Query, keys
from experiment_design.assays import RNA, SPATIAL
from experiment_design.modalities import is_counts
from models.modules.likelihoods import log_factorial


@dataclass
class QueryFeatures:
    """Conditions as tensors; ``n`` rows, ``S`` target slots.

    Attributes:
        target: ``(n, S)`` long, index into ``space.targets``; ``T`` (one past
            the last target) marks an empty slot.
        log10_dose: ``(n, S)`` log10 dose (µM for compounds, strength for
            genes); 0 in empty slots.
        time_h: ``(n,)`` hours after perturbation.
        cell_line: ``(n,)`` long cell-line index.
        site: ``(n,)`` long site index.

    """

    target: torch.Tensor
    log10_dose: torch.Tensor
    time_h: torch.Tensor
    cell_line: torch.Tensor
    site: torch.Tensor

    def __len__(self) -> int:
        return int(self.time_h.shape[0])

    def take(self, idx: torch.Tensor | slice) -> QueryFeatures:
        """The rows at ``idx``."""
        return QueryFeatures(
            self.target[idx], self.log10_dose[idx], self.time_h[idx], self.cell_line[idx], self.site[idx]
        )


def context_vocab(space: DesignSpace) -> tuple[list[str], list[str]]:
    """Sorted distinct cell lines and sites of the space."""
    return sorted({c.cell_line for c in space.contexts}), sorted({c.site for c in space.contexts})


def features_from_queries(space: DesignSpace, queries: Sequence[Query]) -> QueryFeatures:
    """Tensorise queries (no validation beyond name lookups).

    Raises:
        ValueError: If a query names a target, cell line or site the space lacks.

    """
    lines, sites = context_vocab(space)
    li, si = {c: i for i, c in enumerate(lines)}, {s: i for i, s in enumerate(sites)}
    n, S, T = len(queries), space.max_order, len(space.targets)
    tgt = np.full((n, S), T, dtype=np.int64)
    x = np.zeros((n, S))
    for r, q in enumerate(queries):
        p = q.perturbation
        if p.order > S:
            raise ValueError(f"query {q.query_id}: {p.order} targets exceed max_order {S}")
        for s, (name, dose) in enumerate(zip(p.targets, p.doses, strict=True)):
            if name not in space.target_index:
                raise ValueError(f"query {q.query_id}: unknown target {name!r}")
            tgt[r, s] = space.target_index[name]
            x[r, s] = math.log10(max(dose, 1e-12))
        if q.context.cell_line not in li or q.context.site not in si:
            raise ValueError(f"query {q.query_id}: unknown context {q.context}")
    return QueryFeatures(
        torch.as_tensor(tgt),
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor([q.time_h for q in queries], dtype=torch.float32),
        torch.as_tensor([li[q.context.cell_line] for q in queries]),
        torch.as_tensor([si[q.context.site] for q in queries]),
    )


#: Standard plate formats (rows, columns), smallest first.
PLATE_FORMATS = ((8, 12), (16, 24), (32, 48))
_WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")


def _parse_well(well: str) -> tuple[int, int] | None:
    """``"B07"`` → ``(1, 6)`` (0-based), or None if not a well name."""
    m = _WELL.match(str(well).strip())
    if not m or int(m.group(2)) < 1:
        return None
    row = 0
    for ch in m.group(1).upper():
        row = row * 26 + (ord(ch) - ord("A") + 1)
    return row - 1, int(m.group(2)) - 1


def plate_positions(plates: np.ndarray, wells: np.ndarray) -> np.ndarray:
    """Row and column scaled to [-1, 1] and the edge flag of each specimen, ``(W, 3)``.

    Each plate's format is the smallest standard one holding every well seen on
    it; specimens without a well (tissue patches) get ``(0, 0, 0)``.
    """
    rc = [_parse_well(w) for w in wells]
    extent: dict[str, tuple[int, int]] = {}
    for p, x in zip(plates, rc, strict=True):
        if x is not None:
            r0, c0 = extent.get(p, (0, 0))
            extent[p] = (max(r0, x[0]), max(c0, x[1]))
    out = np.zeros((len(wells), 3))
    for i, (p, x) in enumerate(zip(plates, rc, strict=True)):
        if x is None:
            continue
        r, c = extent[p]
        rows, cols = next((f for f in PLATE_FORMATS if r < f[0] and c < f[1]), (r + 1, c + 1))
        out[i] = (
            2.0 * x[0] / max(rows - 1, 1) - 1.0,
            2.0 * x[1] / max(cols - 1, 1) - 1.0,
            float(x[0] in (0, rows - 1) or x[1] in (0, cols - 1)),
        )
    return out


@dataclass
class WellBlock:
    """One modality, aggregated per specimen.

    Attributes:
        y: ``(W, F)`` summed counts (count modalities) or unit means.
        n_units: ``(W,)`` cells / spots / wells aggregated.
        query: ``(W,)`` long row into the :class:`QueryFeatures` table.
        plate: ``(W,)`` long plate index into :attr:`plates`.
        position: ``(W, 3)`` row, column (scaled to [-1, 1]) and edge flag.
        sem2: ``(W, F)`` squared standard error of a unit mean (within-specimen
            variance / n) for continuous modalities; 0 for counts and single units.
        var_names: Feature names.
        plates: Plate names.
        specimens: ``W`` specimen ids.

    """

    y: torch.Tensor
    n_units: torch.Tensor
    query: torch.Tensor
    plate: torch.Tensor
    position: torch.Tensor
    sem2: torch.Tensor
    var_names: tuple[str, ...]
    plates: tuple[str, ...]
    specimens: tuple[str, ...]

    @functools.cached_property
    def log_y_factorial(self) -> torch.Tensor:
        """``(W, F)`` float64 ``lgamma(y + 1)``: the count likelihood's data-only term, computed once."""
        return log_factorial(self.y)

    def select(self, keep: torch.Tensor) -> WellBlock:
        """The specimens where the bool mask ``keep`` ``(W,)`` is true."""
        idx = torch.nonzero(keep).flatten()
        return WellBlock(
            self.y[idx],
            self.n_units[idx],
            self.query[idx],
            self.plate[idx],
            self.position[idx],
            self.sem2[idx],
            self.var_names,
            self.plates,
            tuple(self.specimens[i] for i in idx.tolist()),
        )


@dataclass
class UnitData:
    """Unit-level counts kept beside the pseudobulk, for the tissue lift ``L``.

    Kept for spatial spots and for the RNA cells of specimens that also have
    spots (dissociated cells of the same tissue).

    Attributes:
        x: ``(n, F)`` float32 counts of each unit (spot or cell).
        row: ``(n,)`` row of the unit's specimen in the modality's :class:`WellBlock`.
        unit: ``(n,)`` unit index within its specimen (spot order of the patch).
        replicate: ``(W,)`` replicate index of each block row.

    """

    x: np.ndarray
    row: np.ndarray
    unit: np.ndarray
    replicate: np.ndarray


@dataclass
class WellData:
    """The whole ledger per specimen: one :class:`WellBlock` per modality.

    Attributes:
        queries: Distinct queries, in first-seen order.
        features: Their tensors.
        blocks: Modality → block.
        units: Modality → :class:`UnitData` (``"spatial"``, and ``"rna"`` of
            specimens with spots), empty without spatial data.

    """

    queries: list[Query]
    features: QueryFeatures
    blocks: dict[str, WellBlock]
    units: dict[str, UnitData] = field(default_factory=dict)

    @property
    def n_specimens(self) -> int:
        """Distinct specimens over all modalities."""
        return len({s for b in self.blocks.values() for s in b.specimens})


def _query_of(row: pd.Series) -> Query:
    from experiment_design import Context

    return Query(
        Perturbation.parse(row[keys.PERTURBATION], row[keys.DOSE_VALUE]),
        float(row[keys.TIME]),
        Context(str(row[keys.CELL_LINE]), str(row[keys.SITE])),
        str(row[keys.ASSAY]),
    )


def build_well_data(space: DesignSpace, data: MeasurementBatch) -> WellData:
    """Aggregate a batch per specimen.

    Raises:
        ValueError: If the batch is empty or names unknown targets / contexts.

    """
    if len(data) == 0:
        raise ValueError("build_well_data: the measurement batch is empty")
    firsts = []
    for m in data.modalities.values():
        firsts.append(m.obs.drop_duplicates(keys.QUERY_ID)[list(keys.OBS_COLUMNS)])
    first = pd.concat(firsts, ignore_index=True).drop_duplicates(keys.QUERY_ID)
    qids = first[keys.QUERY_ID].astype(str).tolist()
    queries = [_query_of(r) for _, r in first.iterrows()]
    qindex = {q: i for i, q in enumerate(qids)}
    blocks, raw = {}, {}
    for name, m in data.modalities.items():
        obs = m.obs
        codes, uniq = pd.factorize(m.specimen_ids, sort=False)
        W = len(uniq)
        X = np.asarray(m.X, dtype=np.float64)
        sums = np.zeros((W, X.shape[1]))
        np.add.at(sums, codes, X)
        n = np.bincount(codes, minlength=W).astype(np.float64)
        counts = is_counts(name)  # counts are summed per specimen, continuous values averaged
        y = sums if counts else sums / n[:, None]
        sem2 = np.zeros_like(y)
        if not counts:
            sq = np.zeros_like(sums)
            np.add.at(sq, codes, X**2)
            var = np.maximum(sq / n[:, None] - y**2, 0.0) * (n / np.maximum(n - 1, 1))[:, None]
            sem2 = var / n[:, None]
        firstrow = pd.Series(np.arange(len(obs))).groupby(codes).first().to_numpy()
        q = np.array([qindex[str(v)] for v in obs[keys.QUERY_ID].to_numpy()[firstrow]])
        plate_col = obs[keys.PLATE] if keys.PLATE in obs else pd.Series([""] * len(obs))
        plate_names = plate_col.fillna("").astype(str).to_numpy()[firstrow]
        pcodes, plates = pd.factorize(plate_names, sort=True)
        well_col = obs[keys.WELL] if keys.WELL in obs else pd.Series([""] * len(obs))
        pos = plate_positions(plate_names, well_col.fillna("").astype(str).to_numpy()[firstrow])
        blocks[name] = WellBlock(
            torch.as_tensor(y, dtype=torch.float32),
            torch.as_tensor(n, dtype=torch.float32),
            torch.as_tensor(q),
            torch.as_tensor(pcodes.astype(np.int64)),
            torch.as_tensor(pos, dtype=torch.float32),
            torch.as_tensor(sem2, dtype=torch.float32),
            tuple(m.var_names),
            tuple(str(p) for p in plates),
            tuple(str(s) for s in uniq),
        )
        raw[name] = (X, codes, obs)
    return WellData(queries, features_from_queries(space, queries), blocks, _unit_data(blocks, raw))


def _unit_data(blocks: dict[str, WellBlock], raw: dict[str, tuple]) -> dict[str, UnitData]:
    """Unit-level counts of spatial spots and of RNA cells of specimens that have spots."""
    if SPATIAL not in blocks:
        return {}
    with_spots = set(blocks[SPATIAL].specimens)
    out = {}
    for name in (SPATIAL, RNA):
        if name not in raw:
            continue
        X, codes, obs = raw[name]
        spec = np.asarray(blocks[name].specimens)
        keep = np.isin(spec[codes], list(with_spots))
        if not keep.any():
            continue
        unit = obs[keys.UNIT].to_numpy() if keys.UNIT in obs else np.zeros(len(obs), dtype=np.int64)
        rep = obs[keys.REPLICATE].to_numpy() if keys.REPLICATE in obs else np.zeros(len(obs), dtype=np.int64)
        first = pd.Series(np.arange(len(obs))).groupby(codes).first().to_numpy()
        out[name] = UnitData(
            X[keep].astype(np.float32),
            codes[keep].astype(np.int64),
            np.asarray(unit)[keep].astype(np.int64),
            np.asarray(rep)[first].astype(np.int64),
        )
    return out


def bootstrap_weights(wd: WellData, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bootstrap resample of specimens: a Multinomial count per specimen.

    Specimens shared by several modalities (anchors) get the same count in each.

    Returns:
        Modality → ``(W,)`` float counts summing to the number of specimens.

    """
    all_spec = sorted({s for b in wd.blocks.values() for s in b.specimens})
    counts = rng.multinomial(len(all_spec), np.full(len(all_spec), 1.0 / len(all_spec)))
    c = dict(zip(all_spec, counts, strict=True))
    return {k: np.array([c[s] for s in b.specimens], dtype=float) for k, b in wd.blocks.items()}
