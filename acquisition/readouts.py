"""The ensemble's readouts on a candidate pool, as a BoTorch ensemble model.

A query's information depends on its assay: the assay observes the latent
state through each of its modalities, so its information is the sum over
those modalities of the information in the modality's readout. This module
turns a model's :class:`~models.base.Prediction` on a candidate pool into one
tensor of *whitened* member predictions per candidate,

    ``W[i, m, :] = concat_r sqrt(c_ir) · P_r (f_r,m(x_i) − f̄_r(x_i)) / σ_r(x_i)``,

over the readouts ``r`` that the candidate's assay observes (its modalities;
``"programs"`` stands in for a modality the model has no decoder for), with
``c_ir`` the number of the assay's modalities that map to readout ``r`` (two
observations of one readout halve its noise variance), ``σ_r²`` the member-
mean aleatoric variance and ``P_r`` a seeded Gaussian sketch
(Johnson–Lindenstrauss, ``E‖P v‖² = ‖v‖²``) for readouts wider than
``max_width`` features. Readouts the assay does not observe are zero.

On whitened outputs the aleatoric variance is 1, so every information measure
of ``uncertainty``, ``disagreement`` and ``eig`` reads directly off the member spread:
``Σ var`` (uncertainty), ``Σ ½ log(1 + var)`` (BALD) and
``½ log det(I + Cov_members)`` (D-optimal EIG).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence

import numpy as np
import torch
from botorch.models.ensemble import EnsembleModel

from experiment_design import DesignSpace, Query
from models.base import PROGRAMS

#: Readouts wider than this are sketched down to this many features.
MAX_WIDTH = 32
#: Relative floor of the aleatoric variance (a readout without a noise model).
NOISE_FLOOR = 1e-3


def assay_readouts(space: DesignSpace, assay: str, available: Sequence[str]) -> dict[str, int]:
    """Readout → multiplicity observed by ``assay`` (modalities without a readout fall back to programs)."""
    out: dict[str, int] = {}
    for modality in space.assay(assay).modalities:
        r = modality if modality in available else PROGRAMS
        out[r] = out.get(r, 0) + 1
    return out


def predict(model: object, queries: Sequence[Query], readouts: Sequence[str]) -> object:
    """``model.predict`` restricted to ``readouts`` when the model accepts that argument."""
    params = inspect.signature(model.predict).parameters
    if "readouts" in params:
        return model.predict(queries, readouts=tuple(readouts))
    return model.predict(queries)


def pool_positions(n: int) -> torch.Tensor:
    """``(n, 1)`` float64 positions ``0 … n−1``: the inputs of a pool-indexed acquisition function.

    Integers below ``2**53`` are exact in float64, so a position survives any
    reshaping, stacking or indexing of the input tensor bit for bit; no
    arithmetic is ever done on it before :func:`pool_rows` reads it back.
    """
    return torch.arange(n, dtype=torch.float64).unsqueeze(-1)


def pool_rows(X: torch.Tensor, n: int) -> torch.Tensor:
    """``X.shape[:-1]`` pool indices of position inputs ``X`` ``(..., 1)`` (see :func:`pool_positions`).

    Args:
        X: Positions, shape ``(..., 1)``.
        n: Pool size.

    Raises:
        ValueError: If ``X`` is not ``(..., 1)`` or holds a value that is not
            a position in ``[0, n)``.

    """
    if X.shape[-1] != 1:
        raise ValueError(
            f"pool-indexed acquisition: inputs must be pool positions of shape (..., 1), got {tuple(X.shape)}; "
            "pass acquisition.readouts.pool_positions(n) rows, not encodings"
        )
    x = X.detach()[..., 0].to(torch.float64)
    idx = x.round()
    bad = (idx < 0) | (idx >= n) | ((x - idx).abs() > 1e-6)
    if bool(bad.any()):
        raise ValueError(f"pool-indexed acquisition: {float(x[bad][0])!r} is not a position in a pool of {n}")
    return idx.long()


class NoModel(torch.nn.Module):
    """Placeholder ``model`` of a pool-indexed acquisition function that reads no BoTorch model."""

    num_outputs = 1


class PoolEnsembleModel(EnsembleModel):
    """Ensemble model whose outputs are the whitened, assay-masked readouts of a fixed pool.

    Its inputs are pool *positions* (:func:`pool_positions`), not encodings:
    a candidate is found by its index, never by comparing floats, so the same
    row is found on every CPU whatever the BLAS kernels do to the last bit.

    Args:
        X_pool: ``(n, d)`` encodings of the pool (kept for reference).
        values: ``(n, M, O)`` whitened member outputs (see the module docstring).

    """

    #: Inputs are pool positions ``(..., q, 1)``, see :func:`pool_positions`.
    indexed = True

    def __init__(self, X_pool: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.X_pool = X_pool.to(torch.float64)
        self.values = values
        self._num_outputs = values.shape[-1]
        self._variance: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None

    @property
    def n_members(self) -> int:
        """Ensemble size ``M``."""
        return self.values.shape[1]

    def rows(self, X: torch.Tensor) -> torch.Tensor:
        """``X.shape[:-1]`` pool indices of the positions ``X`` ``(..., 1)``.

        Raises:
            ValueError: If a value is not a position in the pool.

        """
        return pool_rows(X, len(self.values))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(batch, M, q, O)`` whitened member outputs at pool positions ``X`` ``(batch, q, 1)``."""
        v = self.values[self.rows(X)].to(torch.float64)  # (batch, q, M, O)
        return v.transpose(-3, -2)

    # Per-candidate summaries, computed once per pool: the acquisition
    # functions call these instead of re-deriving them from ``forward`` at
    # every greedy step.
    def row_variance(self, rows: torch.Tensor) -> torch.Tensor:
        """``(*rows.shape, O)`` variance across members (ddof 1) of each output."""
        if self._variance is None:
            self._variance = torch.cat([_spread(v).pow(2).sum(dim=-2) for v in self.values.split(2048)])
        return self._variance[rows]

    def row_gram(self, rows: torch.Tensor) -> torch.Tensor:
        """``(*rows.shape, M, M)`` Gram matrix ``A Aᵀ`` of the centred, scaled members of each row."""
        if self._gram is None:
            parts = []
            for v in self.values.split(2048):
                a = _spread(v)  # (n, M, O)
                parts.append(a @ a.transpose(-1, -2))
            self._gram = torch.cat(parts)
        return self._gram[rows]


