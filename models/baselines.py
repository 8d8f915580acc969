"""Baselines every CSL model must beat: mean of controls, additive, linear.

Simple models often match far bigger ones on perturbation prediction
(Ahlmann-Eltze, Huber & Anders, Nat Methods 2025), so cslab ranks every model
against these three, run through the same loop, strategies and scores. Each
speaks the model protocol (:class:`models.base.Model`) and works on the
function-space readouts that evaluation compares (:func:`models.readouts.observed_readout`:
log CP10k for ``rna`` / ``spatial``, log counts per cell for ``adt``, well
means for ``morphology`` / ``molecular``), one row per measured condition:

* ``mean`` (:class:`MeanOfControls`): the mean of the controls of the same
  cell line and site, else of the cell line, else of all controls: the risk's
  own reference, so its aggregate risk is about 1 by construction.
* ``additive`` (:class:`AdditiveModel`): the control mean plus, per target,
  its single-perturbation effect (observed minus its context's control mean),
  smoothed over dose and time by a Gaussian kernel with a zero effect at the
  lowest dose; a combination is the sum of its targets' effects.
* ``linear`` (:class:`LinearModel`): ridge regression (λ = 1) of the readout
  on perturbation features, all in [0, 1] (context one-hot, time, and per
  target its unit dose, squared dose and dose × time), in the spirit of the
  linear baseline of Ahlmann-Eltze et al.

Uncertainty comes from a bootstrap over conditions (member 0 fits every
condition, members 1.. a resample, new every fit), and the aleatoric variance
of one specimen from member 0's residuals. The ``programs`` readout is the
projection on the top principal components of the first modality present
(``rna``, ``spatial``, ``adt``, ``molecular``, ``morphology``). Baselines have
no operator parameters, so identifiability scores only what they have (the
latent parts against a simulator's truth) and leaves the rest NaN
(:func:`models.identifiability.score`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from experiment_design import DesignSpace, MeasurementBatch, Query, keys
from experiment_design.assays import ADT, MOLECULAR, MORPHOLOGY, RNA, SPATIAL
from experiment_design.splits import queries_of_obs
from models.base import PROGRAMS, Prediction
from models.registry import register

#: Which modality gives the ``programs`` readout: the first of these in the training data.
PROGRAM_SOURCES = (RNA, SPATIAL, ADT, MOLECULAR, MORPHOLOGY)
#: Floor of a per-specimen aleatoric variance.
VARIANCE_FLOOR = 1e-6


@dataclass
class Table:
    """One modality of the training data, one row per condition.

    Attributes:
        queries: ``n`` conditions (their first query).
        Y: ``(n, F)`` readout, mean over the condition's specimens.
        n_specimens: ``(n,)`` specimens averaged.
    """

    queries: list[Query]
    Y: np.ndarray
    n_specimens: np.ndarray

    def take(self, rows: np.ndarray) -> Table:
        """The rows ``rows`` (repeats allowed: a bootstrap resample)."""
        return Table([self.queries[i] for i in rows], self.Y[rows], self.n_specimens[rows])


def tables(data: MeasurementBatch) -> dict[str, tuple[Table, tuple[str, ...]]]:
    """Modality → (its :class:`Table`, feature names) of a measurement batch."""
    from models.readouts import observed_readout

    out = {}
    for m, mod in data.modalities.items():
        if not len(mod.obs):
            continue
        o = observed_readout(data, m)
        first = mod.obs.drop_duplicates(keys.QUERY_ID)
        by_id = dict(zip(first[keys.QUERY_ID].astype(str), queries_of_obs(first), strict=True))
        out[m] = (Table([by_id[q] for q in o.query_ids], o.values, o.n_specimens), tuple(o.var_names))
    return out


def control_means(t: Table) -> dict:
    """Control means by ``(cell line, site)``, by cell line and overall (``None``); all rows without controls."""
    rows = [i for i, q in enumerate(t.queries) if q.perturbation.is_control] or range(len(t.queries))
    groups: dict = {}
    for i in rows:
        c = t.queries[i].context
        for key in ((c.cell_line, c.site), c.cell_line, None):
            groups.setdefault(key, []).append(i)
    return {key: t.Y[idx].mean(axis=0) for key, idx in groups.items()}


def control_mean(means: dict, q: Query) -> np.ndarray:
    """``(F,)`` the control mean of ``q``'s context (cell line and site, else cell line, else all)."""
    c = q.context
    return means.get((c.cell_line, c.site), means.get(c.cell_line, means[None]))


