"""The CSL ensemble: ``M`` networks from different seeds and bootstrap resamples.

Registered as ``"csl"``. The members are fitted as one batched computation
in the calling process (:func:`models.ensemble_fit.fit_members`), or, with
``batched=False``, through ``map_fn(fit_member, jobs)``
(:func:`models.fitting.fit_member` is module level and picklable, so a
Ray-backed map works); a second ``fit`` warm-starts every member from its
previous parameters. Member 0 fits all specimens, members 1.. a bootstrap
resample (a new one every round).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields

import numpy as np
import torch

from experiment_design import DesignSpace, MeasurementBatch, Query
from models.base import PROGRAMS, Prediction
from models.data import QueryFeatures, WellData, build_well_data, features_from_queries
from models.ensemble_fit import fit_members
from models.fitting import FitConfig, FitJob, fit_member, network_from_state
from models.modules.network import CSLNetwork
from models.registry import register

#: Conditions evaluated at once in :meth:`CSLEnsemble.predict_features`.
PREDICT_CHUNK = 2048


@register("csl")
class CSLEnsemble:
    """Ensemble of CSL networks.

    Args:
        space: The design space.
        n_members: Ensemble size ``M``.
        seed: Base seed (member ``i`` of fit ``r`` uses ``[seed, i, r]``).
        config: Fit settings; keyword overrides of :class:`FitConfig` fields
            are accepted too (``CSLEnsemble(space, max_steps=300)``).

    """

    def __init__(
        self, space: DesignSpace, n_members: int = 5, seed: int = 0, config: FitConfig | None = None, **overrides
    ) -> None:
        if n_members < 1:
            raise ValueError(f"CSLEnsemble: n_members must be >= 1, got {n_members}")
        base = config or FitConfig()
        self.config = FitConfig(**{**base.to_dict(), **overrides})
        self.space = space
        self.n_members = int(n_members)
        self.seed = int(seed)
        self.n_fits = 0
        self.states: list[dict] | None = None
        self.data: WellData | None = None
        self._nets: list[CSLNetwork] | None = None

    @classmethod
    def option_names(cls) -> set[str]:
        """The options a run may give this model (``model_options``): the :class:`FitConfig` fields."""
        return {f.name for f in fields(FitConfig)}

    # ---------------------------------------------------------------- fitting
    def fit(self, data: MeasurementBatch | WellData, map_fn: Callable = map) -> dict:
        """Fit every member on all data so far, warm-starting from the last fit.

        Args:
            data: The concatenated ledger (or already aggregated specimens).
            map_fn: ``map``-like callable running the member fits when ``config.batched`` is off
                (a batched fit is one computation in this process).

        Returns:
            ``{"members": [per-member summary], "seconds_max": float}``.

        """
        wd = data if isinstance(data, WellData) else build_well_data(self.space, data)
        jobs = [
            FitJob(
                self.space,
                wd,
                self.config,
                seed=int(np.random.SeedSequence([self.seed, i, self.n_fits]).generate_state(1)[0]),
                member=i,
                state=self.states[i] if self.states is not None else None,
            )
            for i in range(self.n_members)
        ]
        results = fit_members(jobs) if self.config.batched else list(map_fn(fit_member, jobs))
        self.states = [r["state"] for r in results]
        self.data = wd
        self.n_fits += 1
        self._nets = None
        summaries = [r["summary"] for r in results]
        return {"members": summaries, "seconds_max": max(s["seconds"] for s in summaries)}

    @property
    def networks(self) -> list[CSLNetwork]:
        """The fitted member networks (eval mode).

        Raises:
            RuntimeError: Before the first fit.

        """
        if self.states is None:
            raise RuntimeError("CSLEnsemble: call fit() (or load_state_dict) before predicting")
        if self._nets is None:
            self._nets = [network_from_state(self.space, s, self.config) for s in self.states]
        return self._nets

    # ------------------------------------------------------------- predicting
    def predict_features(
        self, f: QueryFeatures, readouts: Sequence[str] | None = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Member means ``(M, n, F)`` and aleatoric variances ``(M, n, F)`` per readout (torch, no grad)."""
        names = tuple(readouts) if readouts is not None else None
        out: dict[str, list] = {}
        n = len(f)
        with torch.no_grad():
            for net in self.networks:
                chunks: dict[str, list] = {}
                for lo in range(0, max(n, 1), PREDICT_CHUNK):  # bounded memory for 10^4+ candidates
                    part = f.take(slice(lo, lo + PREDICT_CHUNK))
                    for k, mv in net.readouts(part, names).items():
                        if names is None or k in names:
                            chunks.setdefault(k, []).append(mv)
                for k, mvs in chunks.items():
                    out.setdefault(k, []).append((torch.cat([m for m, _ in mvs]), torch.cat([v for _, v in mvs])))
        return {k: (torch.stack([m for m, _ in ms]), torch.stack([v for _, v in ms])) for k, ms in out.items()}

    def predict(self, queries: Sequence[Query], readouts: Sequence[str] | None = None) -> Prediction:
        """Predict readouts with epistemic and aleatoric uncertainty.

        Args:
            queries: ``n`` conditions (assay is ignored: every decoded modality is predicted).
            readouts: Restrict to these readouts (e.g. ``("programs",)`` for
                10^4 candidates); default: programs and every decoded modality.

        Returns:
            :class:`Prediction` with ``(M, n, F)`` members per readout:
            ``"programs"`` (latent activities, aleatoric 0), ``"rna"`` (log
            expected CP10k per gene), ``"adt"`` (log expected counts per cell),
            ``"morphology"`` / ``"molecular"`` (well means), ``"spatial"``;
            aleatoric variances are for ONE specimen on the same scale.

        """
        f = features_from_queries(self.space, list(queries))
        res = self.predict_features(f, readouts)
        members = {k: m.double().numpy() for k, (m, _) in res.items()}
        alea = {k: v.double().mean(0).numpy() for k, (_, v) in res.items()}
        if PROGRAMS not in members:
            raise ValueError(f"predict: readouts {readouts} must include {PROGRAMS!r} or decoded modalities")
        return Prediction(members=members, aleatoric=alea)

    @property
    def readout_names(self) -> dict[str, tuple[str, ...]]:
        """Readout → feature names (programs are ``"z0".."z{K-1}"`` or the molecular names)."""
        if self.states is None:
            return {}
        st = self.states[0]
        names = {k: tuple(v) for k, v in st["var_names"].items()}
        names[PROGRAMS] = names.get("molecular", tuple(f"z{i}" for i in range(int(st["n_programs"]))))
        return names

    # -------------------------------------------------------------- operators
    def operator_parameters(self) -> dict[str, np.ndarray]:
        """Learned operator parameters per member.

        Returns:
            ``log10_ec50``, ``hill``, ``emax`` ``(M, T, K)``; ``tau_h`` ``(M, T)``;
            ``interactions`` ``(M, T, T)``; ``propagator`` ``(M, K, K)``.

        """
        out: dict[str, list] = {}
        with torch.no_grad():
            for net in self.networks:
                op = net.operator
                for k, v in (
                    ("log10_ec50", op.log10_ec50),
                    ("hill", op.hill),
                    ("emax", op.emax),
                    ("tau_h", op.tau_h),
                    ("interactions", op.interactions),
                    ("propagator", op.propagator),
                ):
                    out.setdefault(k, []).append(v.double().numpy())
        return {k: np.stack(v) for k, v in out.items()}

    def laplace(self, queries: Sequence[Query], networks: Sequence | None = None) -> tuple[list, torch.Tensor, list]:
        """Laplace posteriors over the intervention parameters and the queries' information.

        See :func:`models.laplace.laplace` (the :class:`models.base.LaplaceModel` protocol).
        """
        from models.laplace import laplace

        return laplace(self, queries, networks)

    # ------------------------------------------------------------ BoTorch
    def to_botorch(self, readout: str = PROGRAMS, feature_idx: Sequence[int] | None = None):  # noqa: ANN201
        """A BoTorch ``EnsembleModel`` over the design encoding; see :mod:`models.botorch_view`."""
        from models.botorch_view import CSLBotorchModel

        return CSLBotorchModel(self, readout=readout, feature_idx=feature_idx)

    # --------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to resume (members' tensors, vocabularies, counters); picklable."""
        return {
            "config": self.config.to_dict(),
            "n_members": self.n_members,
            "seed": self.seed,
            "n_fits": self.n_fits,
            "states": self.states,
            "data": self.data,  # what the members were fitted on: posteriors built after a resume see it too
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the next ``fit`` warm-starts from it.

        Raises:
            ValueError: If the state has another number of members.

        """
        if int(state["n_members"]) != self.n_members:
            raise ValueError(f"load_state_dict: state has {state['n_members']} members, model {self.n_members}")
        self.config = FitConfig(**state["config"])
        self.seed = int(state["seed"])
        self.n_fits = int(state["n_fits"])
        self.states = state["states"]
        self.data = state.get("data")
        self._nets = None
