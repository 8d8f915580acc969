"""The comparison's numbers: curves over seeds, budget to reach random's level, paired tests.

Seeds are paired: seed ``k`` of every strategy runs on the same simulated
world (the world, the model and the strategy all draw from the run's seed),
so each strategy is compared to ``random`` seed by seed.

The headline: for seed ``k`` the *target* is the identifiability that
``random`` has after spending its whole budget (its last metrics row). A
strategy's *budget to reach* it is the first point on the spent axis where
its curve attains the target, linearly interpolated between the two rounds
that bracket the crossing. ``random`` gets the same treatment (for a curve
that only rises this is its whole budget). A curve that never attains the
target "never reaches": that is kept as ``NaN`` and reported in words, never
as a number. The ratio to random per seed is ``need_strategy / need_random``;
strategies are summarised by the geometric mean of the per-seed ratios with a
percentile bootstrap over seeds, and a paired Wilcoxon signed-rank test on
the log ratios (a "never reaches" seed counts as worse than every seed that
reaches, which is all a rank test needs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

REFERENCE = "random"


def budget_to_reach(spent: np.ndarray, value: np.ndarray, target: float) -> float:
    """First budget at which a curve reaches ``target``.

    Args:
        spent: ``(n,)`` cumulative cost of each round, budget units, ascending.
        value: ``(n,)`` the metric after each round.
        target: Level to reach.

    Returns:
        Budget units, linearly interpolated between the bracketing rounds;
        ``NaN`` when the curve never reaches ``target``.

    Raises:
        ValueError: If the arrays differ in length or ``spent`` decreases.
    """
    spent, value = np.asarray(spent, float), np.asarray(value, float)
    if spent.shape != value.shape or spent.ndim != 1:
        raise ValueError(f"budget_to_reach: spent {spent.shape} and value {value.shape} must be equal 1-D shapes")
    if np.any(np.diff(spent) < 0):
        raise ValueError("budget_to_reach: spent must be non-decreasing (rows sorted by round)")
    hit = np.flatnonzero(value >= target - 1e-12)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0 or value[i] == value[i - 1]:
        return float(spent[i])
    frac = (target - value[i - 1]) / (value[i] - value[i - 1])
    return float(spent[i - 1] + np.clip(frac, 0.0, 1.0) * (spent[i] - spent[i - 1]))


def needs_table(results: pd.DataFrame, column: str = "identifiability", reference: str = REFERENCE) -> pd.DataFrame:
    """Budget each (strategy, seed) needs to reach the reference's final level.

    Args:
        results: Rows of ``results.parquet`` (``strategy``, ``seed``, ``round``,
            ``spent``, ``column``).
        column: Metric to compare.
        reference: Strategy whose whole-budget level is the target.

    Returns:
        One row per (strategy, seed) that has a reference seed: ``target``,
        ``need`` (NaN = never reaches), ``final`` (the strategy's own final
        level), ``spent_total``, ``ratio`` (``need / need_reference``, NaN if
        never reaches).

    Raises:
        ValueError: If ``reference`` is not among the strategies.
    """
    if reference not in set(results["strategy"]):
        raise ValueError(f"needs_table: reference strategy {reference!r} not in {sorted(set(results['strategy']))}")
    rows = []
    for (strategy, seed), df in results.sort_values("round").groupby(["strategy", "seed"], sort=True):
        rows.append(
            {
                "strategy": strategy,
                "seed": int(seed),
                "spent": df["spent"].to_numpy(float),
                "value": df[column].to_numpy(float),
            }
        )
    targets = {r["seed"]: r["value"][-1] for r in rows if r["strategy"] == reference and len(r["value"])}
    out = []
    for r in rows:
        if r["seed"] not in targets:
            continue
        t = targets[r["seed"]]
        out.append(
            {
                "strategy": r["strategy"],
                "seed": r["seed"],
                "target": t,
                "need": budget_to_reach(r["spent"], r["value"], t),
                "final": r["value"][-1],
                "spent_total": r["spent"][-1],
            }
        )
    table = pd.DataFrame(out, columns=["strategy", "seed", "target", "need", "final", "spent_total"])
    ref = table[table["strategy"] == reference].set_index("seed")["need"]
    table["ratio"] = table["need"].to_numpy() / ref.reindex(table["seed"]).to_numpy()
    return table


def bootstrap_ci(
    x: np.ndarray,
    stat: Callable[[np.ndarray], float],
    rng: np.random.Generator,
    n_boot: int = 2000,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over the rows of ``x`` (seeds).

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than two values.
    """
    x = np.asarray(x, float)
    if x.size < 2:
        return float("nan"), float("nan")
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    boots = np.array([stat(x[i]) for i in idx])
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def _geomean(x: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(x))))