def _spread(values: torch.Tensor) -> torch.Tensor:
    """Centre ``(..., M, O)`` members over ``M`` and scale by ``1/√(M−1)`` (float64)."""
    v = values.to(torch.float64)
    m = v.shape[-2]
    return (v - v.mean(dim=-2, keepdim=True)) / max(m - 1, 1) ** 0.5


def build_pool_model(
    model: object,
    space: DesignSpace,
    pool: Sequence[Query],
    X_pool: torch.Tensor,
    rng: np.random.Generator,
    *,
    deadline: float = float("inf"),
    chunk_size: int = 512,
    max_width: int = MAX_WIDTH,
    through_programs: bool = True,
) -> tuple[PoolEnsembleModel, int]:
    """Predict the pool in chunks and build its :class:`PoolEnsembleModel`.

    Args:
        model: A :class:`models.base.Model`.
        space: The design space.
        pool: Candidate queries.
        X_pool: ``(n, d)`` their encodings.
        rng: Draws the sketch matrices.
        deadline: ``time.monotonic()`` value after which no new chunk is
            predicted (the pool is truncated to the chunks done; at least one).
        chunk_size: Queries per ``predict`` call (bounds peak memory).
        max_width: Readouts wider than this are sketched to this width.
        through_programs: Keep only the part of each modality's member
            disagreement that the members' program activities explain (a
            least-squares map from program deviations to whitened readout
            deviations, fitted on the first chunk). Disagreement between the
            members' decoders (loadings, baselines, plate terms) then carries
            no information: the strategies seek what identifies the
            intervention operators, weighted by how precisely each assay
            reads the programs.

    Returns:
        The pool model over the first ``n_done`` candidates, and ``n_done``.

    """
    wanted = [PROGRAMS, *dict.fromkeys(m for a in space.assays for m in a.modalities)]
    lifts: dict[str, np.ndarray] = {}
    sketches: dict[str, np.ndarray | None] = {}
    layout: dict[str, slice] = {}
    chunks = []
    n_done = 0
    for start in range(0, len(pool), chunk_size):
        if start > 0 and time.monotonic() > deadline:
            break
        qs = pool[start : start + chunk_size]
        pred = predict(model, qs, wanted)
        available = [r for r in wanted if r in pred.members]
        if not layout:
            width = 0
            for r in available:
                f = pred.members[r].shape[-1]
                sketches[r] = rng.standard_normal((f, max_width)) / max_width**0.5 if f > max_width else None
                w = min(f, max_width)
                layout[r] = slice(width, width + w)
                width += w
        out = np.zeros((len(qs), pred.members[PROGRAMS].shape[0], width), dtype=np.float32)
        programs = np.asarray(pred.members[PROGRAMS], dtype=np.float64)
        d_prog = programs - programs.mean(axis=0)  # (M, n, K)
        for r in available:
            m = np.asarray(pred.members[r], dtype=np.float64)  # (M, n, F)
            dev = m - m.mean(axis=0)
            alea = np.broadcast_to(np.asarray(pred.aleatoric.get(r, 0.0), dtype=np.float64), m.shape[1:])
            floor = NOISE_FLOOR * max(float(alea.mean()), float(m.var(axis=(0, 1)).mean()), 1e-12)
            dev = dev / np.sqrt(np.maximum(alea, floor))
            if through_programs and r != PROGRAMS:
                if r not in lifts:
                    lifts[r] = _program_lift(d_prog, dev)
                dev = d_prog @ lifts[r]  # only what the operators explain: (M, n, F)
            if sketches[r] is not None:
                dev = dev @ sketches[r]
            mult = np.array([assay_readouts(space, q.assay, available).get(r, 0) for q in qs], dtype=np.float64)
            out[:, :, layout[r]] = (np.sqrt(mult)[None, :, None] * dev).transpose(1, 0, 2)
        chunks.append(out)
        n_done += len(qs)
    values = torch.from_numpy(np.concatenate(chunks))
    return PoolEnsembleModel(X_pool[:n_done], values), n_done


