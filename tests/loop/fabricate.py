"""Fabricated run and study folders with known curves (until the real loop runs end to end).

A fabricated run has everything the report reads: ``config.json``,
``metrics.parquet``, ``proposals/round-NNNN.parquet`` and one status file per
round, in the layout and through the writers the loop itself uses.
Identifiability follows ``ceiling · (1 − exp(−spent / scale))`` per strategy,
plus a small seed-dependent offset, so budgets to reach are known in closed form.
"""

from __future__ import annotations

import numpy as np

from experiment_design import Context, DesignSpace, Query, Target
from loop.config import RunConfig, versions
from loop.rounds import RoundStatus, RoundStore
from loop.storage import write_json

#: strategy → (ceiling, scale in budget units, probability of buying an anchor assay)
CURVES = {"random": (0.8, 60.0, 0.2), "eig": (0.9, 30.0, 0.5)}
PARTS = ("latent", "dose_response", "interactions")


def small_space() -> DesignSpace:
    """Six targets, two contexts, the default assays (anchors included)."""
    targets = [Target(f"CMP{i:02d}", "compound") for i in range(4)]
    targets += [Target(f"KD{i:02d}", "knockdown") for i in range(2)]
    contexts = (Context("L0", "S0"), Context("L1", "S0"))
    return DesignSpace(targets=tuple(targets), contexts=contexts, time_range_h=(1.0, 48.0), max_order=2)


def ident_curve(strategy: str, seed: int, spent: np.ndarray) -> np.ndarray:
    """The known identifiability curve of a fabricated run."""
    ceiling, scale, _ = CURVES[strategy]
    return ceiling * (1 - np.exp(-spent / scale)) + 0.01 * seed


def fabricate_run(
    root,
    strategy: str,
    seed: int,
    budget: float = 100.0,
    round_budget: float = 10.0,
    risk: bool = True,
    finished: bool = True,
) -> RoundStore:
    """Write a run folder whose rounds each spend about ``round_budget``.

    Args:
        root: Run folder (created).
        strategy: A key of :data:`CURVES`.
        seed: Run seed (offsets the curve by ``0.01 · seed``).
        budget: Total budget, units.
        round_budget: Cost per round, units (queries are drawn until it is used).
        risk: Fill the risk columns (else all NaN, as before evaluation lands).
        finished: Spend the whole budget and end normally (``finished.json``); else stop after half of it,
            as an interrupted run does.
    """
    space = small_space()
    store = RoundStore(root)
    config = RunConfig(budget=budget, strategy=strategy, seed=seed, world="small", batch_size=4)
    write_json(
        store.root / "config.json",
        {
            "config": config.to_dict(),
            "space": space.to_dict(),
            "versions": versions(),
            "created": "2026-01-01T00:00:00+0000",
        },
    )
    rng = np.random.default_rng([seed, len(strategy)])
    p_anchor = CURVES[strategy][2]
    anchors = [a.name for a in space.assays if a.is_anchor]
    singles = [a.name for a in space.assays if not a.is_anchor]
    cheapest = min(space.assays, key=lambda a: a.cost)
    spent, r, stop = 0.0, 0, budget if finished else budget / 2
    while stop - spent >= cheapest.cost - 1e-9:
        queries, cost = [], 0.0
        while cost < min(round_budget, stop - spent) - 1e-9:
            pool = anchors if rng.uniform() < p_anchor else singles
            q = space.sample(1, rng, orders=[0.05, 0.7, 0.25], assays=[pool[int(rng.integers(len(pool)))]])[0]
            c = space.cost([q])
            if spent + cost + c > stop + 1e-9:  # as a loop would: fill what is left with the cheapest assay
                q, c = Query(q.perturbation, q.time_h, q.context, cheapest.name), cheapest.cost
            if spent + cost + c > stop + 1e-9:
                break
            queries.append(q)
            cost += c
        if not queries:
            break
        spent += cost
        store.write_proposal(r, queries, space)
        ident = float(ident_curve(strategy, seed, np.array([spent]))[0])
        row = {
            "round": r,
            "spent": spent,
            "n_queries": 4 * (r + 1),
            "round_queries": len(queries),
            "round_cost": cost,
            "identifiability": ident,
            **{f"ident_{p}": min(1.0, ident * (0.8 + 0.1 * i)) for i, p in enumerate(PARTS)},
            "wall_s": 0.0,
            "fit_s": 2.0 + 0.1 * r,
            "score_s": 0.3,
            "acquire_s": 0.5 + rng.uniform(),
            "measure_s": 0.2,
        }
        for i, axis in enumerate(("modality", "scale", "context", "intervention")):
            row[f"risk_{axis}"] = (1.0 + 0.2 * i) * (1 - ident) if risk else np.nan
        row["risk"] = float(np.mean([row[f"risk_{a}"] for a in ("modality", "scale", "context", "intervention")]))
        row["risk_training_controls"] = 0.9 * row["risk"]
        row["calibration_90"] = 0.85 if risk else np.nan
        row["wall_s"] = row["fit_s"] + row["score_s"] + row["acquire_s"] + row["measure_s"]
        store.write_metric_row(row)
        store.write_status(r, RoundStatus.SCORED, **{k: row[k] for k in ("acquire_s", "measure_s", "fit_s", "score_s")})
        r += 1
    if finished:
        store.mark_finished(r, spent, "budget spent")
    return store


def fabricate_study(out, strategies=("random", "eig"), seeds=(0, 1, 2), budget: float = 100.0, **kwargs) -> list:
    """Fabricate ``out/runs/<strategy>-seed<k>/`` for every strategy × seed; returns the run folders."""
    roots = []
    for s in strategies:
        for k in seeds:
            root = out / "runs" / f"{s}-seed{k}"
            fabricate_run(root, s, k, budget=budget, **kwargs)
            roots.append(root)
    return roots
