"""Fitting ensemble members as one batched computation.

The members of a :class:`~models.csl.CSLEnsemble` share their architecture
and data and differ in initialisation and bootstrap weights, so their losses
are one function of stacked parameters: ``torch.func.stack_module_state``
stacks the members' parameters along a leading ``M`` axis and
``torch.func.vmap`` evaluates :meth:`CSLNetwork.posterior_loss` for all of
them in one pass. On the small tensors of a design study (10²–10³ specimens)
a step costs about what one member's step cost, so the ensemble fits in one
process in the time a member took.

Each member keeps its own optimisation exactly as :func:`models.fitting.fit_member`
runs it: Adam is elementwise, so Adam on the stacked tensors with a learning
rate and step counter per member (:class:`StackedAdam`) is the members' own
Adam; each member has its own cosine schedule and its own early stop, and a
stopped member's parameters are frozen while the others go on. Staged cold
starts, warm starts and bootstrap resampling are those of ``fit_member``
(:func:`models.fitting.prepare_member`). Results equal the member-by-member
fits up to float rounding (tested).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from experiment_design.assays import MOLECULAR
from models.data import QueryFeatures, WellBlock, WellData
from models.fitting import FitConfig, FitJob, prepare_member
from models.modules.network import CSLNetwork

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults (FitConfig's beta1, beta2)


class _Posterior(nn.Module):
    """``forward`` = the network's :meth:`~CSLNetwork.posterior_loss` (what ``functional_call`` calls)."""

    def __init__(self, net: CSLNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, features: QueryFeatures, blocks: dict) -> tuple[torch.Tensor, dict]:
        out = self.net.posterior_loss(features, blocks)
        return out.total, out.parts


class StackedAdam:
    """Adam on a ``(M, P)`` tensor of stacked flat parameters, with per-member learning rate and step.

    Equal, member by member, to ``torch.optim.Adam(lr=lr_i)`` stepped ``t_i`` times on the columns in
    ``columns`` (no weight decay, no AMSGrad): the update is elementwise. Members not ``active`` are
    left untouched (parameters, moments and step), and so are the other columns.

    Args:
        flat: ``(M, P)`` leaf tensor.
        columns: ``(P,)`` bool, the parameters this optimiser moves.
        betas: Adam's moment decays (``torch.optim.Adam``'s ``betas``).
    """

    def __init__(self, flat: torch.Tensor, columns: torch.Tensor, betas: tuple[float, float] = BETAS) -> None:
        self.flat, self.columns, self.betas = flat, columns, betas
        self.m = torch.zeros_like(flat)
        self.v = torch.zeros_like(flat)
        self.t = torch.zeros(flat.shape[0], 1, dtype=torch.float64)

    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        """One step for the ``active`` members (``(M,)`` bool) at learning rates ``lr`` ``(M,)``."""
        on = active[:, None] & self.columns[None, :]
        self.t = self.t + active[:, None].double()
        b1, b2 = self.betas
        t = self.t.clamp_min(1.0)
        step = (lr[:, None].double() / (1.0 - b1**t)).to(self.flat.dtype)
        bc2_sqrt = (1.0 - b2**t).sqrt().to(self.flat.dtype)
        g = self.flat.grad
        with torch.no_grad():
            self.m.copy_(torch.where(on, b1 * self.m + (1.0 - b1) * g, self.m))
            self.v.copy_(torch.where(on, b2 * self.v + (1.0 - b2) * g * g, self.v))
            self.flat.copy_(torch.where(on, self.flat - step * self.m / (self.v.sqrt() / bc2_sqrt + EPS), self.flat))


