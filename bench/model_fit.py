"""Benchmark: one CSL member on the default world at budget 200 (target: <= 5 s on one core).

Run: ``OPENBLAS_NUM_THREADS=1 python -m bench.model_fit [--quick] [--preset default] [--budget 200] [--seed 0]``.
Prints the data size, cold and warm fit seconds and the identifiability index, a one-line summary last, and
writes ``bench/results/model_fit.json`` (directory overridable with ``CSLAB_BENCH_RESULTS``). ``--quick``: small
world, budget 40, at most 100 cold / 50 warm steps, written to ``bench/results/quick/`` instead.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench import write_result
from models import CSLEnsemble
from models.identifiability import score
from simulators import make_world

TARGET_S = 5.0


def random_design(space, budget: float, rng: np.random.Generator) -> list:
    """Random queries until the budget (cost units) is spent."""
    out, spent = [], 0.0
    while True:
        q = space.sample(1, rng)[0]
        c = space.cost([q])
        if spent + c > budget:
            return out
        out.append(q)
        spent += c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small world, budget 40")
    ap.add_argument("--preset", default=None, help="world preset (default; quick small)")
    ap.add_argument("--budget", type=float, default=None, help="cost units of random queries (200; quick 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--members", type=int, default=1)
    args = ap.parse_args()
    args.preset = args.preset or ("small" if args.quick else "default")
    args.budget = args.budget or (40.0 if args.quick else 200.0)
    torch.set_num_threads(1)
    world = make_world(args.preset, seed=args.seed)
    qs = random_design(world.space, args.budget, np.random.default_rng(args.seed))
    t = time.perf_counter()
    data = world.measure(qs)
    t_meas = time.perf_counter() - t
    print(f"{len(qs)} queries, cost {world.space.cost(qs):.1f}; rows {len(data)}; measure {t_meas:.2f} s")
    steps = {"max_steps": 100, "warm_steps": 50} if args.quick else {}  # quick: the code path, not the figure
    model = CSLEnsemble(world.space, n_members=args.members, seed=args.seed, **steps)
    t = time.perf_counter()
    s = model.fit(data)
    cold = s["seconds_max"]
    print(
        f"cold fit: {time.perf_counter() - t:.2f} s wall; member max {s['seconds_max']:.2f} s "
        f"(cpu {max(m['cpu_seconds'] for m in s['members']):.2f} s); "
        f"steps {[m['steps'] for m in s['members']]}"
    )
    t = time.perf_counter()
    s = model.fit(data)
    warm = s["seconds_max"]
    print(
        f"warm fit: {time.perf_counter() - t:.2f} s wall; member max {s['seconds_max']:.2f} s "
        f"(cpu {max(m['cpu_seconds'] for m in s['members']):.2f} s)"
    )
    rep = score(model, truth=world.truth)
    print(f"index {rep.index:.3f}; parts { ({k: round(v, 3) for k, v in rep.parts.items()}) }")
    result = {
        "quick": args.quick,
        "preset": args.preset,
        "budget": args.budget,
        "queries": len(qs),
        "measure_s": t_meas,
        "cold_fit_s": cold,
        "warm_fit_s": warm,
        "index": float(rep.index),
        "target_s": TARGET_S,
    }
    path = write_result("model_fit", result, args.quick)
    print(f"wrote {path}")
    verdict = "quick sizes: no" if args.quick else "meets" if cold <= TARGET_S else f"misses by {cold / TARGET_S:.2f}x"
    print(
        f"model_fit: one member on {args.preset} at budget {args.budget:g}: cold {cold:.2f} s ({verdict} the "
        f"{TARGET_S:g} s target), warm {warm:.2f} s, identifiability {rep.index:.3f}"
    )


if __name__ == "__main__":
    main()
