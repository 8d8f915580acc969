"""Function-space readouts ``F``: what evaluation compares, on both sides.

Observed readouts are put on the scale of the model's modality readouts
(see :mod:`models.modules.decoders`), per specimen, then averaged over the
specimens (replicates) of each query:

* ``rna`` and ``spatial`` (counts): log CP10k of the specimen's pseudobulk,
  ``log(1e4 · (y_g + 0.5) / (N + 0.5 G))`` with ``y`` summed over its cells /
  spots and ``N = Σ_g y_g`` (the 0.5 keeps genes without counts finite);
* ``adt`` (counts): log counts per cell, ``log((y_p + 0.5) / n_cells)``;
* ``morphology`` and ``molecular`` (continuous): the specimen mean.

On top of these, function-space maps: program / pathway activity (mean log
expression of a gene set, from the truth's loadings or a GMT file), top-k
differentially expressed genes against control (overlap, direction) and kNN
neighbourhood overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiment_design import MeasurementBatch, keys
from experiment_design.modalities import modality_spec

PSEUDOCOUNT = 0.5


@dataclass
class ObservedReadout:
    """One modality of a batch, per query.

    Attributes:
        query_ids: ``n`` query ids, in first-seen order.
        values: ``(n, F)`` mean over the query's specimens of the specimen readout.
        n_specimens: ``(n,)`` specimens averaged.
        var_names: ``F`` feature names.

    """

    query_ids: list[str]
    values: np.ndarray
    n_specimens: np.ndarray
    var_names: tuple[str, ...]


def specimen_readout(modality: str, X: np.ndarray, n_units: np.ndarray) -> np.ndarray:
    """Readout of specimens from their summed (counts) or mean (continuous) unit values.

    Args:
        modality: Modality name.
        X: ``(W, F)`` per-specimen sums (count modalities) or means.
        n_units: ``(W,)`` units per specimen.

    Returns:
        ``(W, F)`` readouts on the model's scale (module docstring).

    """
    X = np.asarray(X, dtype=float)
    readout = modality_spec(modality).readout
    if readout == "log_cp10k":
        lib = X.sum(axis=1, keepdims=True) + PSEUDOCOUNT * X.shape[1]
        return np.log(1e4 * (X + PSEUDOCOUNT) / lib)
    if readout == "log_per_unit":
        return np.log((X + PSEUDOCOUNT) / np.asarray(n_units, dtype=float)[:, None])
    return X


def observed_readout(batch: MeasurementBatch, modality: str) -> ObservedReadout:
    """Per-query readout of one modality of a batch (module docstring).

    Raises:
        ValueError: If the batch has no such modality.

    """
    if modality not in batch.modalities:
        raise ValueError(f"observed_readout: batch has no modality {modality!r}; has {list(batch.modalities)}")
    m = batch.modalities[modality]
    obs = m.obs
    codes, _ = pd.factorize(m.specimen_ids, sort=False)
    W = int(codes.max()) + 1 if len(codes) else 0
    X = np.asarray(m.X, dtype=float)
    sums = np.zeros((W, X.shape[1]))
    np.add.at(sums, codes, X)
    n = np.bincount(codes, minlength=W).astype(float)
    agg = sums if modality_spec(modality).is_counts else sums / n[:, None]
    r = specimen_readout(modality, agg, n)
    spec_q = obs[keys.QUERY_ID].astype(str).to_numpy()[pd.Series(np.arange(len(obs))).groupby(codes).first()]
    qcodes, qids = pd.factorize(spec_q, sort=False)
    nq = np.bincount(qcodes, minlength=len(qids)).astype(float)
    vals = np.zeros((len(qids), r.shape[1]))
    np.add.at(vals, qcodes, r)
    return ObservedReadout([str(q) for q in qids], vals / nq[:, None], nq, m.var_names)


# -------------------------------------------------------------------- gene sets
def parse_gmt(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Read gene sets from a GMT file: ``name<TAB>description<TAB>gene1<TAB>gene2...`` per line.

    Raises:
        ValueError: Naming the file and line of a line with fewer than three
            fields or a repeated set name.

    """
    out: dict[str, tuple[str, ...]] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.rstrip("\n").split("\t")]
        genes = tuple(g for g in fields[2:] if g)
        if len(fields) < 3 or not fields[0] or not genes:
            raise ValueError(f"{path}:{lineno}: a GMT line needs name, description and at least one gene")
        if fields[0] in out:
            raise ValueError(f"{path}:{lineno}: gene set {fields[0]!r} appears twice")
        out[fields[0]] = genes
    return out


