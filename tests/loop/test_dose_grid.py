"""A drug x drug viability grid, written the way combination screens publish it, replayed and fitted.

The grid is generated here, independently of cslab's world: Hill inhibition per drug
(one drug without effect), Bliss independence for pairs with one synergistic and one
antagonistic pair, a cell line that shifts every EC50, two replicates and Gaussian noise,
as a `drug1, drug2, conc1, conc2, response, cell_line, replicate` table.
"""

import numpy as np
import pandas as pd
import pytest

from loop.config import RunConfig
from loop.parameters import fitted_parameters, load_last_model, main, measured_pairs
from loop.study import Study

DRUGS = ("DrugA", "DrugB", "DrugC", "DrugD")
LOG_EC50 = {"DrugA": -1.0, "DrugB": 0.0, "DrugC": 0.7, "DrugD": 0.0}  # µM, in line LN1
HILL = {"DrugA": 1.0, "DrugB": 1.5, "DrugC": 2.0, "DrugD": 1.0}
EMAX = {"DrugA": 0.8, "DrugB": 0.6, "DrugC": 0.9, "DrugD": 0.0}  # DrugD has no effect
LINE_SHIFT = {"LN1": 0.0, "LN2": 0.3}  # log10 EC50 shift of the second line
BLISS_EXCESS = {("DrugA", "DrugB"): -0.3, ("DrugB", "DrugC"): 0.25}  # × i_a · i_b
CONCS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def _inhibition(drug: str, c: float, line: str) -> float:
    ec50 = 10 ** (LOG_EC50[drug] + LINE_SHIFT[line])
    return EMAX[drug] * c ** HILL[drug] / (c ** HILL[drug] + ec50 ** HILL[drug])


def write_grid(path, seed: int = 0, noise: float = 0.03) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for line in LINE_SHIFT:
        for i, a in enumerate(DRUGS):
            for b in DRUGS[i + 1 :]:
                for ca in CONCS:
                    for cb in CONCS:
                        ia, ib = _inhibition(a, ca, line), _inhibition(b, cb, line)
                        viability = (1 - ia) * (1 - ib) + BLISS_EXCESS.get((a, b), 0.0) * ia * ib
                        for rep in range(2):
                            rows.append(
                                dict(
                                    drug1=a,
                                    drug2=b,
                                    conc1=ca,
                                    conc2=cb,
                                    response=viability + noise * rng.normal(),
                                    cell_line=line,
                                    replicate=rep,
                                )
                            )
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    write_grid(tmp / "grid.csv")
    root = tmp / "run"
    config = RunConfig(oracle="lab", data=str(tmp / "grid.csv"), budget=120, strategy="cost_aware", seed=0)
    metrics = Study.create(root, config).run()
    return root, metrics


def test_the_grid_keeps_its_pairs_and_identifiability_rises_with_budget(grid_run):
    root, metrics = grid_run
    assert metrics["spent"].iloc[-1] >= 110  # the stress sets leave most of the grid to learn from
    ident = metrics["identifiability"].to_numpy()
    assert ident[-1] > ident[0] + 0.15, ident
    assert len(measured_pairs(root)) >= 4  # of the six pairs; at most a quarter are held out


def test_per_drug_ec50_slope_and_bliss_synergy_are_recovered(grid_run):
    root, _ = grid_run
    model, space, _ = load_last_model(root)
    targets, pairs = fitted_parameters(model, space, measured_pairs(root))
    t = targets.set_index("target")
    for drug in ("DrugA", "DrugB", "DrugC"):
        assert t.loc[drug, "identified"], t
        assert abs(t.loc[drug, "log10_ec50"] - LOG_EC50[drug]) < 0.3, t  # EC50 in the reference line LN1
        assert abs(np.log(t.loc[drug, "hill"] / HILL[drug])) < np.log(1.5), t
        assert t.loc[drug, "effect"] < -0.4  # viability falls at the top dose
    assert not t.loc["DrugD", "identified"] and abs(t.loc["DrugD", "effect"]) < 0.1
    p = pairs.set_index(["a", "b"])
    for pair, excess in BLISS_EXCESS.items():
        if p.loc[pair, "n_measured"] > 0:
            assert np.sign(p.loc[pair, "excess_bliss"]) == np.sign(excess), p


def test_the_command_prints_and_writes_the_tables(grid_run, tmp_path, capsys):
    root, _ = grid_run
    assert main([str(root), "--csv", str(tmp_path / "fitted")]) == 0
    out = capsys.readouterr().out
    assert "DrugA" in out and "excess_bliss" in out
    written = pd.read_csv(tmp_path / "fitted.targets.csv")
    assert list(written["target"]) == list(DRUGS)
    assert main([str(tmp_path / "nowhere")]) == 2
