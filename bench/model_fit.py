"""Benchmark: one CSL member on the default world at budget 200 (target: <= 5 s on one core).

Run: ``OPENBLAS_NUM_THREADS=1 python bench/model_fit.py [--preset default] [--budget 200] [--seed 0]``.
Prints the data size, cold and warm fit seconds and the identifiability index.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from models import CSLEnsemble
from models.identifiability import score
from simulators import make_world


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
    ap.add_argument("--preset", default="default")
    ap.add_argument("--budget", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--members", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    world = make_world(args.preset, seed=args.seed)
    qs = random_design(world.space, args.budget, np.random.default_rng(args.seed))
    t = time.perf_counter()
    data = world.measure(qs)
    t_meas = time.perf_counter() - t
    print(f"{len(qs)} queries, cost {world.space.cost(qs):.1f}; rows {len(data)}; measure {t_meas:.2f} s")
    model = CSLEnsemble(world.space, n_members=args.members, seed=args.seed)
    t = time.perf_counter()
    s = model.fit(data)
    print(f"cold fit: {time.perf_counter() - t:.2f} s wall; member max {s['seconds_max']:.2f} s "
          f"(cpu {max(m['cpu_seconds'] for m in s['members']):.2f} s); "
          f"steps {[m['steps'] for m in s['members']]}")
    t = time.perf_counter()
    s = model.fit(data)
    print(f"warm fit: {time.perf_counter() - t:.2f} s wall; member max {s['seconds_max']:.2f} s "
          f"(cpu {max(m['cpu_seconds'] for m in s['members']):.2f} s)")
    rep = score(model, truth=world.truth)
    print(f"index {rep.index:.3f}; parts {({k: round(v, 3) for k, v in rep.parts.items()})}")


if __name__ == "__main__":
    main()