def cosine_lr(base: float, t: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``CosineAnnealingLR`` (``eta_min = 0.05 · base``) at epoch ``t`` of ``total``, per member ``(M,)``."""
    eta = 0.05 * base
    return eta + (base - eta) * (1.0 + torch.cos(math.pi * t.double() / total.double().clamp_min(1.0))) / 2.0


class EnsembleFit:
    """The members of one fit, stacked: parameters, weights and the vmapped loss.

    Args:
        nets: Member networks of one architecture, calibrated.
        data: The specimens.
        weights: Per member, modality → ``(W,)`` bootstrap weights, or ``None`` (all 1).
    """

    def __init__(self, nets: Sequence[CSLNetwork], data: WellData, weights: Sequence[dict | None]) -> None:
        self.M = len(nets)
        params, self.buffers = stack_module_state([_Posterior(n) for n in nets])
        # one (M, P) leaf holds every parameter (one optimiser update, one gradient buffer)
        self.names = list(params)
        self.shapes = [tuple(params[k].shape[1:]) for k in self.names]
        sizes = [math.prod(sh) for sh in self.shapes]
        self.offsets = [0, *itertools.accumulate(sizes)]
        self.flat = torch.cat([params[k].detach().reshape(self.M, -1) for k in self.names], 1).requires_grad_(True)
        self.base = copy.deepcopy(_Posterior(nets[0])).to("meta")
        self.features = data.features
        self.blocks: dict[str, WellBlock] = {}
        self.weights: dict[str, torch.Tensor] = {}
        for name, block in data.blocks.items():
            if name not in nets[0].decoders:
                continue
            w = torch.stack(
                [
                    torch.ones(len(block.query)) if wi is None else torch.as_tensor(wi[name], dtype=torch.float32)
                    for wi in weights
                ]
            )  # (M, W)
            keep = (w > 0).any(0)  # specimens no member weighs are left out (NaN readouts included)
            if bool(keep.any()):
                self.blocks[name] = block if bool(keep.all()) else block.select(keep)
                self.weights[name] = w[:, keep]

    def losses(self, modalities: tuple[str, ...] | None = None) -> tuple[torch.Tensor, dict]:
        """``(M,)`` member losses (negative log posterior per specimen) and their ``(M,)`` parts."""
        names = [n for n in self.blocks if modalities is None or n in modalities]

        def one(params: dict, buffers: dict, w: dict) -> tuple[torch.Tensor, dict]:
            blocks = {n: (self.blocks[n], w[n]) for n in names}
            return functional_call(self.base, (params, buffers), (self.features, blocks))

        return vmap(one)(self.params(), self.buffers, {n: self.weights[n] for n in names})

    def params(self) -> dict[str, torch.Tensor]:
        """Stacked parameters ``(M, ...)``, views of :attr:`flat` (names as in ``_Posterior``)."""
        return {
            k: self.flat[:, lo:hi].reshape(self.M, *sh)
            for k, sh, lo, hi in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:], strict=True)
        }

    def columns(self, keep: Callable[[str], bool]) -> torch.Tensor:
        """``(P,)`` bool: the columns of :attr:`flat` of the parameters whose ``CSLNetwork`` name passes ``keep``."""
        out = torch.zeros(self.flat.shape[1], dtype=torch.bool)
        for k, lo, hi in zip(self.names, self.offsets[:-1], self.offsets[1:], strict=True):
            out[lo:hi] = keep(k.removeprefix("net."))
        return out

    def adam(
        self,
        columns: torch.Tensor,
        steps: torch.Tensor,
        lr: float,
        cfg: FitConfig,
        history: list[list[float]],
        modalities: tuple[str, ...] | None = None,
    ) -> None:
        """Each member's ``steps[i]`` Adam steps (cosine rate) on ``params``, early-stopped on its own plateau.

        The batched form of :func:`models.fitting._adam`: member ``i`` stops when its loss improved by
        less than ``cfg.tol`` over 25 steps (checked from step 50, every 25), and is frozen from then on.
        """
        opt = StackedAdam(self.flat, columns, (cfg.beta1, cfg.beta2))
        start = [len(h) for h in history]
        done = steps <= 0
        t = torch.zeros(self.M, dtype=torch.float64)
        total = steps.double()
        while not bool(done.all()):
            self.flat.grad = None
            loss, _ = self.losses(modalities)
            loss.sum().backward()  # member i's gradient is that of its own loss
            opt.step(cosine_lr(lr, t, total), ~done)
            values = loss.detach().tolist()
            for i in range(self.M):
                if bool(done[i]):
                    continue
                h = history[i]
                h.append(values[i])
                k = len(h) - start[i] - 1  # this member's step index in this stage
                t[i] += 1
                if k + 1 >= steps[i] or (k >= 50 and k % 25 == 0 and h[start[i] + k - 25] - h[-1] < cfg.tol):
                    done[i] = True

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s state dict (``CSLNetwork`` names)."""
        out = {**self.params(), **self.buffers}
        return {k.removeprefix("net."): v[i].detach().clone() for k, v in out.items()}


def fit_members(jobs: Sequence[FitJob]) -> list[dict]:
    """Fit the members of ``jobs`` as one batched computation (module level, picklable).

    Jobs that cannot share a batch (cold and warm starts, or another architecture) are fitted in
    separate batches.

    Returns:
        Per job, in order, what :func:`models.fitting.fit_member` returns.
    """
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    prepared = [prepare_member(j) for j in jobs]
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prepared):
        key = (p.state is None, tuple((k, tuple(v.shape)) for k, v in p.net.state_dict().items()))
        groups.setdefault(key, []).append(i)
    out: list[dict | None] = [None] * len(jobs)
    for idx in groups.values():
        for i, res in zip(idx, _fit_group([jobs[i] for i in idx], [prepared[i] for i in idx]), strict=True):
            out[i] = res
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    for r in out:
        r["summary"].update(seconds=seconds, cpu_seconds=cpu)  # one computation: its time is every member's
    return out


def _fit_group(jobs: list[FitJob], prepared: list) -> list[dict]:
    cfg = jobs[0].config
    cold = prepared[0].state is None
    fit = EnsembleFit([p.net for p in prepared], jobs[0].data, [p.weights for p in prepared])
    M = fit.M
    with torch.no_grad():
        initial = fit.losses()[0].tolist()
    history: list[list[float]] = [[] for _ in range(M)]
    full = torch.full((M,), 0, dtype=torch.long)
    if cold:
        n_stage = cfg.max_steps // 5
        if MOLECULAR in fit.blocks:
            anchor = fit.columns(lambda k: k.startswith(("operator.", f"decoders.{MOLECULAR}.")))
            fit.adam(anchor, full + n_stage, cfg.lr, cfg, history, (MOLECULAR,))
            others = fit.columns(lambda k: k.startswith("decoders.") and not k.startswith(f"decoders.{MOLECULAR}."))
            if bool(others.any()):
                fit.adam(others, full + n_stage, cfg.lr, cfg, history)
        steps = torch.tensor([cfg.max_steps - len(h) for h in history])
    else:
        steps = full + cfg.warm_steps
    fit.adam(fit.columns(lambda k: True), steps, cfg.lr if cold else cfg.warm_lr, cfg, history)
    with torch.no_grad():
        total, parts = fit.losses()
    results = []
    for i, (job, p) in enumerate(zip(jobs, prepared, strict=True)):
        summary = {
            "member": job.member,
            "steps": len(history[i]),
            "warm": not cold,
            "initial_total": initial[i],
            "total": float(total[i]),
            **{k: float(v[i]) for k, v in parts.items()},
        }
        results.append({"state": {"net": fit.member_state(i), **p.meta, "weights": p.counts}, "summary": summary})
    return results