class BaselineModel:
    """A bootstrap ensemble of one closed-form predictor per modality (subclasses give the predictor).

    Args:
        space: The design space.
        n_members: Ensemble size ``M`` (member 0 fits every condition, the others a bootstrap resample).
        seed: Base seed (member ``i`` of fit ``r`` resamples with ``[seed, i, r]``).
        n_programs: Principal components in the ``programs`` readout.
    """

    def __init__(self, space: DesignSpace, n_members: int = 5, seed: int = 0, n_programs: int = 8) -> None:
        if n_members < 1 or n_programs < 1:
            raise ValueError(
                f"{type(self).__name__}: n_members and n_programs must be >= 1, got {n_members} and {n_programs}"
            )
        self.space, self.n_members, self.seed, self.n_programs = space, int(n_members), int(seed), int(n_programs)
        self.n_fits = 0
        self.fitted: dict | None = None

    # ------------------------------------------------------------- subclass
    def fit_table(self, t: Table) -> object:
        """Parameters of the predictor fitted on ``t``."""
        raise NotImplementedError

    def predict_table(self, params: object, queries: Sequence[Query]) -> np.ndarray:
        """``(n, F)`` predictions of ``queries`` from :meth:`fit_table`'s parameters."""
        raise NotImplementedError

    # ------------------------------------------------------------- protocol
    def fit(self, data: MeasurementBatch, map_fn: Callable = map) -> dict:  # noqa: ARG002 - closed form, no fan-out
        """Fit every member on all data so far (closed form: nothing to warm-start).

        Returns:
            ``{"members": [{"seconds": float}], "seconds_max": float}``.

        Raises:
            ValueError: If the batch has no measurements.
        """
        t0 = time.perf_counter()
        data_tables = tables(data)
        if not data_tables:
            raise ValueError(f"{type(self).__name__}.fit: the batch has no measurements")
        members = []
        for i in range(self.n_members):
            rng = np.random.default_rng([self.seed, i, self.n_fits])
            params = {}
            for m, (t, _) in data_tables.items():
                n = len(t.queries)
                rows = np.arange(n) if i == 0 else rng.integers(n, size=n)
                params[m] = self.fit_table(t.take(rows))
            members.append(params)
        aleatoric, basis = {}, None
        for m, (t, _) in data_tables.items():
            resid = t.Y - self.predict_table(members[0][m], t.queries)
            aleatoric[m] = np.maximum((t.n_specimens[:, None] * resid**2).mean(axis=0), VARIANCE_FLOOR)
        main = next(m for m in (*PROGRAM_SOURCES, *data_tables) if m in data_tables)
        Y = data_tables[main][0].Y
        center = Y.mean(axis=0)
        k = max(1, min(self.n_programs, *Y.shape))
        basis = np.linalg.svd(Y - center, full_matrices=False)[2][:k].T if len(Y) > 1 else np.eye(Y.shape[1])[:, :k]
        self.fitted = {
            "members": members,
            "aleatoric": aleatoric,
            "main": main,
            "center": center,
            "basis": basis,
            "var_names": {m: names for m, (_, names) in data_tables.items()},
        }
        self.n_fits += 1
        seconds = time.perf_counter() - t0
        return {"members": [{"seconds": seconds}] * self.n_members, "seconds_max": seconds}

    def predict(self, queries: Sequence[Query], readouts: Sequence[str] | None = None) -> Prediction:
        """Member predictions ``(M, n, F)`` of ``programs`` and every modality seen in training.

        Args:
            queries: ``n`` conditions (the assay is ignored).
            readouts: Restrict to these readouts (``programs`` is always included).

        Raises:
            RuntimeError: Before the first fit.
        """
        if self.fitted is None:
            raise RuntimeError(f"{type(self).__name__}: call fit() (or load_state_dict) before predicting")
        f = self.fitted
        queries = list(queries)
        names = set(f["aleatoric"]) if readouts is None else set(readouts) & set(f["aleatoric"])
        members = {m: np.stack([self.predict_table(p[m], queries) for p in f["members"]]) for m in names | {f["main"]}}
        members[PROGRAMS] = (members[f["main"]] - f["center"]) @ f["basis"]
        if f["main"] not in names:
            del members[f["main"]]
        aleatoric = {m: np.broadcast_to(f["aleatoric"][m], (len(queries), len(f["aleatoric"][m]))) for m in names}
        aleatoric[PROGRAMS] = np.zeros((len(queries), f["basis"].shape[1]))
        return Prediction(members=members, aleatoric=aleatoric)

    @property
    def readout_names(self) -> dict[str, tuple[str, ...]]:
        """Readout → feature names (programs are ``"pc0".."pc{K-1}"``)."""
        if self.fitted is None:
            return {}
        return {**self.fitted["var_names"], PROGRAMS: tuple(f"pc{i}" for i in range(self.fitted["basis"].shape[1]))}

    def to_botorch(self, readout: str = PROGRAMS, feature_idx: Sequence[int] | None = None):  # noqa: ANN201
        """A BoTorch ``EnsembleModel`` over the design encoding (not differentiable: pool acquisition only)."""
        from models.botorch_view import PredictionView

        return PredictionView(self, readout=readout, feature_idx=feature_idx)

    def state_dict(self) -> dict:
        """Everything needed to resume (fitted parameters, counters); picklable."""
        return {"n_members": self.n_members, "seed": self.seed, "n_fits": self.n_fits, "fitted": self.fitted}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: If the state has another number of members.
        """
        if int(state["n_members"]) != self.n_members:
            raise ValueError(f"load_state_dict: state has {state['n_members']} members, model {self.n_members}")
        self.seed, self.n_fits, self.fitted = int(state["seed"]), int(state["n_fits"]), state["fitted"]

    # --------------------------------------------------------------- helpers
    def unit_dose(self, name: str, dose: float) -> float:
        """A target's dose on the unit scale of the design space (log10 for compounds)."""
        kind = self.space.targets[self.space.target_index[name]].kind
        return float(np.clip(self.space.dose_to_unit(kind, dose), 0.0, 1.0))

    def unit_time(self, time_h: float) -> float:
        """Time on the unit scale of the design space (0 when the range is one point)."""
        lo, hi = self.space.time_range_h
        return (time_h - lo) / (hi - lo) if hi > lo else 0.0


