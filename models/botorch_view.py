"""BoTorch view of a CSL ensemble: an ``EnsembleModel`` over the design encoding.

``forward(X)`` maps ``batch × n × d`` encodings (layout of
:mod:`experiment_design.encoding`) straight to torch features — target slots
and context are rounded (categorical), doses and time are mapped from [0, 1]
to log10 dose and hours differentiably — and evaluates every member, so
``posterior(X)`` is an ``EnsemblePosterior`` with values
``batch × M × n × m`` and gradients flow w.r.t. the continuous dims (doses,
time). Outputs are a readout of :meth:`CSLNetwork.readouts` (``"programs"``
by default: the ``K`` program activities), optionally a subset of features.
The member networks are frozen (no parameter gradients).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from botorch.models.ensemble import EnsembleModel

from models.base import PROGRAMS
from models.data import QueryFeatures, context_vocab


class CSLBotorchModel(EnsembleModel):
    """Ensemble posterior over the design encoding.

    Args:
        ensemble: A fitted :class:`~models.csl.CSLEnsemble`.
        readout: Readout name (``"programs"``, ``"rna"``, ...).
        feature_idx: Optional feature indices of the readout to output.

    """

    def __init__(self, ensemble, readout: str = PROGRAMS, feature_idx: Sequence[int] | None = None) -> None:  # noqa: ANN001
        super().__init__()
        self.nets = list(ensemble.networks)
        for net in self.nets:
            net.requires_grad_(False)
        if readout != PROGRAMS and readout not in self.nets[0].decoders:
            raise ValueError(f"to_botorch: unknown readout {readout!r}; have {[PROGRAMS, *self.nets[0].decoders]}")
        space = ensemble.space
        enc = space.encoding
        self.enc = enc
        self.readout = readout
        self.feature_idx = None if feature_idx is None else torch.as_tensor(list(feature_idx), dtype=torch.long)
        T = len(space.targets)
        self.n_targets = T
        lo = torch.ones(T + 1, dtype=torch.float64)  # the empty slot T gets a harmless (1, 2) range
        hi = torch.full((T + 1,), 2.0, dtype=torch.float64)
        is_log = torch.zeros(T + 1, dtype=torch.bool)
        for i, t in enumerate(space.targets):
            a, b = space.dose_ranges[t.kind]
            lo[i], hi[i], is_log[i] = a, b, t.kind.log_dose
        self.dose_lo, self.dose_hi, self.is_log = lo, hi, is_log
        self.time_range = space.time_range_h
        lines, sites = context_vocab(space)
        self.ctx_line = torch.tensor([lines.index(c.cell_line) for c in space.contexts])
        self.ctx_site = torch.tensor([sites.index(c.site) for c in space.contexts])
        with torch.no_grad():
            probe = self._features(torch.zeros(1, enc.dim, dtype=torch.float64))
            width = self.nets[0].readouts(probe, (readout,))[readout][0].shape[-1]
        self._num_outputs = width if self.feature_idx is None else len(self.feature_idx)

    def _features(self, X: torch.Tensor) -> QueryFeatures:
        """``(N, d)`` encodings → features (differentiable in doses and time)."""
        enc, T = self.enc, self.n_targets
        codes = X[:, enc.target_dims].detach().round().long().clamp(0, T)
        tgt = torch.where(codes == 0, torch.full_like(codes, T), codes - 1)
        for s in range(1, tgt.shape[1]):  # a repeated target counts once (as decode does)
            dup = (tgt[:, s : s + 1] == tgt[:, :s]).any(1) & (tgt[:, s] < T)
            tgt[:, s] = torch.where(dup, torch.full_like(tgt[:, s], T), tgt[:, s])
        u = X[:, enc.dose_dims].clamp(0.0, 1.0)
        lo, hi = self.dose_lo[tgt], self.dose_hi[tgt]
        log_lin = torch.log10(lo + u * (hi - lo))
        log_log = torch.log10(lo) + u * (torch.log10(hi) - torch.log10(lo))
        x = torch.where(self.is_log[tgt], log_log, log_lin) * (tgt < T)
        lo_t, hi_t = self.time_range
        time_h = lo_t + X[:, enc.time_dim].clamp(0.0, 1.0) * (hi_t - lo_t)
        ctx = X[:, enc.context_dim].detach().round().long().clamp(0, len(self.ctx_line) - 1)
        return QueryFeatures(tgt, x.float(), time_h.float(), self.ctx_line[ctx], self.ctx_site[ctx])

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Member outputs.

        Args:
            X: ``batch_shape × n × d`` encodings.

        Returns:
            ``batch_shape × M × n × m`` member readouts, dtype of ``X``.

        """
        batch, (n, d) = X.shape[:-2], X.shape[-2:]
        f = self._features(X.reshape(-1, d))
        outs = []
        for net in self.nets:
            m = net.readouts(f, (self.readout,))[self.readout][0]
            if self.feature_idx is not None:
                m = m[:, self.feature_idx]
            outs.append(m)
        vals = torch.stack(outs).to(X.dtype)  # (M, N, m)
        M, m = vals.shape[0], vals.shape[-1]
        vals = vals.reshape(M, *batch, n, m)
        return vals.movedim(0, len(batch)) if batch else vals

    @property
    def ensemble_size(self) -> int:
        """``M``."""
        return len(self.nets)


class PredictionView(EnsembleModel):
    """Ensemble posterior of any protocol model, through ``space.decode`` and ``model.predict``.

    Not differentiable (the encodings are decoded to queries): for acquisition over a
    candidate pool, which is how every cslab strategy optimises.

    Args:
        model: A fitted model with ``space`` and ``predict(queries, readouts=...)``.
        readout: Readout name (``"programs"``, ``"rna"``, ...).
        feature_idx: Optional feature indices of the readout to output.
    """

    def __init__(self, model, readout: str = PROGRAMS, feature_idx: Sequence[int] | None = None) -> None:  # noqa: ANN001
        super().__init__()
        self.model, self.space, self.readout = model, model.space, readout
        self.feature_idx = None if feature_idx is None else list(feature_idx)
        probe = self.space.decode(torch.zeros(1, self.space.encoding.dim, dtype=torch.float64))
        members = model.predict(probe, readouts=(readout,)).members
        if readout not in members:
            raise ValueError(f"to_botorch: unknown readout {readout!r}; have {sorted(members)}")
        self._num_outputs = members[readout].shape[-1] if self.feature_idx is None else len(self.feature_idx)
        self._M = members[readout].shape[0]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``batch_shape × M × n × m`` member readouts of ``batch_shape × n × d`` encodings, dtype of ``X``."""
        batch, (n, d) = X.shape[:-2], X.shape[-2:]
        vals = self.model.predict(self.space.decode(X.reshape(-1, d)), readouts=(self.readout,)).members[self.readout]
        if self.feature_idx is not None:
            vals = vals[..., self.feature_idx]
        out = torch.as_tensor(vals, dtype=X.dtype).reshape(self._M, *batch, n, -1)
        return out.movedim(0, len(batch)) if batch else out

    @property
    def ensemble_size(self) -> int:
        """``M``."""
        return self._M