@dataclass(frozen=True)
class Headline:
    """One strategy's row of the headline table (see the module docstring).

    Attributes:
        strategy: Strategy name.
        n_seeds: Seeds paired with a reference seed.
        n_reached: Seeds whose curve reaches the target.
        need_mean: Mean budget to reach over seeds (units); NaN unless all reach.
        ratio: Geometric mean ratio to random; NaN unless all seeds reach.
        ratio_low, ratio_high: 95% percentile-bootstrap interval of ``ratio``.
        ratio_bound: When some seeds never reach: the geometric mean with those
            seeds censored at the strategy's whole budget, a lower bound.
        p_value: Two-sided Wilcoxon signed-rank p on the per-seed log ratios
            (NaN for the reference or fewer than two seeds).
        final_mean: Mean final identifiability over seeds.
    """

    strategy: str
    n_seeds: int
    n_reached: int
    need_mean: float
    ratio: float
    ratio_low: float
    ratio_high: float
    ratio_bound: float
    p_value: float
    final_mean: float

    @property
    def reaches(self) -> str:
        """The budget-to-reach in words: a number, or that it never reaches."""
        if self.n_reached == 0:
            return "never reaches"
        if self.n_reached < self.n_seeds:
            return f"never reaches in {self.n_seeds - self.n_reached} of {self.n_seeds} seeds"
        return f"{self.need_mean:.1f}"


def headline(
    results: pd.DataFrame,
    rng: np.random.Generator,
    column: str = "identifiability",
    reference: str = REFERENCE,
    n_boot: int = 2000,
) -> list[Headline]:
    """The headline table, one :class:`Headline` per strategy (reference first).

    Args:
        results: Rows of ``results.parquet``.
        rng: Generator for the bootstrap.
        column: Metric to compare.
        reference: Strategy whose whole-budget level is the target.
        n_boot: Bootstrap resamples.
    """
    needs = needs_table(results, column, reference)
    out = []
    order = [reference] + sorted(set(needs["strategy"]) - {reference})
    for strategy in order:
        d = needs[needs["strategy"] == strategy].sort_values("seed")
        reached = d["need"].notna().to_numpy()
        ratio = d["ratio"].to_numpy(float)
        all_reach = bool(reached.all()) and len(d) > 0
        # a seed that never reaches is censored at the strategy's whole budget: a lower bound on its ratio
        censored = np.where(reached, ratio, d["spent_total"].to_numpy(float) / _reference_need(needs, d, reference))
        gm = _geomean(ratio) if all_reach else float("nan")
        lo, hi = bootstrap_ci(ratio, _geomean, rng, n_boot) if all_reach else (float("nan"), float("nan"))
        p = float("nan")
        if strategy != reference and len(d) >= 2:
            # rank test: "never reaches" only has to rank above every seed that reaches
            big = np.max(np.abs(np.log(ratio[reached]))) + 1.0 if reached.any() else 1.0
            logr = np.where(reached, np.log(np.where(reached, ratio, 1.0)), big)
            if np.any(logr != 0):
                p = float(sps.wilcoxon(logr, zero_method="zsplit").pvalue)
        out.append(
            Headline(
                strategy=strategy,
                n_seeds=len(d),
                n_reached=int(reached.sum()),
                need_mean=float(d["need"].mean()) if all_reach else float("nan"),
                ratio=gm,
                ratio_low=lo,
                ratio_high=hi,
                ratio_bound=float("nan") if all_reach or len(d) == 0 else _geomean(censored),
                p_value=p,
                final_mean=float(d["final"].mean()) if len(d) else float("nan"),
            )
        )
    return out


def _reference_need(needs: pd.DataFrame, d: pd.DataFrame, reference: str) -> np.ndarray:
    ref = needs[needs["strategy"] == reference].set_index("seed")["need"]
    return ref.reindex(d["seed"]).to_numpy(float)


