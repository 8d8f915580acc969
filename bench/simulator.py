"""Simulator speed: scRNA counts per second against numpy's raw negative-binomial draw rate.

    python -m bench.simulator [--quick] [--seed N]

Simulates 20,000 cells x 1,000 genes (``--quick``: 4,000 cells) through
``CellWorld.measure`` (200 scRNA queries of 100 cells, default world with
1,000 genes: latent states, softmax means, library sizes, NB draws, obs
metadata) and, in the same run, times ``Generator.negative_binomial`` alone on
the same number of entries with the same mean and dispersion (as one call and
in per-well chunks; the faster is the reference). Prints both
rates and their ratio (aim >= 0.5), a one-line summary last, and writes
``bench/results/simulator.json`` (directory overridable with
``CSLAB_BENCH_RESULTS``; ``--quick`` writes to ``bench/results/quick/`` instead).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from bench import write_result
from experiment_design import Query
from simulators import make_world


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.simulator")
    ap.add_argument("--quick", action="store_true", help="4,000 cells instead of 20,000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    n_genes, cells_per_well = 1000, 100
    n_queries = 40 if args.quick else 200
    n_cells = n_queries * cells_per_well

    world = make_world("default", seed=args.seed, n_genes=n_genes, cells_per_well=cells_per_well)
    rng = np.random.default_rng(args.seed + 1)
    queries = [
        Query(q.perturbation, q.time_h, q.context, "scrna")
        for q in world.space.sample(n_queries, rng, assays=["scrna"])
    ]
    world.measure(queries[:2])  # warm up imports and caches

    batch = {}

    def simulate() -> None:
        batch["b"] = world.measure(queries)

    t_sim = _best_of(simulate, args.repeats)
    X = batch["b"].modalities["rna"].X
    assert X.shape == (n_cells, n_genes), X.shape

    # Raw draws with the simulated wells' expected means (truth.expected, one row per well) and the world's dispersions.
    mu = np.repeat(world.truth.expected(queries)["rna"], cells_per_well, axis=0)
    theta = np.broadcast_to(world.params.theta, mu.shape)
    p = theta / (theta + mu)
    draw_rng = np.random.default_rng(args.seed + 2)
    t_one = _best_of(lambda: draw_rng.negative_binomial(theta, p), args.repeats)

    # The same draws in per-well chunks, as the simulator makes them (cache-friendlier); the ratio uses
    # the faster of the two raw timings so it never flatters the simulator.
    def chunked() -> None:
        for s in range(0, n_cells, cells_per_well):
            draw_rng.negative_binomial(theta[s : s + cells_per_well], p[s : s + cells_per_well])

    t_chunk = _best_of(chunked, args.repeats)
    t_raw = min(t_one, t_chunk)

    n = X.size
    sim_rate, raw_rate = n / t_sim, n / t_raw
    ratio = sim_rate / raw_rate
    result = {
        "cells": n_cells,
        "genes": n_genes,
        "entries": n,
        "simulate_s": t_sim,
        "raw_nb_s": t_raw,
        "raw_nb_one_call_s": t_one,
        "raw_nb_per_well_s": t_chunk,
        "sim_counts_per_s": sim_rate,
        "raw_nb_draws_per_s": raw_rate,
        "ratio": ratio,
        "quick": args.quick,
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    path = write_result("simulator", result, args.quick)
    print(f"scRNA simulation : {n_cells} cells x {n_genes} genes in {t_sim:.2f} s = {sim_rate:.3g} counts/s")
    print(
        f"numpy raw NB     : {n} draws in {t_one:.2f} s as one call, {t_chunk:.2f} s per well; "
        f"best {raw_rate:.3g} draws/s"
    )
    print(f"wrote {path}")
    print(
        f"simulator: {sim_rate:.3g} counts/s = {ratio:.2f} x raw NB rate "
        f"({'meets' if ratio >= 0.5 else 'below'} the 0.5 aim), {t_sim:.2f} s for {n_cells} x {n_genes}"
    )
    return result


if __name__ == "__main__":
    main()
