import math

import numpy as np
import pandas as pd
import pytest

from loop.stats import budget_to_reach, curve_band, headline, headline_frame, needs_table


def _curves(spec: dict, seeds=range(4), budget=100.0, n=11) -> pd.DataFrame:
    """Results rows of strategies whose curve is f(spent, seed)."""
    rows = []
    spent = np.linspace(budget / (n - 1), budget, n - 1)
    for strategy, f in spec.items():
        for k in seeds:
            for r, s in enumerate(spent):
                rows.append({"strategy": strategy, "seed": k, "round": r, "spent": s, "identifiability": f(s, k)})
    return pd.DataFrame(rows)


def test_budget_to_reach_interpolates_between_rounds():
    spent = np.array([10.0, 20.0, 30.0])
    value = np.array([0.1, 0.3, 0.5])
    assert budget_to_reach(spent, value, 0.4) == pytest.approx(25.0)
    assert budget_to_reach(spent, value, 0.3) == pytest.approx(20.0)
    assert budget_to_reach(spent, value, 0.05) == pytest.approx(10.0)  # reached at the first round


def test_budget_to_reach_first_crossing_and_never():
    spent = np.array([10.0, 20.0, 30.0, 40.0])
    value = np.array([0.1, 0.6, 0.2, 0.7])  # non-monotone: the first crossing counts
    assert budget_to_reach(spent, value, 0.5) == pytest.approx(10 + 10 * 0.4 / 0.5)
    assert math.isnan(budget_to_reach(spent, value, 0.71))


def test_budget_to_reach_rejects_bad_input():
    with pytest.raises(ValueError, match="non-decreasing"):
        budget_to_reach(np.array([2.0, 1.0]), np.array([0.0, 1.0]), 0.5)
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        budget_to_reach(np.array([1.0, 2.0]), np.array([0.0]), 0.5)


def test_ratio_to_random_on_constructed_curves():
    # random reaches 0.5 (+ seed offset) only with its whole budget; "fast" twice as fast: ratio 0.5 in every seed;
    # "slow" never gets there.
    res = _curves(
        {
            "random": lambda s, k: 0.5 * s / 100 + 0.01 * k,
            "fast": lambda s, k: min(1.0, s / 100 + 0.01 * k),
            "slow": lambda s, k: 0.2 * s / 100,
        }
    )
    needs = needs_table(res).set_index(["strategy", "seed"])
    for k in range(4):
        assert needs.loc[("random", k), "need"] == pytest.approx(100.0)
        assert needs.loc[("fast", k), "need"] == pytest.approx(50.0)
        assert math.isnan(needs.loc[("slow", k), "need"])
    rows = {h.strategy: h for h in headline(res, np.random.default_rng(0))}
    assert list(rows)[0] == "random"
    assert rows["random"].ratio == pytest.approx(1.0)
    assert rows["fast"].ratio == pytest.approx(0.5)
    assert rows["fast"].ratio_low == pytest.approx(0.5) and rows["fast"].ratio_high == pytest.approx(0.5)
    assert rows["fast"].reaches == "50.0"
    assert rows["fast"].p_value == pytest.approx(2 / 2**4)  # exact two-sided Wilcoxon, all 4 seeds better
    slow = rows["slow"]
    assert slow.reaches == "never reaches" and math.isnan(slow.ratio) and math.isnan(slow.need_mean)
    assert slow.ratio_bound == pytest.approx(1.0)  # censored at its whole budget: a lower bound, not a ratio
    table = headline_frame(list(rows.values())).set_index("strategy")
    assert table.loc["slow", "budget_to_reach"] == "never reaches"
    assert math.isnan(table.loc["slow", "ratio_to_random"])


def test_partly_reaching_strategy_is_reported_per_seed_count():
    res = _curves(
        {
            "random": lambda s, k: 0.5 * s / 100,
            "mixed": lambda s, k: (s / 100) if k == 0 else 0.3 * s / 100,
        },
        seeds=range(3),
    )
    h = {r.strategy: r for r in headline(res, np.random.default_rng(1))}["mixed"]
    assert h.n_reached == 1 and h.n_seeds == 3
    assert h.reaches == "never reaches in 2 of 3 seeds"
    assert math.isnan(h.ratio)
    # lower bound: geometric mean of (0.5, 1, 1)
    assert h.ratio_bound == pytest.approx(0.5 ** (1 / 3))


def test_bootstrap_interval_covers_spread_of_seed_ratios():
    ratios = {0: 0.4, 1: 0.5, 2: 0.6, 3: 0.8, 4: 0.7}  # on the round grid: exact
    res = _curves(
        {
            "random": lambda s, k: s / 100,
            "x": lambda s, k: min(1.0, s / (100 * ratios[k])),
        },
        seeds=range(5),
    )
    h = {r.strategy: r for r in headline(res, np.random.default_rng(2))}["x"]
    gm = float(np.exp(np.mean(np.log(list(ratios.values())))))
    assert h.ratio == pytest.approx(gm, rel=0.02)
    assert 0.4 <= h.ratio_low < gm < h.ratio_high <= 0.8


def test_needs_table_requires_reference():
    res = _curves({"eig": lambda s, k: s / 100})
    with pytest.raises(ValueError, match="reference strategy 'random'"):
        needs_table(res)


def test_curve_band_mean_and_band_over_seeds():
    res = _curves({"a": lambda s, k: s / 100 + 0.1 * k}, seeds=range(3))
    grid = np.array([0.0, 10.0, 55.0, 100.0, 120.0])
    band = curve_band(res, "identifiability", grid)
    assert math.isnan(band["mean"][0]) and math.isnan(band["mean"][4])  # never extrapolated
    assert band["mean"][2] == pytest.approx(0.55 + 0.1)
    assert band["low"][2] < band["mean"][2] < band["high"][2]
    assert (band["n"][1:4] == 3).all()
