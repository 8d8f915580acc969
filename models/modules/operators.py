"""Latent operators: context, intervention ``T_u`` and propagator ``Φ_t``.

The latent state of a condition, ``(n, K)``, for targets ``j`` in slots ``s``
at log10 doses ``x_s`` (µM for compounds, strength for genes), time ``t`` and
cell line ``c``::

    f_sm      = sigmoid(h_jm · ln10 · (x_s − log10EC50_jm − δ_c))        Hill fraction
    o_s(t)    = 1 − exp(−max(t, 0) / τ_j)                                onset
    φ_s       = Σ_m w_jm f_sm,  w_jm = |Emax_jm| / Σ_m' |Emax_jm'|        soft primary fraction
    u_mk      = Σ_s Emax_jm f_sm o_s(t − D_mk)                           direct input on m, seen at k
              + Σ_{s<s'} γ_jj' φ_s φ_s' o_s o_s' (Emax_jm + Emax_j'm)     pairs, low rank γ = U Uᵀ
              + δ_jj'j'' φ_s φ_s' φ_s'' o_s o_s' o_s'' Σ Emax_·m          triplets, δ = Σ_r Π_i V_ir
    z_k       = b_ck + g_c · Σ_m (I + A)_mk u_mk                          propagation

``A`` (K×K, zero diagonal) is the learned total program → program path
weight, ``D`` (K×K, zero diagonal) its delays in hours, ``g_c`` a cell-line
response gain (line 0 fixed at 1) and ``δ_c`` a cell-line EC50 shift (line 0
fixed at 0). This is the simulator's operator grammar, learned from data.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.data import QueryFeatures

LN10 = math.log(10.0)
#: Raw Hill parameter giving a slope of 1.5 (slope = 0.3 + 5.7 · sigmoid(raw)).
HILL_RAW0 = math.log(1.2 / 4.5)


def slot_pairs(n_slots: int) -> list[tuple[int, int]]:
    """The slot pairs ``(a, b)``, ``a < b``, in the order of ``slot_parameters()["gamma"]``."""
    return [(a, b) for a in range(n_slots) for b in range(a + 1, n_slots)]


class InterventionOperator(nn.Module):
    """Per-target Hill parameters, onset, interactions, context and propagator.

    Args:
        n_targets: ``T``.
        n_programs: ``K``.
        n_cell_lines: Number of cell lines.
        ec50_init: ``(T,)`` initial log10 EC50 per target (middle of its dose range).
        rank: Rank of the pairwise and three-way interaction embeddings.
        propagate: Learn the program propagator ``A`` (else ``A = 0``).
        generator: Source of the random initialisation.

    """

    def __init__(
        self,
        n_targets: int,
        n_programs: int,
        n_cell_lines: int,
        ec50_init: torch.Tensor,
        *,
        rank: int = 2,
        propagate: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        T, K, g = n_targets, n_programs, generator
        self.T, self.K, self.propagate = T, K, propagate
        self.log10_ec50 = nn.Parameter(ec50_init.reshape(T, 1).float() + 0.3 * torch.randn(T, K, generator=g))
        self.hill_raw = nn.Parameter(HILL_RAW0 + 0.1 * torch.randn(T, K, generator=g))
        self.emax = nn.Parameter(0.05 * torch.randn(T, K, generator=g))
        self.log_tau = nn.Parameter(math.log(3.0) + 0.2 * torch.randn(T, generator=g))
        self.inter_u = nn.Parameter(0.05 * torch.randn(T, rank, generator=g))
        self.triple_v = nn.Parameter(0.05 * torch.randn(T, rank, generator=g))
        self.baseline = nn.Parameter(torch.zeros(n_cell_lines, K))
        self.ec50_shift_raw = nn.Parameter(torch.zeros(max(n_cell_lines - 1, 0)))
        self.log_gain_raw = nn.Parameter(torch.zeros(max(n_cell_lines - 1, 0)))
        self.prop = nn.Parameter(torch.zeros(K, K))
        self.delay_raw = nn.Parameter(torch.full((K, K), math.log(math.expm1(2.0))))

    # -------------------------------------------------------------- readable
    @property
    def hill(self) -> torch.Tensor:
        """``(T, K)`` Hill slopes in [0.3, 6]."""
        return 0.3 + 5.7 * torch.sigmoid(self.hill_raw)

    @property
    def tau_h(self) -> torch.Tensor:
        """``(T,)`` onset time constants, hours."""
        return self.log_tau.clamp(-3.0, 5.0).exp()

    @property
    def ec50_shift(self) -> torch.Tensor:
        """``(L,)`` log10 EC50 shift per cell line (line 0 is 0)."""
        return torch.cat([torch.zeros(1), self.ec50_shift_raw])

    @property
    def gain(self) -> torch.Tensor:
        """``(L,)`` response gain per cell line (line 0 is 1)."""
        return torch.cat([torch.zeros(1), self.log_gain_raw]).exp()

    @property
    def interactions(self) -> torch.Tensor:
        """``(T, T)`` symmetric pairwise interaction γ (zero diagonal)."""
        g = self.inter_u @ self.inter_u.T
        return g - torch.diag(torch.diagonal(g))

    @property
    def propagator(self) -> torch.Tensor:
        """``(K, K)`` total path weights ``I + A``."""
        eye = torch.eye(self.K)
        if not self.propagate:
            return eye
        return eye + self.prop * (1.0 - eye)

    @property
    def delay_h(self) -> torch.Tensor:
        """``(K, K)`` propagation delays, hours (0 on the diagonal)."""
        return nn.functional.softplus(self.delay_raw) * (1.0 - torch.eye(self.K))

    # ---------------------------------------------------------------- latent
    def _pad(self, p: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Append one row for the empty-slot index ``T``."""
        return torch.cat([p, torch.full((1, *p.shape[1:]), fill, dtype=p.dtype)], 0)

    def slot_parameters(self, f: QueryFeatures) -> dict[str, torch.Tensor]:
        """Each slot's intervention parameters, gathered from its target.

        ``log10_ec50`` (with the cell-line shift), ``hill``, ``emax`` ``(n, S, K)``, ``tau_h`` ``(n, S)`` and
        ``gamma`` ``(n, S(S−1)/2)``, the pairwise interaction of each slot pair (:func:`slot_pairs` order);
        empty slots get Emax 0.

        :meth:`inputs` reads only these (and γ, the propagator), so derivatives of the latent with respect to
        them are derivatives with respect to the targets' own parameters (:mod:`acquisition.fisher`).
        """
        tgt = f.target
        valid = (tgt < self.T).to(f.log10_dose.dtype)  # (n, S)
        gam = nn.functional.pad(self.interactions, (0, 1, 0, 1))
        pairs = slot_pairs(tgt.shape[1])
        return {
            "log10_ec50": self._pad(self.log10_ec50)[tgt] + self.ec50_shift[f.cell_line][:, None, None],
            "hill": self._pad(self.hill, 1.0)[tgt],
            "emax": self._pad(self.emax)[tgt] * valid[..., None],
            "tau_h": self._pad(self.tau_h, 1.0)[tgt],
            "gamma": torch.stack([gam[tgt[:, a], tgt[:, b]] for a, b in pairs], 1)
            if pairs
            else torch.zeros(len(tgt), 0),
        }

    def inputs(self, f: QueryFeatures, slots: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``(n, K, K)`` inputs ``u_mk`` (source program m as seen at k), before gain and propagation.

        Args:
            f: ``n`` conditions.
            slots: :meth:`slot_parameters` of ``f`` (default: gathered here).
        """
        tgt = f.target
        p = self.slot_parameters(f) if slots is None else slots
        ec50, hill, emax, tau = p["log10_ec50"], p["hill"], p["emax"], p["tau_h"]
        frac = torch.sigmoid(hill * LN10 * (f.log10_dose[..., None] - ec50))
        delay = self.delay_h if self.propagate else torch.zeros(self.K, self.K)
        lag = (f.time_h[:, None, None] - delay).clamp_min(0.0)  # (n, K, K)
        onset = 1.0 - torch.exp(-lag[:, None] / tau[..., None, None])  # (n, S, K, K)
        u = ((emax * frac)[..., None] * onset).sum(1)
        S = tgt.shape[1]
        if S >= 2:
            w = emax.abs() / emax.abs().sum(-1, keepdim=True).clamp_min(1e-6)
            phi = (w * frac).sum(-1)[..., None, None] * onset  # (n, S, K, K)
            for i, (a, b) in enumerate(slot_pairs(S)):
                gab = p["gamma"][:, i][:, None, None]
                u = u + gab * phi[:, a] * phi[:, b] * (emax[:, a] + emax[:, b])[..., None]
            if S >= 3:
                v = self._pad(self.triple_v)[tgt]  # (n, 3, r)
                dlt = v.prod(1).sum(-1)[:, None, None]
                u = u + dlt * phi[:, 0] * phi[:, 1] * phi[:, 2] * emax[:, :3].sum(1)[..., None]
        return u

    def forward(self, f: QueryFeatures, slots: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Latent program activities.

        Args:
            f: ``n`` conditions.
            slots: :meth:`slot_parameters` of ``f`` (default: gathered here).

        Returns:
            ``(n, K)`` latent state ``z``.

        """
        u = self.inputs(f, slots)
        dz = (u * self.propagator).sum(1)
        return self.baseline[f.cell_line] + self.gain[f.cell_line][:, None] * dz

    def acyclicity(self) -> torch.Tensor:
        """NOTEARS ``tr(exp(A ∘ A)) − K``: zero iff the learned program graph has no cycle."""
        if not self.propagate:
            return torch.zeros(())
        a = self.prop * (1.0 - torch.eye(self.K))
        return torch.linalg.matrix_exp(a * a).diagonal().sum() - self.K

    def penalty(self) -> dict[str, torch.Tensor]:
        """Weak priors (negative log prior up to constants, unscaled)."""
        return {
            "emax_l1": self.emax.abs().sum(),
            "prop_l1": (self.prop * (1.0 - torch.eye(self.K))).abs().sum() if self.propagate else torch.zeros(()),
            "acyclic": self.acyclicity(),
            "hill": ((self.hill_raw - HILL_RAW0) ** 2).sum(),
            "interaction": (self.inter_u**2).sum() + (self.triple_v**2).sum(),
            "context": (self.ec50_shift_raw**2).sum() + (self.log_gain_raw**2).sum(),
        }
