"""Small real implementations of the model protocol for acquisition tests.

:class:`BumpEnsemble` is an ensemble of ``M`` analytic members over the design
encoding. Members agree everywhere except in one region of the design space
(slot-0 dose and time both high, :meth:`BumpEnsemble.in_region`), where each
member adds its own random program shift. Modality readouts are fixed linear
maps of the programs, each with its own scale and observation noise, so a test
can make one modality informative and another not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from botorch.models.ensemble import EnsembleModel

from experiment_design import Context, DesignSpace, Query, Target
from experiment_design.assays import ADT, RNA, Assay, Scale
from models.base import PROGRAMS, Prediction

#: Region of the encoding where members disagree: slot-0 dose unit and time above this.
REGION_LOW = 0.7


def small_space(
    n_compounds: int = 4,
    n_genes: int = 2,
    max_order: int = 2,
    assays: Sequence[Assay] | None = None,
) -> DesignSpace:
    """A small design space: compounds and knockdowns, two contexts, default assays."""
    targets = [Target(f"CMP{i:02d}", "compound") for i in range(n_compounds)]
    targets += [Target(f"KD{i:02d}", "knockdown") for i in range(n_genes)]
    contexts = (Context("L0", "S0"), Context("L1", "S0"))
    kwargs = {} if assays is None else {"assays": tuple(assays)}
    return DesignSpace(targets=tuple(targets), contexts=contexts, max_order=max_order, **kwargs)


def rna_adt_space(max_order: int = 1) -> DesignSpace:
    """A space with only scRNA (cost 1) and CITE-seq (RNA + ADT, cost 2.5)."""
    assays = (
        Assay("scrna", (RNA,), Scale.CELLULAR, 1.0, (100,)),
        Assay("cite_seq", (RNA, ADT), Scale.CELLULAR, 2.5, (100, 100)),
    )
    return small_space(max_order=max_order, assays=assays)


class _BumpView(EnsembleModel):
    """BoTorch view of :class:`BumpEnsemble`: ``(batch, M, n, K)`` programs, differentiable."""

    def __init__(self, owner: BumpEnsemble) -> None:
        super().__init__()
        self.owner = owner
        self._num_outputs = owner.n_programs

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.owner.programs_members(X)


class BumpEnsemble:
    """Analytic ensemble whose disagreement sits in one region.

    Args:
        space: The design space.
        n_members: Ensemble size ``M``.
        n_programs: Number of programs ``K``.
        modalities: Modality readout → number of features; readouts are
            ``programs @ W`` with a fixed random ``W``.
        scales: Modality → multiplier of its readout (0 makes it carry no
            information).
        noise_var: Readout → aleatoric variance (default 1.0 for modalities,
            0.1 for programs).
        amplitude: Size of the members' disagreement inside the region.
        background: Size of the members' disagreement everywhere.
        synergy: Interaction of the pair CMP00 + CMP01 (slots 0 and 1 hold
            target codes 1 and 2): adds ``synergy · u0 · u1`` to every program.
        seed: Seed of the fixed member shifts and readout maps.

    """

    def __init__(
        self,
        space: DesignSpace,
        n_members: int = 6,
        n_programs: int = 4,
        modalities: dict[str, int] | None = None,
        scales: dict[str, float] | None = None,
        noise_var: dict[str, float] | None = None,
        amplitude: float = 2.0,
        background: float = 0.05,
        synergy: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.space = space
        self.n_members = n_members
        self.n_programs = n_programs
        self.modalities = dict(modalities or {})
        self.scales = {m: 1.0 for m in self.modalities} | dict(scales or {})
        self.noise_var = {PROGRAMS: 0.1} | {m: 1.0 for m in self.modalities} | dict(noise_var or {})
        self.amplitude = amplitude
        self.background = background
        self.synergy = synergy
        g = torch.Generator().manual_seed(seed)
        self.shift = torch.randn(n_members, n_programs, generator=g, dtype=torch.float64)
        self.jitter = torch.randn(n_members, n_programs, generator=g, dtype=torch.float64)
        self.maps = {
            m: torch.randn(n_programs, f, generator=g, dtype=torch.float64) / n_programs**0.5
            for m, f in self.modalities.items()
        }
        self.n_predict_calls = 0

    # ------------------------------------------------------------------ maths
    def region_weight(self, X: torch.Tensor) -> torch.Tensor:
        """``(..., n)`` smooth indicator of the disagreement region."""
        enc = self.space.encoding
        u = X[..., enc.dose_dims[0]] * (X[..., enc.target_dims[0]] > 0.5).to(X)
        t = X[..., enc.time_dim]
        return torch.sigmoid((u - REGION_LOW) / 0.02) * torch.sigmoid((t - REGION_LOW) / 0.02)

    def programs_members(self, X: torch.Tensor) -> torch.Tensor:
        """``(batch, M, n, K)`` program activities of every member at encodings ``X`` ``(batch, n, d)``."""
        enc = self.space.encoding
        k = torch.arange(self.n_programs, dtype=X.dtype)
        code = X[..., enc.target_dims[0]].unsqueeze(-1)
        u = X[..., enc.dose_dims[0]].unsqueeze(-1)
        t = X[..., enc.time_dim].unsqueeze(-1)
        base = torch.sin(k + 3.0 * u + 2.0 * t + 0.3 * code)  # (..., n, K)
        if self.synergy and enc.n_slots > 1:
            pair = (X[..., enc.target_dims[0]].round() == 1) & (X[..., enc.target_dims[1]].round() == 2)
            inter = self.synergy * pair.to(X) * X[..., enc.dose_dims[0]] * X[..., enc.dose_dims[1]]
            base = base + inter.unsqueeze(-1)
        w = self.region_weight(X).unsqueeze(-1)
        dev = self.amplitude * w.unsqueeze(-3) * self.shift[:, None, :] + self.background * self.jitter[:, None, :]
        return base.unsqueeze(-3) + dev  # (..., M, n, K)

    @staticmethod
    def in_region(space: DesignSpace, query: Query) -> bool:
        """Whether ``query`` lies in the disagreement region."""
        p = query.perturbation
        if p.is_control:
            return False
        first = p.targets[0]
        u = float(space.dose_to_unit(space.target(first).kind, p.doses[0]))
        t = (query.time_h - space.time_range_h[0]) / (space.time_range_h[1] - space.time_range_h[0])
        return u > REGION_LOW and t > REGION_LOW

    # --------------------------------------------------------------- protocol
    def fit(self, data: object, map_fn=map) -> dict:  # noqa: ANN001
        return {}

    def predict(self, queries: Sequence[Query], readouts: Sequence[str] | None = None) -> Prediction:
        self.n_predict_calls += 1
        X = self.space.encode(list(queries))
        progs = self.programs_members(X)  # (M, n, K)
        names = (
            [PROGRAMS, *self.modalities]
            if readouts is None
            else [r for r in readouts if r == PROGRAMS or r in self.modalities]
        )
        members, aleatoric = {}, {}
        for r in names:
            vals = progs if r == PROGRAMS else self.scales[r] * progs @ self.maps[r]
            members[r] = vals.numpy()
            aleatoric[r] = np.full(vals.shape[1:], self.noise_var[r])
        return Prediction(members, aleatoric)

    def to_botorch(self) -> EnsembleModel:
        return _BumpView(self)