@register("mean")
class MeanOfControls(BaselineModel):
    """The mean of the controls of the query's context (module docstring)."""

    def fit_table(self, t: Table) -> dict:
        """Control means by context."""
        return control_means(t)

    def predict_table(self, params: dict, queries: Sequence[Query]) -> np.ndarray:
        """``(n, F)`` the control mean of each query's context."""
        return np.stack([control_mean(params, q) for q in queries]) if queries else np.zeros((0, len(params[None])))


@register("additive")
class AdditiveModel(BaselineModel):
    """Control mean plus the sum of single-perturbation effects, smoothed over dose and time.

    Args:
        space: The design space.
        n_members: Ensemble size.
        seed: Base seed.
        n_programs: Principal components in the ``programs`` readout.
        bandwidth: Gaussian kernel width on the unit dose and time scales.
    """

    def __init__(
        self, space: DesignSpace, n_members: int = 5, seed: int = 0, n_programs: int = 8, bandwidth: float = 0.15
    ) -> None:
        super().__init__(space, n_members, seed, n_programs)
        if not bandwidth > 0:
            raise ValueError(f"AdditiveModel: bandwidth must be positive, got {bandwidth}")
        self.bandwidth = float(bandwidth)

    def fit_table(self, t: Table) -> dict:
        """Control means and, per target, its singles' unit dose, unit time and effect."""
        means = control_means(t)
        singles: dict[str, list] = {}
        for q, y in zip(t.queries, t.Y, strict=True):
            if q.perturbation.order == 1:
                name = q.perturbation.targets[0]
                u, tau = self.unit_dose(name, q.perturbation.doses[0]), self.unit_time(q.time_h)
                singles.setdefault(name, []).append((u, tau, y - control_mean(means, q)))
        return {
            "means": means,
            "singles": {
                k: (np.array([u for u, _, _ in v]), np.array([s for _, s, _ in v]), np.stack([e for _, _, e in v]))
                for k, v in singles.items()
            },
        }

    def effect(self, params: dict, name: str, u: float, tau: float) -> np.ndarray | float:
        """``(F,)`` the kernel-smoothed effect of target ``name`` at unit dose ``u`` and unit time ``tau``.

        The lowest dose counts as one observation of no effect, so an effect fades towards it.
        """
        if name not in params["singles"]:
            return 0.0
        us, taus, E = params["singles"][name]
        k = np.exp(-((us - u) ** 2 + (taus - tau) ** 2) / (2 * self.bandwidth**2))
        k0 = math.exp(-(u**2) / (2 * self.bandwidth**2))
        return (k @ E) / (k.sum() + k0 + 1e-12)

    def predict_table(self, params: dict, queries: Sequence[Query]) -> np.ndarray:
        """``(n, F)`` control mean plus the sum of the targets' effects."""
        F = len(params["means"][None])
        out = np.empty((len(queries), F))
        for i, q in enumerate(queries):
            tau = self.unit_time(q.time_h)
            out[i] = control_mean(params["means"], q) + sum(
                (
                    self.effect(params, n, self.unit_dose(n, d), tau)
                    for n, d in zip(q.perturbation.targets, q.perturbation.doses, strict=True)
                ),
                np.zeros(F),
            )
        return out


