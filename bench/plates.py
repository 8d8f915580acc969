"""Does plate layout matter? Dose-response estimation error, naive vs randomised layouts.

The simulator's morphology carries a plate offset, row / column gradients and
an edge offset (``simulators.imaging``). A round of dose series (3 compounds x
8 doses x 3 replicates, cell painting, one context) plus 4 negative and 2
positive controls per plate is laid out three ways:

* ``naive``: row by row from A01 in query order (controls first, then each
  compound's doses ascending, replicates side by side), edges used;
* ``random+edges``: :func:`experiment_design.plates.layout_plates` with ``edge="use"``;
* ``random``: ``layout_plates`` with the default ``edge="empty"`` (2 plates).

The response of each (compound, dose) is estimated by the simplest analysis:
the mean morphology of its wells minus the mean of the negative-control wells
(of the whole round), and compared with the truth
``truth.expected(query) - truth.expected(vehicle)``; the error is the RMSE
over compounds, doses and features, averaged over world / layout seeds.

Run: ``python -m bench.plates [--quick] [--seeds 10]``. Prints the table, a one-line summary last, and writes
``bench/results/plates.json`` (directory overridable with ``CSLAB_BENCH_RESULTS``). ``--quick``: 2 seeds,
written to ``bench/results/quick/`` instead.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench import write_result
from experiment_design import Perturbation, Query, keys
from experiment_design.assays import MORPHOLOGY
from experiment_design.plates import LayoutConfig, PlateFormat, layout_plates
from simulators import make_world

ASSAY = "cell_painting"


def round_queries(world, n_compounds: int = 3, n_doses: int = 8, replicates: int = 3) -> list[Query]:
    """Dose series of the first compounds, in the first context, 24 h."""
    space = world.space
    ctx = space.contexts[0]
    compounds = [t.name for t in space.targets if t.kind.value == "compound"][:n_compounds]
    return [
        Query(Perturbation.of(**{c: float(d)}), 24.0, ctx, ASSAY, replicates)
        for c in compounds
        for d in space.dose_series(c, n_doses)
    ]


def naive_layout(queries: list[Query], positive: Perturbation, n_neg: int = 4, n_pos: int = 2):
    """Row-by-row fill from A01 on 96-well plates: controls first, then queries in order, edges used."""
    fmt = PlateFormat.of(96)
    ctx, time_h = queries[0].context, queries[0].time_h
    neg = Query(Perturbation.control(), time_h, ctx, ASSAY, n_neg)
    pos = Query(positive, time_h, ctx, ASSAY, n_pos)
    measured = [neg, pos, *queries]
    mapping = {}
    k = 0
    for q in measured:
        for r in range(q.replicates):
            plate, idx = divmod(k, fmt.n_wells)
            mapping[(q.query_id, r)] = (f"NAIVE-P{plate + 1:02d}", fmt.well_name(*divmod(idx, fmt.n_cols)))
            k += 1
    return measured, mapping, neg


def random_layout(queries: list[Query], positive: Perturbation, space, edge: str, seed: int):
    """``layout_plates`` with the given edge policy."""
    lay = layout_plates(queries, LayoutConfig(edge=edge), np.random.default_rng(seed), positive=positive, space=space)
    negs = [q for q in lay.control_queries() if q.perturbation.is_control]
    return lay.queries_to_measure(), lay.to_layout_mapping(), negs


def response_error(world, queries: list[Query], measured: list[Query], mapping, negatives: list[Query]) -> float:
    """RMSE of vehicle-normalised responses vs truth, over queries and morphology features."""
    batch = world.measure(measured, layout=mapping)
    m = batch.modalities[MORPHOLOGY]
    obs = m.obs
    well = obs[keys.QUERY_ID].astype(str) + ":" + obs[keys.REPLICATE].astype(str)
    codes, uniq = well.factorize()
    well_mean = np.zeros((len(uniq), m.X.shape[1]))
    np.add.at(well_mean, codes, m.X)
    well_mean /= np.bincount(codes)[:, None]
    well_qid = np.array([u.split(":")[0] for u in uniq])

    def mean_of(qids: set[str]) -> np.ndarray:
        return well_mean[np.isin(well_qid, list(qids))].mean(axis=0)

    vehicle = mean_of({q.query_id for q in negatives})
    est = np.stack([mean_of({q.query_id}) - vehicle for q in queries])
    expected = world.truth.expected([*queries, negatives[0]])[MORPHOLOGY]
    truth = expected[:-1] - expected[-1]
    return float(np.sqrt(np.mean((est - truth) ** 2)))


def run(seeds: int = 10, preset: str = "small") -> dict[str, np.ndarray]:
    """Errors per layout and seed."""
    out: dict[str, list[float]] = {"naive": [], "random+edges": [], "random": []}
    for s in range(seeds):
        world = make_world(preset, seed=s)
        queries = round_queries(world)
        positive = queries[-1].perturbation  # the top dose of the last compound
        measured, mapping, neg = naive_layout(queries, positive)
        out["naive"].append(response_error(world, queries, measured, mapping, [neg]))
        out["random+edges"].append(
            response_error(world, queries, *random_layout(queries, positive, world.space, "use", s))
        )
        out["random"].append(response_error(world, queries, *random_layout(queries, positive, world.space, "empty", s)))
    return {k: np.asarray(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds")
    parser.add_argument("--seeds", type=int, default=None, help="world / layout seeds (10; quick 2)")
    parser.add_argument("--preset", default="small")
    args = parser.parse_args()
    args.seeds = args.seeds or (2 if args.quick else 10)
    t0 = time.perf_counter()
    errs = run(args.seeds, args.preset)
    print(f"dose-response RMSE (vehicle-normalised morphology), {args.seeds} seeds, preset {args.preset!r}")
    for name, e in errs.items():
        ratio = errs["naive"].mean() / e.mean()
        print(f"  {name:14s} mean {e.mean():.4f}  sd {e.std():.4f}  ratio naive/this {ratio:.2f}")
    wins = np.mean(errs["random"] < errs["naive"])
    print(f"  random (edge-avoiding) beats naive on {wins:.0%} of seeds; {time.perf_counter() - t0:.1f} s")
    result = {
        "quick": args.quick,
        "seeds": args.seeds,
        "preset": args.preset,
        "wins_random_over_naive": float(wins),
        "rmse": {k: {"mean": float(e.mean()), "sd": float(e.std()), "per_seed": e.tolist()} for k, e in errs.items()},
    }
    path = write_result("plates", result, args.quick)
    print(f"wrote {path}")
    ratio = errs["naive"].mean() / errs["random"].mean()
    print(
        f"plates: randomised edge-avoiding layouts cut the dose-response RMSE {ratio:.2f}x vs naive "
        f"(beats naive on {wins:.0%} of {args.seeds} seeds)"
    )


if __name__ == "__main__":
    main()