def headline_frame(rows: list[Headline]) -> pd.DataFrame:
    """The headline rows as a table (what ``summary.csv`` holds)."""
    records = []
    for h in rows:
        records.append(
            {
                "strategy": h.strategy,
                "n_seeds": h.n_seeds,
                "n_reached": h.n_reached,
                "budget_to_reach": h.reaches,
                "budget_to_reach_mean": h.need_mean,
                "ratio_to_random": h.ratio,
                "ratio_ci_low": h.ratio_low,
                "ratio_ci_high": h.ratio_high,
                "ratio_lower_bound": h.ratio_bound,
                "wilcoxon_p": h.p_value,
                "final_identifiability": h.final_mean,
            }
        )
    return pd.DataFrame(records)


def curve_band(results: pd.DataFrame, column: str, grid: np.ndarray, level: float = 0.95) -> pd.DataFrame:
    """Mean and t confidence band of a metric over seeds on a common spent grid.

    Each seed's curve is interpolated linearly on ``grid`` within its own
    spent range (never extrapolated); grid points not covered by every seed
    are NaN, so the mean is always over the same seeds.

    Args:
        results: Rows of one strategy (``seed``, ``spent``, ``column``).
        column: Metric.
        grid: ``(g,)`` spent values, budget units.
        level: Confidence level of the band.

    Returns:
        ``spent``, ``mean``, ``low``, ``high`` (t interval of the mean),
        ``min``, ``max`` (over seeds), ``n`` (seeds covering the point).
    """
    curves = []
    for _, df in results.sort_values("round").groupby("seed"):
        x, y = df["spent"].to_numpy(float), df[column].to_numpy(float)
        ok = np.isfinite(y)
        if ok.sum() == 0:
            continue
        x, y = x[ok], y[ok]
        c = np.interp(grid, x, y)
        c[(grid < x[0] - 1e-9) | (grid > x[-1] + 1e-9)] = np.nan
        curves.append(c)
    if not curves:
        nan = np.full(grid.shape, np.nan)
        return pd.DataFrame({"spent": grid, "mean": nan, "low": nan, "high": nan, "min": nan, "max": nan, "n": 0})
    c = np.vstack(curves)
    # only where every seed has data: a band over a changing set of seeds jumps where one ends
    c[:, ~np.isfinite(c).all(axis=0)] = np.nan
    n = np.isfinite(c).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(c, axis=0) / np.maximum(n, 1), np.nan)
        sd = np.sqrt(np.nansum((c - mean) ** 2, axis=0) / np.maximum(n - 1, 1))
        half = sps.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    half = np.where(n > 1, half, 0.0)
    ok = np.isfinite(c)
    lo = np.where(n > 0, np.min(np.where(ok, c, np.inf), axis=0), np.nan)
    hi = np.where(n > 0, np.max(np.where(ok, c, -np.inf), axis=0), np.nan)
    return pd.DataFrame(
        {"spent": grid, "mean": mean, "low": mean - half, "high": mean + half, "min": lo, "max": hi, "n": n}
    )


#: Columns :func:`model_ranking` compares, and whether higher is better.
RANKED = {
    "risk": False,
    "risk_modality": False,
    "risk_scale": False,
    "risk_context": False,
    "risk_intervention": False,
    "calibration_error": False,
    "identifiability": True,
    "pearson_delta": True,
    "mae": False,
    "discrimination_score_l1": True,
    "overlap_at_N": True,
    "de_direction_match": True,
}


def model_ranking(results: pd.DataFrame) -> pd.DataFrame:
    """Models (and strategies) ranked on the evaluation axes at their final round, seeds averaged.

    Args:
        results: Scored rows of ``results.parquet`` with ``model``, ``strategy``, ``seed``, ``round``.

    Returns:
        One row per (model, strategy), best aggregate risk first: ``n_seeds``, the mean over seeds of
        each :data:`RANKED` column (``calibration_error`` is ``|calibration_90 − 0.9|``), the mean
        ``spent``, and ``rank_<column>`` (1 = best; NaN where the column is NaN, e.g. the
        identifiability of a model without operators).
    """
    last = results.sort_values("round").groupby(["model", "strategy", "seed"]).last().reset_index()
    last = last.assign(calibration_error=(last["calibration_90"] - 0.9).abs())
    cols = [c for c in RANKED if c in last]
    table = (
        last.groupby(["model", "strategy"])
        .agg(n_seeds=("seed", "nunique"), spent=("spent", "mean"), **{c: (c, "mean") for c in cols})
        .reset_index()
    )
    for c in cols:
        table[f"rank_{c}"] = table[c].rank(ascending=not RANKED[c], method="min")
    return table.sort_values(["risk", "model", "strategy"], na_position="last").reset_index(drop=True)
