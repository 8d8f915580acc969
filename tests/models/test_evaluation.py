"""Evaluation: calibration, function-space readouts and the aggregate risk, on numpy fakes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiment_design import Context, MeasurementBatch, ModalityData, Perturbation, Query, keys
from experiment_design.splits import queries_of_obs
from models.base import PROGRAMS, Prediction
from models.evaluation import (
    AXES,
    additive_baseline,
    crps_gaussian,
    discrimination,
    evaluate,
    interval_coverage,
)
from models.metrics import STANDARD
from models.readouts import (
    de_agreement,
    gene_sets_from_loadings,
    knn_overlap,
    observed_readout,
    parse_gmt,
    program_activity,
)

G, K, P, FM = 40, 4, 6, 5
TARGETS = [f"T{i}" for i in range(10)]


class World:
    """A small numpy world: target effects on K programs, read out by every modality."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.effect = {t: rng.normal(0, 1.5, K) for t in TARGETS}  # zero-mean effects: no shared response
        self.line = {"L0": np.zeros(K), "L1": rng.normal(0, 0.5, K)}
        self.W = rng.normal(0, 0.6, (G, K))
        self.b = rng.normal(0, 0.5, G)
        self.V = rng.normal(0, 0.4, (P, K))
        self.M = rng.normal(0, 1.0, (FM, K))

    def z(self, q: Query) -> np.ndarray:
        p = q.perturbation
        return self.line[q.context.cell_line] + sum(
            (self.effect[t] * d for t, d in zip(p.targets, p.doses, strict=True)), np.zeros(K)
        )

    def measure(self, queries: list[Query], rng: np.random.Generator, replicates: int = 2) -> MeasurementBatch:
        """Counts for rna / adt / spatial, Gaussian morphology and molecular, per specimen and unit."""
        mods = {
            "scrna": ("rna",),
            "cite_seq": ("rna", "adt"),
            "rna_morphology": ("rna", "morphology"),
            "molecular_rna": ("molecular", "rna"),
            "molecular": ("molecular",),
            "spatial_dissociated": ("spatial", "rna"),
        }
        parts: dict[str, list[ModalityData]] = {}
        for q in queries:
            z = self.z(q)
            for r in range(replicates):
                for m in mods[q.assay]:
                    if m in ("rna", "spatial"):
                        p = np.exp(self.b + self.W @ z)
                        n, X = 20, rng.poisson(200 * p / p.sum() * G, size=(20, G))
                        names = tuple(f"g{i}" for i in range(G))
                    elif m == "adt":
                        n, X = 20, rng.poisson(np.exp(2.0 + self.V @ z), size=(20, P))
                        names = tuple(f"p{i}" for i in range(P))
                    elif m == "morphology":
                        n, X = 10, self.M @ z + rng.normal(0, 1.0, (10, FM))
                        names = tuple(f"f{i}" for i in range(FM))
                    else:
                        n, X = 1, z[None] + rng.normal(0, 0.1, (1, K))
                        names = tuple(f"P{i}" for i in range(K))
                    obs = pd.DataFrame(
                        {
                            keys.QUERY_ID: q.query_id,
                            keys.PERTURBATION: q.perturbation.label,
                            keys.DOSE_VALUE: q.perturbation.dose_label,
                            keys.DOSE_UNIT: "uM",
                            keys.TIME: q.time_h,
                            keys.TIME_UNIT: "h",
                            keys.CELL_LINE: q.context.cell_line,
                            keys.SITE: q.context.site,
                            keys.BATCH: "b",
                            keys.ASSAY: q.assay,
                            keys.MODALITY: m,
                            keys.REPLICATE: r,
                            keys.SPECIMEN: f"{q.query_id}:{r}",
                            keys.UNIT: np.arange(n),
                        }
                    )
                    parts.setdefault(m, []).append(ModalityData(obs, X, names))
        return MeasurementBatch.concat(MeasurementBatch({m: d}) for m, ds in parts.items() for d in ds)


class TableModel:
    """A fake model that predicts from a lookup table: query id → readout → vector."""

    def __init__(self, table: dict[str, dict[str, np.ndarray]], var: float = 0.0, n_members: int = 1):
        self.table, self.var, self.n_members = table, var, n_members

    def predict(self, queries, readouts=("programs",)) -> Prediction:
        members, aleatoric = {}, {}
        for r in readouts:
            rows = [self.table.get(q.query_id, {}).get(r) for q in queries]
            width = next((len(v) for v in rows if v is not None), None)
            if width is None:
                continue  # the model has no decoder for this readout
            mean = np.stack([np.zeros(width) if v is None else v for v in rows])
            members[r] = np.repeat(mean[None], self.n_members, axis=0)
            aleatoric[r] = np.full(mean.shape, self.var)
        members[PROGRAMS] = np.zeros((self.n_members, len(queries), K))
        return Prediction(members, aleatoric)


