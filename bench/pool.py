"""Pool mode: does smart acquisition still beat random when replaying measured data?

A small-world screen is exported with ``simulators.export`` (150 conditions ×
2 replicates, scRNA / molecular / CITE-seq), then replayed through the lab
adapter (``--oracle lab``) by ``random`` and by smart strategies over seeds.
Without truth the index is the practical one (posterior contraction, Fisher
spectrum, held-out likelihood). Prints the final index and risk per strategy
(mean over seeds, and the paired difference to random) and writes
``bench/results/pool.json``.

    python -m bench.pool [--quick] [--seeds 3] [--budget 40]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns the summary written to pool.json."""
    p = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (2 seeds, budget 12)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=40.0)
    p.add_argument("--strategies", default="random,eig,cost_aware")
    args = p.parse_args(argv)
    seeds, budget, n = (2, 12.0, 40) if args.quick else (args.seeds, args.budget, 150)
    strategies = args.strategies.split(",")

    from loop.config import RunConfig
    from loop.distributed import init_ray
    from loop.study import Study
    from simulators.export import main as export_main

    init_ray(workers=2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        screen = Path(tmp) / "screen.h5ad"
        export_main(
            [
                "--world",
                "small",
                "--design",
                "random",
                "--n",
                str(n),
                "--out",
                str(screen),
                "--seed",
                "0",
                "--assays",
                "scrna,molecular,cite_seq",
                "--replicates",
                "2",
            ]
        )
        for seed in range(seeds):
            for strategy in strategies:
                cfg = RunConfig(
                    oracle="lab",
                    data=str(screen),
                    budget=budget,
                    batch_size=6,
                    n_members=3,
                    strategy=strategy,
                    seed=seed,
                    initial_size=6,
                    heldout_per_axis=4,
                )
                m = Study.create(Path(tmp) / f"{strategy}-{seed}", cfg).run()
                rows.append(
                    {
                        "strategy": strategy,
                        "seed": seed,
                        "identifiability": float(m.identifiability.iloc[-1]),
                        "risk": float(m.risk.iloc[-1]),
                    }
                )
                print(
                    f"{strategy:>12} seed {seed}: identifiability {rows[-1]['identifiability']:.3f}  "
                    f"risk {rows[-1]['risk']:.3f}",
                    flush=True,
                )
    summary = {}
    base = {r["seed"]: r for r in rows if r["strategy"] == "random"}
    print(f"\n{'strategy':>12} {'ident':>7} {'risk':>7} {'Δident vs random':>17} {'Δrisk vs random':>16}")
    for s in strategies:
        mine = [r for r in rows if r["strategy"] == s]
        d_id = [r["identifiability"] - base[r["seed"]]["identifiability"] for r in mine]
        d_risk = [r["risk"] - base[r["seed"]]["risk"] for r in mine]
        summary[s] = {
            "identifiability": float(np.mean([r["identifiability"] for r in mine])),
            "risk": float(np.mean([r["risk"] for r in mine])),
            "delta_identifiability": float(np.mean(d_id)),
            "delta_risk": float(np.mean(d_risk)),
            "seeds_better": int(sum(d > 0 for d in d_id)),
        }
        print(
            f"{s:>12} {summary[s]['identifiability']:7.3f} {summary[s]['risk']:7.3f} "
            f"{summary[s]['delta_identifiability']:+17.3f} {summary[s]['delta_risk']:+16.3f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {"seeds": seeds, "budget": budget, "conditions": n, "rows": rows, "summary": summary}
    (RESULTS / "pool.json").write_text(json.dumps(out, indent=2))
    best = max((s for s in strategies if s != "random"), key=lambda s: summary[s]["delta_identifiability"])
    print(
        f"pool: best {best} identifiability {summary[best]['identifiability']:.3f} vs random "
        f"{summary['random']['identifiability']:.3f} (better on {summary[best]['seeds_better']}/{seeds} seeds), "
        f"risk {summary[best]['risk']:.3f} vs {summary['random']['risk']:.3f}"
    )
    return out


if __name__ == "__main__":
    main()
