"""``fisher``: information on the intervention parameters that identifiability scores (Laplace, A-optimal).

The model supplies, per ensemble member, a Laplace / Gauss–Newton posterior
``Σ_m`` over every target's intervention parameters (log10 EC50, ln Hill,
Emax, ln τ, pairwise γ) and each candidate's information factor ``L`` (one
specimen: ``L Lᵀ`` is its Fisher information) through the optional
:class:`models.base.LaplaceModel` protocol; :mod:`models.laplace` builds them
for the CSL ensemble and says how.

The acquisition value of a batch is the mixture over members of the
*targeted A-optimal* gain: the drop of ``Σ_s w_s Var(θ_s) / Var₀(θ_s)``, the
posterior variances of the scored parameters relative to their prior,
weighted as the identifiability index weights them (EC50 2, slope 1, τ 1,
Emax 2 for the sign, γ 1); EC50 and slope of a (target, program) count in
proportion to how likely the member thinks the effect is real
(``min(1, |Emax| / 0.2)``, at least 0.1), since only real effects are scored.
For one candidate with factor ``L`` on support ``S``::

    gain_m = tr((I + Lᵀ Σ_SS L)⁻¹ Lᵀ G_SS L),   G = Σ C Σ,  C = diag(w / Var₀)

and choosing it updates ``Σ ← Σ − Σ_{·S} L (I + Lᵀ Σ_SS L)⁻¹ Lᵀ Σ_{S·}``
(Woodbury), so the greedy batch is conditional on what it already holds. An
untried target keeps its prior width: its first wells are worth much; a dose
on the flat tail of a fitted curve is worth little. The posteriors are full
rank whatever the ensemble size (a 5-member spread alone has rank ≤ 4).

By default the value is blended (:class:`Blend`, each part scaled by its best
candidate) with the readouts' joint EIG, decoders included, for the index's
cross-modal, cross-scale and latent parts: 7 : 5, the index's weights of the
parts each serves; and a quarter of the blend goes to the modalities' decoder
information (:mod:`acquisition.coverage`: what the batch adds to the specimens
each modality has seen), which the ensemble's spread cannot show for a
modality it has never observed. Cost per unit information, pacing and anchors come from
:mod:`acquisition.cost_aware` on top (its default base). A model without an
intervention operator (a baseline) has no such parameters: the strategy then
falls back to the ensemble ``eig``, and so it does, with a warning, when the
dense posteriors would not fit in memory (more than
``models.laplace.MAX_PARAMETERS`` parameters, e.g. the large world's 39,300).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction

from acquisition.base import DEFAULT_TIME_LIMIT_S
from acquisition.botorch_strategy import BotorchStrategy, Pool
from acquisition.coverage import ModalityCoverage
from acquisition.readouts import NoModel, build_pool_model, pool_positions, pool_rows
from acquisition.registry import register
from experiment_design import DesignSpace, MeasurementBatch, Query
from models.base import LaplaceModel, PosteriorTooLarge

#: Share of the acquisition value given to the readouts' joint EIG (decoders included: what identifies the
#: cross-modal, cross-scale and latent parts, 5 of the index's 12 weights); the rest goes to the parameters
#: (EC50, slope, τ, direction, interaction: 7 of 12).
READOUT_SHARE = 5.0 / 12.0
#: Share of the acquisition value given to the modalities' decoder information (:mod:`acquisition.coverage`); the
#: parameter and readout parts share the rest 7 : 5.
COVERAGE_SHARE = 0.25
#: Candidates that stay in the greedy race after its first step (the best by gain per cost).
SHORTLIST = 256


class ParameterInformation(AcquisitionFunction):
    """Mixture over members of the targeted A-optimal gain of a batch of pool candidates (by position).

    Args:
        members: One :class:`models.laplace.MemberPosterior` per ensemble member (``sigma0``, ``gains``,
            ``update``, ``score``).
        support: ``(n, width)`` support of each pool candidate (the same for every member).
        factors: Per member, ``(n, width, R)`` information factors of each pool candidate.
        X_pending: ``(p, 1)`` pool positions already chosen.
    """

    indexed = True

    def __init__(
        self, members: list, support: torch.Tensor, factors: list[torch.Tensor], X_pending: torch.Tensor | None = None
    ) -> None:
        super().__init__(model=NoModel())
        self.members, self.support, self.factors = members, support, factors
        self.n = len(support)
        self._pending: tuple[int, ...] = ()
        self._G: list[torch.Tensor] | None = None  # Σ C Σ per member at the pending posterior (set_X_pending)
        self._G64: list[torch.Tensor] | None = None  # the same in float64, updated step by step
        self.set_X_pending(X_pending)

    def _condition(
        self, rows: tuple[int, ...], weighted: bool = False
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, float]:
        """Posteriors after ``rows`` (reusing the cached pending prefix), and the batch value of ``rows``.

        With ``weighted``, also each member's ``G = Σ C Σ`` (float64), carried along by the same rank-R
        update as Σ (:meth:`~models.laplace.MemberPosterior.update_weighted`: no O(P³) product per step).
        """
        cached = bool(self._pending) and rows[: len(self._pending)] == self._pending
        cached = cached and (self._G64 is not None or not weighted)
        sig = list(self._sigma) if cached else [m.sigma0 for m in self.members]
        G64 = None
        if weighted:
            G64 = list(self._G64) if cached else [m.weighted64(m.sigma0) for m in self.members]
        for r in rows[len(self._pending) if cached else 0 :]:
            for i, (m, L) in enumerate(zip(self.members, self.factors, strict=True)):
                if weighted:
                    sig[i], G64[i] = m.update_weighted(sig[i], G64[i], self.support[r], L[r])
                else:
                    sig[i] = m.update(sig[i], self.support[r], L[r])
        value = float(np.mean([m.score(m.sigma0) - m.score(s) for m, s in zip(self.members, sig, strict=True)]))
        return sig, G64, value

    def set_X_pending(self, X_pending: torch.Tensor | None = None) -> None:
        """Condition every member's posterior on the pending candidates (pool positions)."""
        rows = () if X_pending is None or len(X_pending) == 0 else tuple(pool_rows(X_pending, self.n).tolist())
        if rows != self._pending or self._G is None:
            self._sigma, self._G64, self._pending_value = self._condition(rows, weighted=True)
            self._G = [g.float() for g in self._G64]
        self._pending = rows
        self.X_pending = X_pending if rows else None

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` joint value of ``X`` ``(b, q, 1)`` (pool positions) together with the pending candidates."""
        rows = pool_rows(X, self.n)
        if rows.ndim == 1:
            rows = rows[None]
        if rows.shape[-1] == 1:
            r = rows[:, 0]
            g = torch.stack(
                [
                    m.gains(s, self.support[r], L[r], G)
                    for m, s, L, G in zip(self.members, self._sigma, self.factors, self._G, strict=True)
                ]
            ).mean(0)
            return self._pending_value + g
        return torch.tensor([self._condition(self._pending + tuple(b.tolist()))[2] for b in rows], dtype=torch.float64)


class Blend(AcquisitionFunction):
    """A weighted sum of pool-indexed acquisition functions, each scaled by its best single candidate.

    ``a(X) = Σ_i w_i a_i(X) / max_x a_i(x)``: scale-free, so two information measures in different
    units (variance drop, nats) add up in proportion to ``w``. The scales are read once, on the whole
    pool with nothing pending.

    Args:
        parts: Acquisition functions over the same pool positions.
        weights: Their weights.
        n: Pool size.
        chunk_size: Candidates per call when reading the scales.
    """

    indexed = True

    def __init__(self, parts: list[AcquisitionFunction], weights: list[float], n: int, chunk_size: int = 4096) -> None:
        super().__init__(model=NoModel())
        self.parts, self.weights, self.n = parts, [float(w) for w in weights], n
        X = pool_positions(n)
        for a in parts:
            a.set_X_pending(None)
        # every candidate's own value with nothing pending: the scales, and the greedy's first step
        self._alone = [
            torch.cat([a(X[lo : lo + chunk_size].unsqueeze(-2)).double() for lo in range(0, n, chunk_size)])
            for a in parts
        ]
        self.scales = [float(v.max()) if float(v.max()) > 0 else 1.0 for v in self._alone]
        self.X_pending = None

    def set_X_pending(self, X_pending: torch.Tensor | None = None) -> None:
        """Set the pending candidates of every part."""
        for a in self.parts:
            a.set_X_pending(X_pending)
        self.X_pending = X_pending

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` blended joint value of ``X`` ``(b, q, 1)`` with the pending candidates."""
        if self.X_pending is None and X.shape[-2] == 1:
            rows = pool_rows(X, self.n)[..., 0]
            return sum(w * v[rows] / s for v, w, s in zip(self._alone, self.weights, self.scales, strict=True))
        return sum(w * a(X).double() / s for a, w, s in zip(self.parts, self.weights, self.scales, strict=True))


@register("fisher")
class FisherStrategy(BotorchStrategy):
    """Targeted A-optimal design on the intervention parameters (Laplace posterior, mixed over members).

    Args:
        time_limit_s: Wall-clock safety limit of one proposal, seconds.
        pool_size: Candidates drawn per proposal.
        chunk_size: Candidates scored per acquisition call.
        cost_exponent: λ in gain / cost^λ (0 here; :mod:`acquisition.cost_aware` sets 1).
        readout_share: Share of the readouts' joint EIG in the blend (of what coverage leaves).
        coverage_share: Share of the modalities' decoder information (:mod:`acquisition.coverage`).
    """

    shortlist = SHORTLIST

    def __init__(
        self,
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
        pool_size: int = 2000,
        chunk_size: int = 4096,
        cost_exponent: float = 0.0,
        readout_share: float = READOUT_SHARE,
        coverage_share: float = COVERAGE_SHARE,
    ) -> None:
        super().__init__(time_limit_s, pool_size, chunk_size, cost_exponent)
        if not 0.0 <= readout_share < 1.0:
            raise ValueError(f"FisherStrategy: readout_share must be in [0, 1), got {readout_share}")
        if not 0.0 <= coverage_share < 1.0:
            raise ValueError(f"FisherStrategy: coverage_share must be in [0, 1), got {coverage_share}")
        self.readout_share = float(readout_share)
        self.coverage_share = float(coverage_share)

    def _laplace(self, model: LaplaceModel, queries: list[Query]) -> tuple[list, torch.Tensor, list[torch.Tensor]]:
        """The members' parameter posteriors and the candidates' information (the model's own fit)."""
        return model.laplace(queries)

    def build_acqf(
        self,
        model: object,
        space: DesignSpace,
        pool: Pool,
        ledger: MeasurementBatch | None,
        rng: np.random.Generator,
        deadline: float,
    ) -> tuple[AcquisitionFunction, Pool]:
        """Parameter information of the members' Laplace posteriors (readout EIG for a model without them)."""
        posterior = None
        if isinstance(model, LaplaceModel):
            try:
                posterior = self._laplace(model, pool.queries)
            except PosteriorTooLarge as exc:
                warnings.warn(f"fisher: {exc}; valuing candidates by the readouts' EIG instead", stacklevel=2)
        if posterior is None:
            from acquisition.eig import EIGStrategy  # no (affordable) posterior over intervention parameters

            return EIGStrategy(self.time_limit_s, self.pool_size, self.chunk_size).build_acqf(
                model, space, pool, ledger, rng, deadline
            )
        members, support, factors = posterior
        acqf = ParameterInformation(members, support, factors)
        if self.readout_share == 0.0 and self.coverage_share == 0.0:
            return acqf, pool
        parts, weights, n = [acqf], [1.0 - self.readout_share], len(pool.queries)
        if self.readout_share > 0.0:
            from acquisition.eig import EnsembleEIG

            pool_model, n = build_pool_model(
                model, space, pool.queries, pool.X, rng, deadline=deadline, through_programs=False
            )
            parts.append(EnsembleEIG(pool_model))
            weights.append(self.readout_share)
        pool = pool.truncate(n)
        weights = [(1.0 - self.coverage_share) * w for w in weights]
        if self.coverage_share > 0.0:
            parts.append(ModalityCoverage.of_pool(space, pool.queries, ledger))
            weights.append(self.coverage_share)
        return Blend(parts, weights, n, self.chunk_size), pool