def query(targets: tuple[str, ...], line: str = "L0", assay: str = "scrna", dose: float = 1.0) -> Query:
    return Query(Perturbation(targets, tuple(dose for _ in targets)), 24.0, Context(line, "S0"), assay)


@pytest.fixture(scope="module")
def scenario():
    """Held-out batches on all four axes and control data, measured once."""
    world, rng = World(0), np.random.default_rng(1)
    heldout_q = {
        "intervention": [query((a, b)) for a, b in zip(TARGETS[:6], TARGETS[4:10], strict=True)]
        + [query((t,), dose=0.5) for t in TARGETS[:6]],
        "context": [query((t,), line="L1") for t in TARGETS],
        "modality": [
            query((t,), assay=a) for t in TARGETS[:5] for a in ("cite_seq", "rna_morphology", "molecular_rna")
        ],
        "scale": [query((t,), assay="spatial_dissociated") for t in TARGETS],
    }
    heldout = {a: world.measure(qs, rng) for a, qs in heldout_q.items()}
    controls = world.measure(
        [
            query((), line=line, assay=a)
            for line in ("L0", "L1")
            for a in ("scrna", "cite_seq", "rna_morphology", "molecular_rna", "spatial_dissociated")
        ],
        rng,
        replicates=3,
    )
    singles = world.measure([query((t,), assay=a) for t in TARGETS for a in ("scrna", "molecular")], rng)
    return heldout, controls, MeasurementBatch.concat([controls, singles])


def observed_table(heldout: dict[str, MeasurementBatch], permute: np.random.Generator | None = None) -> dict:
    """Query id → modality → observed readout; optionally shuffled across the queries of each batch."""
    table: dict[str, dict[str, np.ndarray]] = {}
    for batch in heldout.values():
        for m in batch.modalities:
            o = observed_readout(batch, m)
            order = permute.permutation(len(o.query_ids)) if permute is not None else np.arange(len(o.query_ids))
            for q, i in zip(o.query_ids, order, strict=True):
                table.setdefault(q, {})[m] = o.values[i]
    return table


def control_table(heldout: dict, controls: MeasurementBatch) -> dict:
    """The mean-of-controls baseline as a model: each query gets its context's control mean."""
    table: dict[str, dict[str, np.ndarray]] = {}
    for batch in heldout.values():
        for m in batch.modalities:
            o, c = observed_readout(batch, m), observed_readout(controls, m)
            line = dict(
                zip(batch.modalities[m].obs[keys.QUERY_ID], batch.modalities[m].obs[keys.CELL_LINE], strict=True)
            )
            cline = dict(
                zip(controls.modalities[m].obs[keys.QUERY_ID], controls.modalities[m].obs[keys.CELL_LINE], strict=True)
            )
            for q in o.query_ids:
                keep = np.array([cline[cq] == line[q] for cq in c.query_ids])
                table.setdefault(q, {})[m] = c.values[keep].mean(axis=0)
    return table


# -------------------------------------------------------------------- risk
def test_perfect_predictions_give_zero_risk(scenario) -> None:
    heldout, controls, _ = scenario
    rep = evaluate(TableModel(observed_table(heldout)), heldout, controls)
    assert rep.risk == pytest.approx(0.0, abs=1e-9)
    assert set(rep.parts) == {f"risk_{a}" for a in AXES}
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in rep.parts.values())
    assert rep.details["de_overlap"] == pytest.approx(1.0) and rep.details["de_direction"] == pytest.approx(1.0)
    standard = {f"{m}{s}" for m in STANDARD for s in ("", "_skill", *(f"_{a}" for a in AXES))}
    assert (
        set(rep.as_metrics())
        == {f"risk{p}" for p in ("", "_modality", "_scale", "_context", "_intervention", "_training_controls")}
        | {"calibration_90"}
        | standard
    )
    skills = {m: rep.standard[f"{m}_skill"] for m in STANDARD}
    assert all(v == pytest.approx(1.0) for v in skills.values() if np.isfinite(v)), skills
    assert np.isfinite(skills["mae"]) and rep.standard["mae"] == pytest.approx(0.0, abs=1e-9)


def test_shuffled_predictions_score_near_the_baseline(scenario) -> None:
    heldout, controls, _ = scenario
    base = evaluate(TableModel(control_table(heldout, controls)), heldout, controls)
    assert base.risk == pytest.approx(1.0, abs=0.02)  # the baseline is one by construction
    shuffled = [
        evaluate(TableModel(observed_table(heldout, np.random.default_rng(s))), heldout, controls).risk
        for s in range(5)
    ]
    assert np.mean(shuffled) == pytest.approx(base.risk, abs=0.15)
    # A real but imperfect model (truth plus noise) lies clearly between perfect and baseline.
    rng = np.random.default_rng(7)
    noisy = {
        q: {m: v + rng.normal(0, 0.3 * v.std(), v.shape) for m, v in d.items()}
        for q, d in observed_table(heldout).items()
    }
    r = evaluate(TableModel(noisy), heldout, controls).risk
    assert 0.02 < r < 0.6


