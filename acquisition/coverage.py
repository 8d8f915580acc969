"""Information on each modality's decoder: what a batch adds to what every modality has seen.

A modality's decoder (its loadings, offsets and noise model per feature) is
learned only from specimens that observe that modality. For a linear-Gaussian
decoder in which every specimen carries the same information about it, and a
prior worth ``n₀`` specimens, the D-optimal gain of ``k`` new specimens of a
modality already observed in ``n`` specimens is, per decoder parameter,

    ``½ log((n₀ + n + k) / (n₀ + n))``,

and the batch value sums this over modalities, each counted once (the risk's
modality and scale axes weigh modalities alike, not by their width). The first
specimens of a modality are worth most (``½ log 2`` for the first when
``n₀ = 1``); the hundredth is worth almost nothing.

Why it is needed beside the ensemble's readout EIG: the members' spread on a
modality that was never observed is the spread of their untrained decoders
around one initialisation, not the prior's width, and an ``M``-member spread
has rank ``M − 1`` whatever the modality; so the EIG sees an unobserved
modality (CITE-seq's ADT, say) as barely more informative than one observed a
hundred times, and, per unit cost, never buys it. The aggregate risk then
stays high on the modality axis, whose stress sets are anchors.

In ``fisher``'s blend (:class:`acquisition.fisher.Blend`) this part, like the
others, is scaled by the round's best candidate, so it keeps its share as the
modalities fill: the risk's modality axis asks for anchors across conditions,
not only for a first few. (Scaled instead by the value of a never-seen
modality's first specimen, so that it fades, it did worse on that axis: README,
Performance.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction

from acquisition.readouts import NoModel, pool_rows
from experiment_design import DesignSpace, MeasurementBatch, Query

#: Prior weight of a decoder, in specimens.
PRIOR_SPECIMENS = 1.0


def observed_specimens(ledger: MeasurementBatch | None) -> dict[str, int]:
    """Modality → distinct specimens that observe it in ``ledger`` (the model's unit: a well, sample or patch)."""
    if ledger is None:
        return {}
    return {name: int(m.specimen_ids.nunique()) for name, m in ledger.modalities.items()}


class ModalityCoverage(AcquisitionFunction):
    """Joint decoder information ``Σ_m ½ log((n₀ + n_m + k_m) / (n₀ + n_m))`` of a batch of pool candidates.

    Args:
        counts: ``(n, K)`` specimens of each of ``K`` modalities that each pool candidate observes.
        seen: ``(K,)`` specimens of each modality already observed.
        prior: ``n₀``, the prior's weight in specimens.
    """

    indexed = True

    def __init__(self, counts: np.ndarray, seen: np.ndarray, prior: float = PRIOR_SPECIMENS) -> None:
        super().__init__(model=NoModel())
        self.counts = torch.as_tensor(counts, dtype=torch.float64)
        self.base = torch.as_tensor(seen, dtype=torch.float64) + float(prior)
        self.n = len(self.counts)
        self._pending = torch.zeros(self.counts.shape[1], dtype=torch.float64)
        self.X_pending = None

    @classmethod
    def of_pool(cls, space: DesignSpace, queries: Sequence[Query], ledger: MeasurementBatch | None) -> ModalityCoverage:
        """Coverage over ``queries`` (one specimen each), given what ``ledger`` holds."""
        names = sorted({m for a in space.assays for m in a.modalities})
        col = {m: j for j, m in enumerate(names)}
        counts = np.zeros((len(queries), len(names)))
        for i, q in enumerate(queries):
            for m in space.assay(q.assay).modalities:
                counts[i, col[m]] += 1.0
        seen = observed_specimens(ledger)
        return cls(counts, np.array([seen.get(m, 0) for m in names], dtype=float))

    def set_X_pending(self, X_pending: torch.Tensor | None = None) -> None:
        """Count the pending candidates' specimens (pool positions ``(p, 1)``)."""
        if X_pending is None or len(X_pending) == 0:
            self._pending = torch.zeros_like(self.base)
            self.X_pending = None
            return
        self._pending = self.counts[pool_rows(X_pending, self.n)].sum(0)
        self.X_pending = X_pending

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` joint value of ``X`` ``(b, q, 1)`` (pool positions) with the pending candidates."""
        rows = pool_rows(X, self.n)
        if rows.ndim == 1:
            rows = rows[None]
        k = self.counts[rows].sum(-2) + self._pending  # (b, K)
        return 0.5 * torch.log1p(k / self.base).sum(-1)
