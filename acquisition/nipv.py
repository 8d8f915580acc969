"""``nipv``: negative integrated posterior variance (BoTorch's qNIPV) over a GP surrogate of the ensemble.

An ensemble cannot fantasise, so a GP on the design encoding stands in for
it: ``MixedSingleTaskGP`` (``SingleTaskGP`` if the encoding had no categorical
column) fitted at ``n_train`` pool candidates to the ensemble mean of the
program summary ``s(x) = Σ_k f_k(x) / √K``, with the ensemble's epistemic
variance of ``s`` as fixed observation noise (``train_Yvar``). The GP is
therefore unsure exactly where the ensemble is; new observations are
fantasised with the model's aleatoric noise divided by the number of the
assay's modalities (an anchor observes the state twice), and qNIPV picks the batch
that most lowers its posterior variance integrated over ``mc_points``
Monte Carlo points drawn from the pool. The Monte Carlo count is bounded
(default 256) and candidates are scored in chunks: BoTorch's defaults can
need tens of GB.

:class:`ClosedFormNIPV` computes the value of BoTorch's
``qNegIntegratedPosteriorVariance`` (fantasies with a given noise) in closed
form, ``−mean_z [k(z, z) − k(z, S) (K_SS + σ² I)⁻¹ k(S, z)]``
for the batch ``S`` (candidates plus pending points), from one joint
posterior covariance per chunk. BoTorch's version builds one fantasy GP per
candidate and re-evaluates the kernel for each, about 50 ms per candidate
here; this is ~1000× faster and agrees to numerical precision (tested).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.fit import fit_gpytorch_mll
from botorch.models import MixedSingleTaskGP, SingleTaskGP
from botorch.utils.transforms import t_batch_mode_transform
from gpytorch.mlls import ExactMarginalLogLikelihood

from acquisition.base import DEFAULT_TIME_LIMIT_S
from acquisition.botorch_strategy import BotorchStrategy, Pool
from acquisition.readouts import pool_rows, predict
from acquisition.registry import register
from experiment_design import DesignSpace, MeasurementBatch
from models.base import PROGRAMS

#: Smallest observation noise variance of the GP, in standardised units.
MIN_YVAR = 1e-6


class ClosedFormNIPV(AcquisitionFunction):
    """Negative integrated posterior variance after observing the batch, for a GP.

    Args:
        model: A GP with Gaussian observations (``SingleTaskGP`` family).
        mc_points: ``(m, d)`` points the variance is averaged over.
        noise_var: Observation noise variance of a fantasised point: a float,
            or ``(n_categories,)`` per value of column ``noise_dim`` of ``X``.
        noise_dim: Column of ``X`` indexing ``noise_var`` (the assay column).
        X_pending: ``(p, d)`` points already chosen.

    """

    def __init__(  # noqa: ANN001 - model: a botorch GP
        self,
        model,
        mc_points: torch.Tensor,
        noise_var: float | torch.Tensor,
        noise_dim: int | None = None,
        X_pending: torch.Tensor | None = None,
    ) -> None:
        super().__init__(model)
        self.mc_points = mc_points
        self.noise_var = torch.as_tensor(noise_var, dtype=torch.float64)
        self.noise_dim = noise_dim
        self.set_X_pending(X_pending)

    def prior_value(self) -> float:
        """Negative integrated variance before any new point."""
        with torch.no_grad():
            return -float(self.model.posterior(self.mc_points).variance.mean())

    @t_batch_mode_transform()
    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` values for ``X`` ``(b, q, d)`` jointly with the pending points."""
        return self.joint_value(X)

    def joint_value(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` values of the joint formula for encodings ``X`` ``(b, q, d)`` with the pending points."""
        b, q, d = X.shape
        P = self.X_pending if self.X_pending is not None else X.new_zeros(0, d)
        Z = self.mc_points
        joint = torch.cat([X.reshape(b * q, d), P, Z])
        cov = self.model.posterior(joint).mvn.covariance_matrix  # (N, N)
        n_x, p = b * q, P.shape[0]
        # Batch S_i = (X_i, P): indices into the joint rows.
        idx = torch.cat(
            [torch.arange(n_x).reshape(b, q), torch.arange(n_x, n_x + p).expand(b, p)], dim=-1
        )  # (b, q + p)
        z = torch.arange(n_x + p, n_x + p + Z.shape[0])
        K_SS = cov[idx.unsqueeze(-1), idx.unsqueeze(-2)]  # (b, s, s)
        K_SZ = cov[idx.unsqueeze(-1), z]  # (b, s, m)
        if self.noise_var.ndim == 0:
            noise = self.noise_var.expand(idx.shape)
        else:
            noise = self.noise_var[joint[idx, self.noise_dim].round().long()]  # (b, s)
        L = torch.linalg.cholesky(K_SS + torch.diag_embed(noise.to(cov)))
        reduction = torch.linalg.solve_triangular(L, K_SZ, upper=False).pow(2).sum(dim=-2)  # (b, m)
        return -(cov[z, z] - reduction).mean(dim=-1)


class PooledNIPV(ClosedFormNIPV):
    """:class:`ClosedFormNIPV` with the GP's pool quantities computed once.

    Over a fixed pool the posterior cross-covariances with the Monte Carlo
    points, the posterior variances and the training-data solves do not
    change between greedy steps, and conditioning on the pending points is a
    rank-``p`` update. With ``k_P`` the posterior covariance after the pending
    points ``P`` (noise ``N_P``) and ``σ_x²`` a candidate's noise,

        ``value(P ∪ {x}) = −mean_z [k_P(z, z) − k_P(z, x)² / (k_P(x, x) + σ_x²)]``,

    the same number as the joint formula (Gaussian conditioning in two steps),
    at ``O(n·p·m)`` per greedy step instead of one kernel matrix per chunk.
    Its inputs are pool positions (:func:`acquisition.readouts.pool_positions`),
    never encodings looked up by value; batches of several points use the
    joint formula on their encodings.

    Args:
        model: A ``SingleTaskGP`` / ``MixedSingleTaskGP`` in eval mode.
        mc_points: ``(m, d)`` points the variance is averaged over.
        noise_var: See :class:`ClosedFormNIPV`.
        noise_dim: See :class:`ClosedFormNIPV`.
        X_pool: ``(n, d)`` the candidate pool.

    """

    #: Inputs are pool positions ``(..., q, 1)``.
    indexed = True

    def __init__(  # noqa: ANN001 - model: a botorch GP
        self,
        model,
        mc_points: torch.Tensor,
        noise_var: float | torch.Tensor,
        noise_dim: int | None,
        X_pool: torch.Tensor,
    ) -> None:
        self._ready = False
        super().__init__(model, mc_points, noise_var, noise_dim)
        gp = model
        self.X_pool = X_pool
        tf = getattr(gp, "outcome_transform", None)
        self._s2 = float(tf.stdvs.pow(2).squeeze()) if tf is not None and hasattr(tf, "stdvs") else 1.0
        Xt = gp.train_inputs[0]
        K = gp.covar_module(Xt, Xt).to_dense() + torch.diag_embed(gp.likelihood.noise.reshape(-1))
        self._L = torch.linalg.cholesky(K)
        Zt = gp.transform_inputs(mc_points)
        self._Vz = self._solve(Zt)  # (n_train, m)
        kzz = gp.covar_module(Zt, Zt, diag=True).to_dense() - self._Vz.pow(2).sum(0)
        self._Vp, Cz, d = [], [], []
        for chunk in X_pool.split(1024):
            ct = gp.transform_inputs(chunk)
            v = self._solve(ct)
            self._Vp.append(v)
            Cz.append(gp.covar_module(ct, Zt).to_dense() - v.T @ self._Vz)
            d.append(gp.covar_module(ct, ct, diag=True).to_dense() - v.pow(2).sum(0))
        self._Vp = torch.cat(self._Vp, dim=-1)  # (n_train, n)
        self._Cz, self._d, self._kzz = torch.cat(Cz), torch.cat(d), kzz  # transformed units
        self._noise_pool = self._noise(X_pool) / self._s2
        self._ready = True
        self.set_X_pending(None)

    def _solve(self, Xt: torch.Tensor) -> torch.Tensor:
        """``L⁻¹ k(X_train, Xt)``."""
        k = self.model.covar_module(self.model.train_inputs[0], Xt).to_dense()
        return torch.linalg.solve_triangular(self._L, k, upper=False)

    def _noise(self, X: torch.Tensor) -> torch.Tensor:
        """``X.shape[:-1]`` noise variance of fantasised points at ``X`` (original units)."""
        if self.noise_var.ndim == 0:
            return self.noise_var.expand(X.shape[:-1])
        return self.noise_var[X[..., self.noise_dim].round().long()]

    def set_X_pending(self, X_pending: torch.Tensor | None = None) -> None:
        """Set the pending points (pool positions ``(p, 1)``) and condition the cached pool quantities on them."""
        if not self._ready:
            super().set_X_pending(X_pending)
            return
        rows = None if X_pending is None else pool_rows(X_pending, len(self.X_pool)).reshape(-1)
        super().set_X_pending(None if rows is None else self.X_pool[rows])  # the joint formula's encodings
        if rows is None:
            self._cz_p, self._d_p, self._kzz_p = self._Cz, self._d, self._kzz
            return
        # Posterior covariance between every pool row and the pending rows, then a rank-p update.
        Xp = self.model.transform_inputs(self.X_pool[rows])
        k_all_p = torch.cat(
            [self.model.covar_module(self.model.transform_inputs(c), Xp).to_dense() for c in self.X_pool.split(1024)]
        )  # (n, p) prior
        C_np = k_all_p - self._Vp.T @ self._Vp[:, rows]  # (n, p) posterior
        A = C_np[rows] + torch.diag_embed(self._noise_pool[rows])
        L = torch.linalg.cholesky(A)
        W = torch.linalg.solve_triangular(L, C_np.T, upper=False)  # (p, n)
        Wz = torch.linalg.solve_triangular(L, self._Cz[rows], upper=False)  # (p, m)
        self._cz_p = self._Cz - W.T @ Wz
        self._d_p = self._d - W.pow(2).sum(0)
        self._kzz_p = self._kzz - Wz.pow(2).sum(0)

    @t_batch_mode_transform()
    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(b,)`` values for pool positions ``X`` ``(b, q, 1)`` jointly with the pending points."""
        rows = pool_rows(X, len(self.X_pool))  # (b, q)
        if X.shape[-2] > 1:
            return self.joint_value(self.X_pool[rows])
        rows = rows[:, 0]
        cz, dx = self._cz_p[rows], self._d_p[rows]  # (b, m), (b,)
        reduction = cz.pow(2) / (dx + self._noise_pool[rows]).unsqueeze(-1)
        return -self._s2 * (self._kzz_p.unsqueeze(0) - reduction).mean(dim=-1)


@register("nipv")
class NIPVStrategy(BotorchStrategy):
    """Negative integrated posterior variance of a GP fitted to the ensemble.

    Args:
        time_limit_s: Wall-clock limit of one proposal, seconds.
        pool_size: Candidates drawn per proposal.
        chunk_size: Candidates scored per acquisition call.
        cost_exponent: Score = marginal gain / cost ** cost_exponent.
        n_train: Pool candidates the GP is fitted at.
        mc_points: Monte Carlo points of the integral (bounds memory).
        fit_maxiter: L-BFGS iterations of the GP fit. A fixed count keeps the
            proposal deterministic; the remaining set-up time is only a safety
            limit (a fit cut by it depends on the machine's speed).

    """

    def __init__(
        self,
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
        pool_size: int = 2000,
        chunk_size: int = 256,
        cost_exponent: float = 0.0,
        n_train: int = 256,
        mc_points: int = 256,
        fit_maxiter: int = 30,
    ) -> None:
        super().__init__(time_limit_s, pool_size, chunk_size, cost_exponent)
        if n_train < 2 or mc_points < 1:
            raise ValueError(f"NIPVStrategy: need n_train >= 2 and mc_points >= 1, got {n_train}, {mc_points}")
        self.n_train = n_train
        self.mc_points = mc_points
        self.fit_maxiter = fit_maxiter

    def fit_surrogate(
        self, model: object, space: DesignSpace, pool: Pool, rng: np.random.Generator, timeout_s: float
    ) -> tuple[SingleTaskGP, float]:
        """Fit the GP to the ensemble's program summary at ``n_train`` pool candidates.

        Returns:
            The fitted GP (eval mode) and the noise variance of a new
            observation of ``s``: the model's mean aleatoric variance of ``s``
            (``Σ_k σ_k² / K``), floored at ``MIN_YVAR`` of the variance of ``s``.

        """
        idx = np.sort(rng.choice(len(pool.queries), size=min(self.n_train, len(pool.queries)), replace=False))
        pred = predict(model, [pool.queries[i] for i in idx], (PROGRAMS,))
        members = np.asarray(pred.members[PROGRAMS], dtype=np.float64)  # (M, n, K)
        s = members.sum(axis=-1) / members.shape[-1] ** 0.5  # (M, n)
        y = torch.as_tensor(s.mean(axis=0)).unsqueeze(-1)
        yvar = s.var(axis=0, ddof=1) if s.shape[0] > 1 else np.zeros(s.shape[1])
        scale = max(float(y.var()), 1e-12)
        yvar = torch.as_tensor(np.maximum(yvar, MIN_YVAR * scale)).unsqueeze(-1)
        alea = np.broadcast_to(np.asarray(pred.aleatoric.get(PROGRAMS, 0.0), dtype=np.float64), members.shape[1:])
        noise = max(float(alea.mean()), MIN_YVAR * scale)
        X = pool.X[idx]
        cat_dims = [i for i in space.encoding.cat_dims if space.encoding.n_categories[i] > 1]
        if cat_dims:
            gp = MixedSingleTaskGP(X, y, cat_dims=cat_dims, train_Yvar=yvar)
        else:
            gp = SingleTaskGP(X, y, train_Yvar=yvar)
        with torch.enable_grad():
            fit_gpytorch_mll(
                ExactMarginalLogLikelihood(gp.likelihood, gp),
                optimizer_kwargs={"options": {"maxiter": self.fit_maxiter}, "timeout_sec": timeout_s},
            )
        return gp.eval(), noise

    def build_acqf(
        self,
        model: object,
        space: DesignSpace,
        pool: Pool,
        ledger: MeasurementBatch | None,
        rng: np.random.Generator,
        deadline: float,
    ) -> tuple[AcquisitionFunction, Pool]:
        """Closed-form NIPV over a GP surrogate fitted to the ensemble (pool positions as inputs)."""
        gp, noise = self.fit_surrogate(model, space, pool, rng, max(deadline - time.monotonic(), 0.1))
        mc = pool.X[np.sort(rng.choice(len(pool.queries), size=min(self.mc_points, len(pool.queries)), replace=False))]
        per_assay = torch.tensor([noise / len(a.modalities) for a in space.assays], dtype=torch.float64)
        return PooledNIPV(gp, mc, per_assay, space.encoding.assay_dim, pool.X), pool

    def information_offset(self, acqf: AcquisitionFunction) -> float:
        """Negative integrated variance before any new point (so gains are variance reductions)."""
        return acqf.prior_value()
