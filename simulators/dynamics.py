"""Interventions ``T_u`` and the propagator ``Φ_t``: a perturbation's effect on the latent state.

For a perturbation of targets ``j`` at doses ``c_j`` in cell line ``l``:

* direct effect of ``j`` on program ``m``: ``Emax_jm · H_jm(c_j) · o_j(t)``,
  with ``H = c^h / (c^h + EC50^h)`` (EC50 shifted by the line's
  ``10^shift``) and onset ``o_j(t) = 1 − exp(−t / τ_j)``;
* same-program targets with the same sign combine by Loewe dose
  equivalence: ``x = Σ_j c_j / EC50_jm``, effect ``Emax_r · x^h_r / (1 + x^h_r)``
  of the member ``r`` with the largest ``|Emax|``, onset the dose-weighted
  mean of the members' onsets; opposite signs add;
* targets on different programs are independent (Bliss: their latent effects
  add, which multiplies their fold changes in expression space); an
  interacting pair adds ``γ_ij · φ_i · φ_j · Emax_i`` to ``i``'s primary
  program (and symmetrically), ``φ = H · o`` on the primary program;
  a triplet adds pairwise terms plus ``δ_ijk · φ_i φ_j φ_k`` likewise;
* the DAG propagates linearly with delays:
  ``Δz_k(t) = Σ_m P[m, k] · u_m(t − D[m, k])``.

Everything is the response of a *responding* cell; population means scale
it by the line's responder fraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from experiment_design import DesignSpace, Perturbation
from simulators.params import WorldParams


def _hill(c: np.ndarray, ec50: np.ndarray, h: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + (ec50 / c) ** h)


class Intervention:
    """Computes responder latent shifts ``Δz`` of perturbations over time.

    Args:
        params: World parameters.
        space: Design space (maps target names to indices).

    """

    def __init__(self, params: WorldParams, space: DesignSpace) -> None:
        self.p = params
        self.index = space.target_index
        self._pair = {}
        t = len(params.targets)
        for i in range(t):
            for j in range(i + 1, t):
                if params.interactions[i, j] != 0:
                    self._pair[(i, j)] = float(params.interactions[i, j])
        self._triple = {tuple(int(v) for v in r[:3]): float(r[3]) for r in params.triples}

    def response(self, pert: Perturbation, line: int, times_h: np.ndarray | Sequence[float]) -> np.ndarray:
        """Latent shift of a responding cell.

        Args:
            pert: The perturbation (control gives zeros).
            line: Cell-line index.
            times_h: ``(n_t,)`` hours after perturbation.

        Returns:
            ``(n_t, K)`` shift of the latent state.

        """
        p = self.p
        t = np.atleast_1d(np.asarray(times_h, dtype=float))
        k = p.graph.n_programs
        if pert.is_control:
            return np.zeros((len(t), k))
        idx = [self.index[name] for name in pert.targets]
        c = np.asarray(pert.doses, dtype=float) / 10.0 ** p.line_ec50_shift_log10[line]
        # Time seen at source program m for destination k: (n_t, K, K).
        s = np.clip(t[:, None, None] - p.graph.delay_h[None], 0.0, None)
        onset = [1.0 - np.exp(-s / p.tau_h[j]) for j in idx]
        u = np.zeros((len(t), k, k))
        for m in range(k):
            acting = [a for a, j in enumerate(idx) if p.emax[j, m] != 0]
            for sign in (-1.0, 1.0):
                group = [a for a in acting if np.sign(p.emax[idx[a], m]) == sign]
                if not group:
                    continue
                js = [idx[a] for a in group]
                ratio = np.array([c[a] / 10.0 ** p.ec50_log10[j, m] for a, j in zip(group, js, strict=True)])
                x = ratio.sum()
                ref = js[int(np.argmax(np.abs(p.emax[js, m])))]
                h = p.hill[ref, m]
                eff = p.emax[ref, m] * x**h / (1.0 + x**h)
                weights = ratio / x
                u[:, m, :] += eff * sum(wt * onset[a][:, m, :] for wt, a in zip(weights, group, strict=True))
        phi = self._primary_fractions(idx, c, onset)
        for a, b in ((0, 1), (0, 2), (1, 2)):
            if b < len(idx):
                gamma = self._pair.get((min(idx[a], idx[b]), max(idx[a], idx[b])))
                if gamma:
                    self._add_term(u, gamma, [a, b], idx, phi)
        if len(idx) == 3:
            delta = self._triple.get(tuple(sorted(idx)))
            if delta:
                self._add_term(u, delta, [0, 1, 2], idx, phi)
        return np.einsum("tmk,mk->tk", u, p.graph.propagation)

    def _primary_fractions(self, idx: list[int], c: np.ndarray, onset: list[np.ndarray]) -> list[np.ndarray]:
        """``φ_j = H_j(c_j) · o_j`` on ``j``'s primary program, ``(n_t, K, K)`` each."""
        p = self.p
        out = []
        for a, j in enumerate(idx):
            m = p.primary[j]
            out.append(_hill(c[a], 10.0 ** p.ec50_log10[j, m], p.hill[j, m]) * onset[a])
        return out

    def _add_term(self, u: np.ndarray, coef: float, members: list[int], idx: list[int], phi: list[np.ndarray]) -> None:
        p = self.p
        for a in members:
            m = p.primary[idx[a]]
            prod = np.ones_like(u[:, m, :])
            for b in members:
                prod = prod * phi[b][:, m, :]
            u[:, m, :] += coef * p.emax[idx[a], m] * prod

    def steady_state(self, pert: Perturbation, line: int = 0) -> np.ndarray:
        """``(K,)`` responder latent shift long after perturbation (t → ∞)."""
        return self.response(pert, line, [1e6])[0]