def _program_lift(d_prog: np.ndarray, d_read: np.ndarray) -> np.ndarray:
    """``(K, F)`` least-squares map from program deviations ``(M, n, K)`` to readout deviations ``(M, n, F)``."""
    X = d_prog.reshape(-1, d_prog.shape[-1])
    Y = d_read.reshape(-1, d_read.shape[-1])
    ridge = 1e-6 * max(float((X * X).sum()) / max(X.shape[1], 1), 1e-12)
    return np.linalg.solve(X.T @ X + ridge * np.eye(X.shape[1]), X.T @ Y)


def member_spread(model: EnsembleModel, X: torch.Tensor) -> torch.Tensor:
    """Centred member outputs scaled so that ``Σ_members spread² = variance`` (ddof 1).

    Args:
        model: An ensemble model with whitened outputs.
        X: ``(b, q, d)`` inputs.

    Returns:
        ``(b, M, q, O)`` tensor.

    """
    values = model.posterior(X).values.to(torch.float64)  # (b, M, q, O)
    m = values.shape[-3]
    return (values - values.mean(dim=-3, keepdim=True)) / max(m - 1, 1) ** 0.5


def output_variance(model: EnsembleModel, X: torch.Tensor) -> torch.Tensor:
    """``(b, q, O)`` variance across members (ddof 1) of each output at ``X`` ``(b, q, d)``."""
    if isinstance(model, PoolEnsembleModel):
        return model.row_variance(model.rows(X))
    return member_spread(model, X).pow(2).sum(dim=-3)


def batch_gram(model: EnsembleModel, X: torch.Tensor) -> torch.Tensor:
    """``(b, M, M)`` Gram matrix ``A Aᵀ`` of the centred members over all outputs of the batch ``X`` ``(b, q, d)``.

    The Gram matrix of a concatenation is the sum of its parts' Gram matrices.
    """
    if isinstance(model, PoolEnsembleModel):
        return model.row_gram(model.rows(X)).sum(dim=-3)
    spread = member_spread(model, X)  # (b, M, q, O)
    A = spread.reshape(*spread.shape[:-2], -1)
    return A @ A.transpose(-1, -2)
