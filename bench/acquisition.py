"""Acquisition speed and memory: one proposal vs pool size, batch size q and ensemble size.

    python -m bench.acquisition [--quick]

World: the default simulator world's design space (``simulators.make_world
("default")``: 16 targets, 6 contexts, 8 assays, up to triplets) with the
analytic ensemble of ``tests/acquisition/fakes.py`` sized like the default
world's readouts (8 programs, RNA 200 genes, ADT 30, morphology 48, molecular
8, spatial 200), so the numbers measure the strategies, not a model. Each
configuration runs in a fresh subprocess (one thread) and reports the wall
time of ``propose`` and its peak resident memory above the process's memory
just before the call (``ru_maxrss`` minus ``VmRSS``). Sweeps: every strategy
at pool 1e2 / 1e3 / 1e4 (q = 8, M = 8); ``eig``, ``nipv``, ``cost_aware`` at
q = 1 / 8 / 32 (pool 1e4); ``eig`` at M = 4 / 8 / 16. ``--quick`` (the
smoke test): ``eig`` at pool 1e2, ``cost_aware`` at pool 1e3, q 1. Prints a table, writes
``bench/results/acquisition.json`` (directory overridable with ``CSLAB_BENCH_RESULTS``;
``--quick`` writes to ``bench/results/quick/`` instead) and prints a one-line summary last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench import write_result
from loop.distributed import THREAD_ENV

ROOT = Path(__file__).resolve().parents[1]
FAKES = ROOT / "tests" / "acquisition" / "fakes.py"
WIDTHS = {"rna": 200, "adt": 30, "morphology": 48, "molecular": 8, "spatial": 200}
MODEL_FREE = ("random", "sobol", "dose_grid")
LIMIT_S = 10.0


def run_one(strategy: str, pool: int, q: int, members: int, seed: int = 0) -> dict:
    """One proposal in this process; returns time, peak memory and batch facts."""
    import importlib.util
    import resource
    import time

    import numpy as np
    import torch

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("acquisition_fakes", FAKES)
    fakes = importlib.util.module_from_spec(spec)
    sys.modules["acquisition_fakes"] = fakes
    spec.loader.exec_module(fakes)
    import acquisition

    try:
        from simulators import make_world

        space = make_world("default", seed=seed).space
    except ImportError:  # simulators not installed: the same sizes by hand
        from experiment_design import Context, DesignSpace, Target

        targets = [Target(f"CMP{i:02d}", "compound") for i in range(8)]
        targets += [Target(f"KD{i:02d}", "knockdown") for i in range(8)]
        space = DesignSpace(tuple(targets), tuple(Context(f"L{i}", f"S{j}") for i in range(3) for j in range(2)))
    model = fakes.BumpEnsemble(space, n_members=members, n_programs=8, modalities=WIDTHS)
    kwargs = {} if strategy in MODEL_FREE else {"pool_size": pool}
    strat = acquisition.get(strategy)(time_limit_s=LIMIT_S, **kwargs)
    rss_kb = int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1])
    t0 = time.perf_counter()
    qs = strat.propose(model, space, None, q, 1e6, np.random.default_rng(seed))
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "strategy": strategy,
        "pool": pool,
        "q": q,
        "members": members,
        "seconds": seconds,
        "peak_mb": (peak_kb - rss_kb) / 1024,
        "n": len(qs),
        "anchors": sum(space.assay(x.assay).is_anchor for x in qs),
        "cost": space.cost(qs),
    }


def configs(quick: bool) -> list[tuple[str, int, int, int]]:
    """(strategy, pool, q, members) to run."""
    if quick:  # the smoke test's sizes: the BoTorch-backed paths once (q = 8 and q = 1), a few seconds
        return [("eig", 100, 8, 8), ("cost_aware", 1000, 1, 8)]
    names = ["random", "sobol", "dose_grid", "uncertainty", "disagreement", "eig", "nipv", "discovery", "cost_aware"]
    pools = (100, 1000, 10_000)
    out = [(s, p, 8, 8) for s in names for p in pools if s not in MODEL_FREE or p == pools[0]]
    big = pools[-1]
    for q in (1, 32):
        out += [(s, big, q, 8) for s in ("eig", "nipv", "cost_aware")]
    for m in (4, 16):
        out.append(("eig", big, 8, m))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.acquisition")
    ap.add_argument("--quick", action="store_true", help="two proposals (eig, cost_aware), pools <= 1e3")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one JSON config and print the result
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*json.loads(args.one))))
        return {}
    env = dict(os.environ, **THREAD_ENV)  # BLAS, OpenMP and MKL on one thread each
    rows = []
    print(f"{'strategy':>13} {'pool':>6} {'q':>3} {'M':>3} {'seconds':>8} {'peak MB':>8} {'n':>3} {'anchors':>7}")
    for cfg in configs(args.quick):
        out = subprocess.run(
            [sys.executable, "-m", "bench.acquisition", "--one", json.dumps(cfg)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{row['strategy']:>13} {row['pool']:>6} {row['q']:>3} {row['members']:>3} {row['seconds']:>8.2f} "
            f"{row['peak_mb']:>8.1f} {row['n']:>3} {row['anchors']:>7}",
            flush=True,
        )
    result = {
        "quick": args.quick,
        "time_limit_s": LIMIT_S,
        "widths": WIDTHS,
        "rows": rows,
        "max_seconds": max(r["seconds"] for r in rows),
        "max_peak_mb": max(r["peak_mb"] for r in rows),
    }
    path = write_result("acquisition", result, args.quick)
    print(f"wrote {path}")
    worst_t = max(rows, key=lambda r: r["seconds"])
    worst_m = max(rows, key=lambda r: r["peak_mb"])
    print(
        f"acquisition: {len(rows)} proposals; slowest {worst_t['strategy']} pool {worst_t['pool']} q {worst_t['q']} "
        f"{worst_t['seconds']:.2f} s (limit {LIMIT_S:.0f} s); peak memory {worst_m['peak_mb']:.0f} MB "
        f"({worst_m['strategy']} pool {worst_m['pool']} q {worst_m['q']} M {worst_m['members']}; limit 1024 MB)"
    )
    return result


if __name__ == "__main__":
    main()