def test_additive_baseline_of_combinations(scenario) -> None:
    heldout, controls, reference = scenario
    perfect = evaluate(TableModel(observed_table(heldout)), heldout, reference)
    assert perfect.details["nmse_additive"] == pytest.approx(0.0, abs=1e-9)
    # Singles in the reference must not leak into the mean-of-controls baseline.
    base = evaluate(TableModel(control_table(heldout, controls)), heldout, reference)
    assert base.risk == pytest.approx(1.0, abs=0.02)
    # The world is additive in the latent: on the molecular panel the additive
    # baseline is far better than the mean of controls.
    world, rng = World(0), np.random.default_rng(5)
    pairs = [query((a, b), assay="molecular") for a, b in zip(TARGETS[:5], TARGETS[5:], strict=True)]
    singles = [query((t,), assay="molecular") for t in TARGETS] + [query((), assay="molecular")]
    obs = observed_readout(world.measure(pairs, rng), "molecular")
    ref = observed_readout(world.measure(singles, rng), "molecular")
    ctrl = np.broadcast_to(ref.values[-1], obs.values.shape)
    add = additive_baseline(pairs, singles, ref.values, ctrl)
    err_add, err_ctrl = np.mean((add - obs.values) ** 2), np.mean((ctrl - obs.values) ** 2)
    assert err_add < 0.1 * err_ctrl
    assert np.isnan(additive_baseline([query(("T0", "T1"), dose=0.3)], singles, ref.values, ctrl[:1])).all()


def test_reference_controls_make_the_yardstick_independent_of_the_training_data(scenario) -> None:
    """Training data without anchor or tissue controls (a design that never bought one) falls back to the
    set's own mean, a harder yardstick than the controls; reference controls give every design the same."""
    heldout, controls, with_controls = scenario
    # controls in scRNA only, like a design that keeps round 0's controls and buys none
    obs = pd.concat([m.obs for m in with_controls.modalities.values()]).drop_duplicates(keys.QUERY_ID)
    keep = [q.query_id for q in queries_of_obs(obs) if not q.perturbation.is_control or q.assay == "scrna"]
    singles_only = with_controls.subset(keep)
    rng = np.random.default_rng(11)
    noisy = {
        q: {m: v + rng.normal(0, v.std(), v.shape) for m, v in d.items()} for q, d in observed_table(heldout).items()
    }
    model = TableModel(noisy)
    old_with = evaluate(model, heldout, with_controls)
    old_without = evaluate(model, heldout, singles_only)
    # the stored definition: the same model scores worse on the axes whose controls are missing
    assert old_without.parts["risk_modality"] > 1.15 * old_with.parts["risk_modality"]
    assert old_without.parts["risk_scale"] > 1.15 * old_with.parts["risk_scale"]
    # (RNA keeps the scRNA controls; the anchors' RNA controls go, so it moves a little)
    assert old_without.parts["risk_context"] == pytest.approx(old_with.parts["risk_context"], abs=0.01)
    # with reference controls the training data no longer matters, and the yardstick is the controls'
    new_with = evaluate(model, heldout, with_controls, reference=controls)
    new_without = evaluate(model, heldout, singles_only, reference=controls)
    assert new_with.risk == pytest.approx(new_without.risk, abs=1e-12)
    assert new_with.risk == pytest.approx(old_with.risk, abs=1e-12)  # its controls were the reference's
    # the additive baseline still comes from the training data
    assert new_with.details["nmse_additive"] == pytest.approx(old_with.details["nmse_additive"])


def test_missing_readouts_cost_the_baseline_and_weights_select_axes(scenario) -> None:
    heldout, controls, _ = scenario
    table = {q: {m: v for m, v in d.items() if m != "adt"} for q, d in observed_table(heldout).items()}
    rep = evaluate(TableModel(table), heldout, controls)
    assert rep.parts["risk_modality"] > 0.3 and rep.parts["risk_context"] == pytest.approx(0.0, abs=1e-9)
    only = evaluate(TableModel(table), heldout, controls, weights={"modality": 1.0})
    assert only.risk == pytest.approx(rep.parts["risk_modality"])
    with pytest.raises(ValueError, match="axis"):
        evaluate(TableModel(table), {"sideways": heldout["context"]}, controls)


