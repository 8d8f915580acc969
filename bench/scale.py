"""Scale: one round on the large world, and the same fits fanned out over 1 vs 2 Ray workers.

    python -m bench.scale [--quick] [--queries 48] [--steps 60] [--members 2] [--fanout-members 4]

Part 1, one round on ``make_world("large")`` (2,000 genes, 32 programs, 200
targets, 10 cell lines x 3 sites), in this process with one thread:
build the world; **measure** a space-filling batch (``--queries``, every
assay); **fit** a ``--members`` ensemble (``FitConfig.max_steps = --steps``,
cold); **score** identifiability against the truth; **propose** the next
16 queries with ``cost_aware`` (10 s limit). Each stage's wall time and its
peak resident memory above the process's memory before the stage (VmRSS
sampled every 0.05 s) are reported.

Part 2, fan-out: the same measured data, a ``--fanout-members`` ensemble
fitted cold through :func:`loop.distributed.ray_map` on one local Ray
instance with 2 CPUs (workers warmed up first, so their start-up is not
counted): once with one task in flight at a time (1 worker) and once with
every member in flight (2 workers). The ratio of the two times is the
speed-up (ideal 2 on 2 cores; less when the machine is shared).

``--quick``: small world, 16 queries, 20 steps. Prints the tables and a
one-line summary last and writes ``bench/results/scale.json`` (directory
overridable with ``CSLAB_BENCH_RESULTS``; ``--quick`` writes to ``bench/results/quick/``
instead).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench import write_result
from loop.distributed import pin_threads

ROOT = Path(__file__).resolve().parents[1]
pin_threads()  # before numpy is imported


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Stage:
    """Wall time and peak RSS above the starting RSS of a block (sampled every 0.05 s)."""

    def __init__(self, name: str, table: list[dict]) -> None:
        self.name, self.table = name, table
        self._stop = threading.Event()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self) -> Stage:
        self.before = self.peak = _rss_mb()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.table.append(
            {
                "stage": self.name,
                "seconds": seconds,
                "peak_above_mb": self.peak - self.before,
                "rss_after_mb": _rss_mb(),
            }
        )


def one_round(args: argparse.Namespace) -> tuple[list[dict], dict, object, object]:
    """Build, measure, fit, score and propose once; returns the stage table, facts, the space and the data."""
    import numpy as np
    import torch

    import acquisition
    from models import CSLEnsemble
    from models.identifiability import score
    from simulators import make_world

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    with Stage("build world", rows):
        world = make_world(args.world, seed=args.seed)
    space = world.space
    queries = acquisition.get("sobol")(time_limit_s=10.0).propose(None, space, None, args.queries, 1e9, rng)
    with Stage("measure", rows):
        data = world.measure(queries)
    with Stage("fit", rows):
        model = CSLEnsemble(space, n_members=args.members, seed=args.seed, max_steps=args.steps)
        fit = model.fit(data)
    with Stage("score", rows):
        report = score(model, data, world.truth)
    with Stage("propose", rows):
        proposed = acquisition.get("cost_aware")(time_limit_s=10.0).propose(model, space, data, 16, 1e9, rng)
    facts = {
        "genes": int(world.config.n_genes),
        "programs": int(world.config.n_programs),
        "targets": len(space.targets),
        "contexts": len(space.contexts),
        "queries": len(queries),
        "cost": float(space.cost(queries)),
        "rows": {m: list(b.X.shape) for m, b in data.modalities.items()},
        "proposed": len(proposed),
        "identifiability": float(report.index),
        "fit_steps": [m["steps"] for m in fit["members"]],
    }
    return rows, facts, space, data


def _warm(_: int) -> int:
    """Import the model code in a worker and hold it a moment, so both workers start."""
    import models.fitting  # noqa: F401

    time.sleep(1.0)
    return os.getpid()


def fan_out(args: argparse.Namespace, space: object, data: object) -> dict:
    """Fit the same cold ensemble with one task in flight, then all in flight, on a 2-CPU Ray instance."""
    import ray

    from loop.distributed import init_ray, ray_map
    from models import CSLEnsemble

    def one_at_a_time(fn: Callable, items: list) -> list:
        return [ray_map(fn, [item])[0] for item in items]

    t0 = time.perf_counter()
    started = init_ray(workers=2)
    pids = set(ray_map(_warm, [0, 1]))
    warm_s = time.perf_counter() - t0
    out = {"ray_start_and_warmup_s": warm_s, "warm_worker_pids": len(pids)}
    try:
        for label, map_fn in (("1 worker", one_at_a_time), ("2 workers", ray_map)):
            model = CSLEnsemble(space, n_members=args.fanout_members, seed=args.seed, max_steps=args.steps)
            t = time.perf_counter()
            fit = model.fit(data, map_fn=map_fn)
            out[label] = {"seconds": time.perf_counter() - t, "member_seconds": [m["seconds"] for m in fit["members"]]}
    finally:
        if started:
            ray.shutdown()
    out["speedup"] = out["1 worker"]["seconds"] / out["2 workers"]["seconds"]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.scale")
    ap.add_argument("--quick", action="store_true", help="small world, 16 queries, 20 steps")
    ap.add_argument("--world", default=None, help="world preset (large; quick small)")
    ap.add_argument("--queries", type=int, default=None, help="queries measured and fitted (48; quick 16)")
    ap.add_argument("--steps", type=int, default=None, help="FitConfig.max_steps of every fit (60; quick 20)")
    ap.add_argument("--members", type=int, default=2, help="ensemble members of the one-round fit")
    ap.add_argument("--fanout-members", type=int, default=4, help="ensemble members fanned out over Ray")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.world = args.world or ("small" if args.quick else "large")
    args.queries = args.queries or (16 if args.quick else 48)
    args.steps = args.steps or (20 if args.quick else 60)

    rows, facts, space, data = one_round(args)
    print(
        f"one round on the {args.world} world: {facts['genes']} genes, {facts['targets']} targets, "
        f"{facts['contexts']} contexts; {facts['queries']} queries (cost {facts['cost']:.1f}), "
        f"{args.members} members x {args.steps} steps"
    )
    print(f"{'stage':>12} {'seconds':>8} {'peak MB':>8} {'RSS MB':>8}")
    for r in rows:
        print(f"{r['stage']:>12} {r['seconds']:>8.2f} {r['peak_above_mb']:>8.0f} {r['rss_after_mb']:>8.0f}")
    fan = fan_out(args, space, data)
    print(
        f"fan-out: {args.fanout_members} members x {args.steps} steps on Ray (start + warm-up "
        f"{fan['ray_start_and_warmup_s']:.1f} s, not counted)"
    )
    for label in ("1 worker", "2 workers"):
        print(f"{label:>12} {fan[label]['seconds']:>8.2f} s")
    round_rows = [r for r in rows if r["stage"] != "build world"]
    round_s = sum(r["seconds"] for r in round_rows)
    result = {
        "quick": args.quick,
        "world": args.world,
        "members": args.members,
        "steps": args.steps,
        "fanout_members": args.fanout_members,
        **facts,
        "stages": rows,
        "round_s": round_s,
        "fanout": fan,
        "cpus": os.cpu_count(),
    }
    path = write_result("scale", result, args.quick)
    print(f"wrote {path}")
    worst = max(round_rows, key=lambda r: r["peak_above_mb"])
    split = "/".join(f"{r['seconds']:.1f}" for r in round_rows)
    print(
        f"scale: one round on {args.world} ({facts['genes']} genes, {facts['targets']} targets) in {round_s:.1f} s "
        f"(measure/fit/score/propose {split} s), peak +"
        f"{worst['peak_above_mb']:.0f} MB in {worst['stage']}; fan-out of {args.fanout_members} fits: 1 worker "
        f"{fan['1 worker']['seconds']:.1f} s, 2 workers {fan['2 workers']['seconds']:.1f} s = "
        f"{fan['speedup']:.2f}x faster"
    )
    return result


if __name__ == "__main__":
    main()
