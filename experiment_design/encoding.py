"""Encoding of queries as tensors for BoTorch, and back.

Layout of one row, ``d = 2·K + 3`` columns for ``K = max_order`` slots:

====================  ===========  ==========================================
columns               type         value
====================  ===========  ==========================================
``0 .. K-1``          categorical  target of slot i: 0 = empty, 1 + index of
                                   the target in ``space.targets``
``K .. 2K-1``         continuous   dose of slot i in [0, 1]: log10 dose for
                                   compounds, strength for genes, scaled by
                                   the kind's dose range (0 for empty slots)
``2K``                continuous   time, scaled from ``time_range_h`` to [0, 1]
``2K+1``              categorical  context index
``2K+2``              categorical  assay index
====================  ===========  ==========================================

Slots are filled in canonical order (targets sorted by name, as in
:class:`~experiment_design.perturbation.Perturbation`), empty slots last, so a
query has exactly one encoding. Categorical columns hold integer values; their
indices are :attr:`DesignEncoding.cat_dims` (for ``MixedSingleTaskGP`` and
``optimize_acqf_mixed``) and :attr:`DesignEncoding.bounds` spans
``[0, n_categories - 1]`` for them and ``[0, 1]`` for continuous columns.
Decoding rounds categorical columns, clips continuous ones, drops repeated
targets in one row (keeping the first slot) and returns one replicate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from experiment_design.perturbation import Perturbation
from experiment_design.query import Query


class DesignEncoding:
    """Encoder / decoder bound to one :class:`DesignSpace`.

    Args:
        space: The design space.

    """

    def __init__(self, space) -> None:  # noqa: ANN001 - DesignSpace, avoids a cycle
        self.space = space
        self.n_slots = space.max_order
        k = self.n_slots
        self.target_dims = list(range(k))
        self.dose_dims = list(range(k, 2 * k))
        self.time_dim = 2 * k
        self.context_dim = 2 * k + 1
        self.assay_dim = 2 * k + 2
        self.dim = 2 * k + 3
        self.cat_dims = [*self.target_dims, self.context_dim, self.assay_dim]
        self.cont_dims = [*self.dose_dims, self.time_dim]
        #: Number of categories per categorical column.
        self.n_categories = {
            **{i: len(space.targets) + 1 for i in self.target_dims},
            self.context_dim: len(space.contexts),
            self.assay_dim: len(space.assays),
        }
        upper = torch.ones(self.dim, dtype=torch.float64)
        for i, n in self.n_categories.items():
            upper[i] = n - 1
        self.bounds = torch.stack([torch.zeros(self.dim, dtype=torch.float64), upper])

    def encode(self, queries: Sequence[Query]) -> torch.Tensor:
        """Encode queries.

        Args:
            queries: Valid queries of the space.

        Returns:
            ``(n, d)`` float64 tensor in the layout of the module docstring.

        """
        sp = self.space
        X = np.zeros((len(queries), self.dim))
        lo_t, hi_t = sp.time_range_h
        for r, q in enumerate(queries):
            for s, (name, dose) in enumerate(zip(q.perturbation.targets, q.perturbation.doses, strict=True)):
                ti = sp.target_index[name]
                X[r, self.target_dims[s]] = ti + 1
                X[r, self.dose_dims[s]] = sp.dose_to_unit(sp.targets[ti].kind, dose)
            X[r, self.time_dim] = (q.time_h - lo_t) / (hi_t - lo_t)
            X[r, self.context_dim] = sp.context_index[q.context]
            X[r, self.assay_dim] = sp.assay_index[q.assay]
        return torch.as_tensor(X, dtype=torch.float64)

    def decode(self, X: torch.Tensor | np.ndarray) -> list[Query]:
        """Decode rows back to queries.

        Args:
            X: ``(n, d)`` encodings (need not be exactly on the grid).

        Returns:
            ``n`` queries, one replicate each.

        """
        sp = self.space
        X = np.asarray(X.detach().cpu() if isinstance(X, torch.Tensor) else X, dtype=float)
        X = np.atleast_2d(X)
        lo_t, hi_t = sp.time_range_h
        out = []
        for row in X:
            names, doses = [], []
            for s in range(self.n_slots):
                code = int(np.clip(np.rint(row[self.target_dims[s]]), 0, len(sp.targets)))
                if code == 0:
                    continue
                t = sp.targets[code - 1]
                if t.name in names:
                    continue
                names.append(t.name)
                doses.append(float(sp.unit_to_dose(t.kind, row[self.dose_dims[s]])))
            time_h = lo_t + float(np.clip(row[self.time_dim], 0, 1)) * (hi_t - lo_t)
            ci = int(np.clip(np.rint(row[self.context_dim]), 0, len(sp.contexts) - 1))
            ai = int(np.clip(np.rint(row[self.assay_dim]), 0, len(sp.assays) - 1))
            out.append(Query(Perturbation(tuple(names), tuple(doses)), time_h, sp.contexts[ci], sp.assays[ai].name))
        return out