def test_gene_sets_change_the_readout_but_not_perfection(scenario, tmp_path) -> None:
    heldout, controls, _ = scenario
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("SET_A\tdesc\tg0\tg1\tg2\nSET_B\t\tg10\tg11\tnot_a_gene\n")
    sets = parse_gmt(gmt)
    assert sets == {"SET_A": ("g0", "g1", "g2"), "SET_B": ("g10", "g11", "not_a_gene")}
    rep = evaluate(TableModel(observed_table(heldout)), heldout, controls, gene_sets=sets)
    assert rep.risk == pytest.approx(0.0, abs=1e-9)
    bad = tmp_path / "bad.gmt"
    bad.write_text("ONLY_NAME\n")
    with pytest.raises(ValueError, match="bad.gmt:1"):
        parse_gmt(bad)


# ------------------------------------------------------------- calibration
@pytest.mark.parametrize("scale,lo,hi", [(1.0, 0.88, 0.92), (0.5, 0.55, 0.63), (2.0, 0.998, 1.0)])
def test_interval_coverage_of_gaussian_predictions(scale: float, lo: float, hi: float) -> None:
    rng = np.random.default_rng(0)
    mu, sd = rng.normal(size=20000), rng.uniform(0.5, 2.0, 20000)
    y = mu + sd * rng.normal(size=20000)
    assert lo <= interval_coverage(y, mu, (scale * sd) ** 2, 0.9) <= hi
    if scale == 1.0:
        assert interval_coverage(y, mu, sd**2, 0.5) == pytest.approx(0.5, abs=0.015)


def test_crps_closed_form_matches_monte_carlo_and_is_proper() -> None:
    rng = np.random.default_rng(1)
    y, mu, sd = 0.7, 0.2, 1.3
    x, x2 = mu + sd * rng.normal(size=200000), mu + sd * rng.normal(size=200000)
    mc = np.mean(np.abs(x - y)) - 0.5 * np.mean(np.abs(x - x2))
    assert crps_gaussian(np.array([y]), mu, sd**2)[0] == pytest.approx(mc, abs=0.01)
    ys = rng.normal(size=20000)
    scores = {s: crps_gaussian(ys, 0.0, s**2).mean() for s in (0.5, 1.0, 2.0)}
    assert scores[1.0] < scores[0.5] and scores[1.0] < scores[2.0]


def test_evaluate_reports_calibration_of_honest_and_overconfident_models() -> None:
    world, rng = World(1), np.random.default_rng(3)
    qs = [query((t,), assay="molecular", dose=d) for t in TARGETS for d in np.linspace(0.1, 1.0, 15)]
    heldout = {"modality": world.measure(qs, rng)}  # molecular: 2 specimens per query, noise sd 0.1 each
    truth = {q.query_id: world.z(q) for q in qs}
    table = {q: {"molecular": z} for q, z in truth.items()}  # a model that knows the noise-free mean
    # Per-specimen aleatoric variance 0.01; the evaluator divides by the 2 specimens averaged.
    honest = evaluate(TableModel(table, var=0.01), heldout)
    sharp = evaluate(TableModel(table, var=0.01 * 0.25), heldout)  # predictive sd scaled by 0.5
    assert honest.calibration_90 == pytest.approx(0.9, abs=0.03)
    assert honest.details["calibration_50"] == pytest.approx(0.5, abs=0.05)
    assert sharp.calibration_90 == pytest.approx(0.59, abs=0.05)
    assert honest.details["crps"] < sharp.details["crps"] and honest.details["nll"] < sharp.details["nll"]


# ------------------------------------------------------ function-space maps
def test_de_knn_and_program_activity() -> None:
    rng = np.random.default_rng(2)
    d = rng.normal(size=(5, 60))
    ov, dr = de_agreement(d, d)
    assert np.all(ov == 1.0) and np.all(dr == 1.0)
    ov, dr = de_agreement(-d, d)
    assert np.all(ov == 1.0) and np.all(dr == 0.0)
    ov, _ = de_agreement(rng.normal(size=(5, 60)), d)
    assert ov.mean() < 0.6
    A = rng.normal(size=(50, 4))
    assert knn_overlap(A, A, 5) == 1.0 and knn_overlap(A, 3 * A + 1, 5) == 1.0
    assert knn_overlap(A, rng.normal(size=(50, 4)), 5) < 0.4
    W = np.zeros((30, 2))
    W[:10, 0], W[10:20, 1] = 1.0, 1.0
    genes = [f"g{i}" for i in range(30)]
    sets = gene_sets_from_loadings(W + 0.01 * rng.normal(size=W.shape), genes, ["p0", "p1"], top=10)
    assert set(sets["p0"]) == set(genes[:10]) and set(sets["p1"]) == set(genes[10:20])
    X = rng.normal(size=(3, 30))
    assert np.allclose(program_activity(X, genes, sets)[:, 0], X[:, :10].mean(axis=1))
    assert discrimination(A, A) == 0.0 and discrimination(np.zeros_like(A), A) == 0.5