@register("linear")
class LinearModel(BaselineModel):
    """Ridge regression of the readout on perturbation features (module docstring).

    Args:
        space: The design space.
        n_members: Ensemble size.
        seed: Base seed.
        n_programs: Principal components in the ``programs`` readout.
        ridge: Penalty λ on the feature weights (the intercept is not penalised).
    """

    def __init__(
        self, space: DesignSpace, n_members: int = 5, seed: int = 0, n_programs: int = 8, ridge: float = 1.0
    ) -> None:
        super().__init__(space, n_members, seed, n_programs)
        if not ridge > 0:
            raise ValueError(f"LinearModel: ridge must be positive, got {ridge}")
        self.ridge = float(ridge)

    def features(self, queries: Sequence[Query]) -> np.ndarray:
        """``(n, C + 2 + 3T)`` context one-hot, time, time², and per target u, u², u·time."""
        sp, C, T = self.space, len(self.space.contexts), len(self.space.targets)
        X = np.zeros((len(queries), C + 2 + 3 * T))
        for i, q in enumerate(queries):
            tau = self.unit_time(q.time_h)
            X[i, sp.context_index[q.context]] = 1.0
            X[i, C : C + 2] = tau, tau**2
            for name, dose in zip(q.perturbation.targets, q.perturbation.doses, strict=True):
                u, j = self.unit_dose(name, dose), C + 2 + 3 * sp.target_index[name]
                X[i, j : j + 3] = u, u**2, u * tau
        return X

    def fit_table(self, t: Table) -> dict:
        """Intercept and weights, weighted by specimens.

        The features all lie in [0, 1] and are only centred, not scaled to unit variance: a
        feature seen in one or two conditions would otherwise be scaled up and a query far
        from them extrapolated without bound.
        """
        X, w = self.features(t.queries), t.n_specimens / t.n_specimens.mean()
        mu_x, mu_y = w @ X / w.sum(), w @ t.Y / w.sum()
        Z = X - mu_x
        B = np.linalg.solve(Z.T @ (w[:, None] * Z) + self.ridge * np.eye(Z.shape[1]), Z.T @ (w[:, None] * (t.Y - mu_y)))
        return {"mu_x": mu_x, "mu_y": mu_y, "B": B}

    def predict_table(self, params: dict, queries: Sequence[Query]) -> np.ndarray:
        """``(n, F)`` the ridge predictions."""
        return params["mu_y"] + (self.features(queries) - params["mu_x"]) @ params["B"]