def gene_sets_from_loadings(
    loadings: np.ndarray, genes: Sequence[str], programs: Sequence[str], top: int = 20
) -> dict[str, tuple[str, ...]]:
    """Gene set per program: the ``top`` genes with the largest positive loading.

    Args:
        loadings: ``(G, K)`` truth loadings (log scale).
        genes: ``G`` gene names.
        programs: ``K`` program names.
        top: Genes per set.

    """
    W = np.asarray(loadings, dtype=float)
    if W.shape != (len(genes), len(programs)):
        raise ValueError(f"gene_sets_from_loadings: loadings {W.shape} vs {len(genes)} genes, {len(programs)} programs")
    out = {}
    for k, p in enumerate(programs):
        idx = np.argsort(-W[:, k])[: min(top, len(genes))]
        out[p] = tuple(genes[i] for i in idx if W[i, k] > 0) or (genes[int(idx[0])],)
    return out


def program_activity(X: np.ndarray, var_names: Sequence[str], gene_sets: dict[str, Sequence[str]]) -> np.ndarray:
    """Mean readout over each gene set's genes (genes absent from ``var_names`` ignored).

    Args:
        X: ``(n, G)`` log-scale expression readouts.
        var_names: ``G`` gene names.
        gene_sets: Set name → genes.

    Returns:
        ``(n, S)`` activities, sets in the dict's order.

    Raises:
        ValueError: If a set shares no gene with ``var_names``.

    """
    pos = {g: i for i, g in enumerate(var_names)}
    cols = []
    for name, genes in gene_sets.items():
        idx = [pos[g] for g in genes if g in pos]
        if not idx:
            raise ValueError(f"program_activity: gene set {name!r} shares no gene with the features")
        cols.append(np.asarray(X, dtype=float)[:, idx].mean(axis=1))
    return np.stack(cols, axis=1)


# ---------------------------------------------------------------- DE and kNN
def top_de(delta: np.ndarray, k: int = 20) -> np.ndarray:
    """``(n, k)`` indices of the ``k`` genes with the largest ``|delta|`` per row."""
    d = np.abs(np.asarray(delta, dtype=float))
    k = min(k, d.shape[1])
    return np.argsort(-d, axis=1, kind="stable")[:, :k]


def de_agreement(pred_delta: np.ndarray, obs_delta: np.ndarray, k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Top-k DE overlap and direction accuracy, per condition.

    Args:
        pred_delta: ``(n, G)`` predicted minus control readout.
        obs_delta: ``(n, G)`` observed minus control readout.
        k: Genes in the top set (GEARS uses 20).

    Returns:
        ``overlap`` ``(n,)``: fraction of the observed top-k also in the
        predicted top-k; ``direction`` ``(n,)``: fraction of the observed
        top-k whose predicted sign matches.

    """
    p, o = np.asarray(pred_delta, dtype=float), np.asarray(obs_delta, dtype=float)
    tp, to = top_de(p, k), top_de(o, k)
    overlap = np.array([len(set(a) & set(b)) / len(b) for a, b in zip(tp, to, strict=True)])
    rows = np.arange(len(o))[:, None]
    direction = (np.sign(p[rows, to]) == np.sign(o[rows, to])).mean(axis=1)
    return overlap, direction


def knn_overlap(A: np.ndarray, B: np.ndarray, k: int = 10) -> float:
    """Mean fraction of shared k nearest neighbours of each row in two embeddings.

    Args:
        A: ``(n, d1)`` e.g. predicted readouts of cells or wells.
        B: ``(n, d2)`` the observed readouts of the same cells or wells.
        k: Neighbours (capped at ``n − 1``).

    Returns:
        Overlap in [0, 1]; 1 when the neighbourhoods agree.

    """
    A, B = np.asarray(A, dtype=float), np.asarray(B, dtype=float)
    n = len(A)
    if n < 2 or len(B) != n:
        raise ValueError(f"knn_overlap: need two embeddings of the same n >= 2 rows, got {len(A)} and {len(B)}")
    k = min(k, n - 1)

    def nn(Z: np.ndarray) -> np.ndarray:
        D = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(D, np.inf)
        return np.argsort(D, axis=1, kind="stable")[:, :k]

    na, nb = nn(A), nn(B)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(na, nb, strict=True)]))
