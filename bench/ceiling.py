"""The ceiling: the default strategy's own design criterion evaluated with the TRUE parameters.

Not a user strategy (it reads the simulator's ground truth): a locally
optimal design that shows how far any strategy could go on a world. Each
ensemble member's operator is given the true intervention parameters
(log10 EC50, Hill slope, Emax, onset τ; programs matched to the true ones by
the Hungarian algorithm on the probe set, as the identifiability index matches
them), its decoders stay as fitted, and ``cost_aware`` over ``fisher`` then
designs around those parameters: doses where the true curves are steep,
times where the true onsets move, the same pacing and blend with the readout
information as the default. The interactions γ stay as fitted (the learned
operator holds them in a low-rank form that cannot take an arbitrary truth).

:func:`ceiling_specs` plans the runs (``ceiling-seed<k>`` folders, the default
strategy's settings); :func:`run_ceiling` runs one (a picklable runner for
:func:`loop.compare.execute`). :mod:`bench.efficiency` puts them beside the
strategies and reports each strategy's share of the distance from random to
the ceiling.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch

from acquisition.cost_aware import CostAwareStrategy
from acquisition.fisher import FisherStrategy
from experiment_design import DesignSpace, GroundTruth
from loop.compare import RunSpec, plan, run_one
from loop.config import RunConfig
from models.identifiability import match_programs, probe_queries

#: Name the ceiling's runs and rows carry.
NAME = "ceiling"
#: The user strategy whose settings the ceiling runs take (and whose criterion it evaluates at the truth).
BASE = "cost_aware"


def truth_networks(model: object, space: DesignSpace, truth: GroundTruth) -> list:
    """Copies of the fitted member networks with the true intervention parameters in their operators.

    Learned programs are matched to true ones on the probe set (ensemble-mean latent, Hungarian on
    ``−|corr|``, sign from the correlation); a learned program no true one maps to gets no effect.
    """
    probe = probe_queries(space)
    perm, sign, _ = match_programs(model.predict(probe).mean("programs"), truth.latent(probe))
    idx = [space.target_index[t] for t in truth.targets]
    out = []
    for net in model.networks:
        net = copy.deepcopy(net)
        op = net.operator
        with torch.no_grad():
            op.emax.zero_()
            for k, dim in enumerate(perm):
                if dim < 0:
                    continue
                direct = np.flatnonzero(truth.emax[:, k] != 0)
                for t in direct:
                    j = idx[t]
                    op.emax[j, dim] = float(sign[k] * truth.emax[t, k])
                    if np.isfinite(truth.ec50_log10[t, k]):
                        op.log10_ec50[j, dim] = float(truth.ec50_log10[t, k])
                    if np.isfinite(truth.hill[t, k]):
                        frac = min(max((float(truth.hill[t, k]) - 0.3) / 5.7, 1e-4), 1 - 1e-4)
                        op.hill_raw[j, dim] = math.log(frac / (1.0 - frac))
            op.log_tau[idx] = torch.as_tensor(np.log(truth.tau_h), dtype=op.log_tau.dtype)
        out.append(net)
    return out


class TruthInformedFisher(FisherStrategy):
    """``fisher`` around the true intervention parameters (:func:`truth_networks`)."""

    def __init__(self, truth: GroundTruth, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.truth = truth

    def _laplace(self, model: object, queries: list) -> tuple:
        return model.laplace(queries, networks=truth_networks(model, model.space, self.truth))


def ceiling_strategy(truth: GroundTruth, time_limit_s: float) -> CostAwareStrategy:
    """The default strategy (``cost_aware`` over ``fisher``, same pacing and blend) at the truth."""
    strategy = CostAwareStrategy(time_limit_s=time_limit_s)
    fisher = strategy.base
    strategy.base = TruthInformedFisher(
        truth,
        time_limit_s=time_limit_s,
        pool_size=fisher.pool_size,
        chunk_size=fisher.chunk_size,
        readout_share=fisher.readout_share,
    )
    return strategy


def ceiling_specs(out: str | Path, seeds: int, base: RunConfig) -> list[RunSpec]:
    """The ceiling's runs ``out/runs/ceiling-seed<k>`` (the default strategy's settings, seeds paired)."""
    return [RunSpec(s.root.parent / f"{NAME}-seed{s.config['seed']}", s.config) for s in plan(out, [BASE], seeds, base)]


def use_ceiling(study: object) -> None:
    """Give an opened study the ceiling's strategy (it needs the study's simulated truth)."""
    if study.truth is None:
        raise ValueError(f"{study.root}: the ceiling needs a simulated world (oracle sim)")
    study.strategy = ceiling_strategy(study.truth, study.config.time_limit_s)


def run_ceiling(spec: RunSpec) -> dict:
    """Run or resume one ceiling run in this process (a runner for :func:`loop.compare.execute`)."""
    return run_one(spec, prepare=use_ceiling)


def run_any(spec: RunSpec) -> dict:
    """:func:`run_ceiling` for a ceiling run, :func:`loop.compare.run_one` for any other (one ``execute``)."""
    return run_ceiling(spec) if spec.name.startswith(f"{NAME}-") else run_one(spec)
