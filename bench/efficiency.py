"""Sample efficiency: the budget each strategy needs to reach what ``random`` (or ``dose_grid``) reaches with 200.

    python -m bench.efficiency [--quick] [--seeds 5] [--budget 200] [--world default]
                               [--strategies random,dose_grid,...] [--workers N] [--no-run] [--no-ceiling]

A comparison through :mod:`loop.compare` (``plan`` / ``execute`` /
``summarise``: every strategy x seed is an ordinary run folder, run as
parallel Ray tasks, seeds paired) in ``bench/results/efficiency-study/``
(gitignored). It is resumable: finished runs are skipped, so rerunning the
same command after an interruption only does what is left; runs are queued
seed by seed, so an interrupted study has whole seeds. ``--no-run`` only
summarises the runs already finished.

For every strategy and seed, the budget at which its identifiability first
reaches the level the reference has after its whole budget, and its ratio to
the reference's own need, summarised over seeds by the geometric mean with a
95 % bootstrap interval (:func:`loop.stats.headline`); the same for the
aggregate risk (lower is better: the budget at which the risk first falls to
the reference's final risk; computed as ``headline`` on ``-risk``). The
references are ``random`` and, separately, ``dose_grid``. Only seeds that
every strategy has finished are used, so the comparison stays paired.

The ceiling (:mod:`bench.ceiling`: the default strategy's criterion at the
world's true parameters; ``--no-ceiling`` skips it) runs beside them in
``<study>-ceiling/`` and each strategy is also reported as its share of the
distance from random to it, ``(1 − r) / (1 − r_ceiling)``.

Target: the best strategy needs <= 1/2 of random's budget for random's
identifiability and for random's risk (aim 1/3). The full default (7 strategies x 5 seeds, default
world, budget 200) takes 30-60 min on 2 cores, hours on a loaded machine:
it is not part of ``python -m bench`` unless asked for (``--only efficiency``
or ``--all``). ``--quick``: small world, 2 seeds, budget 20, ``random`` and
``dose_grid``, 2 members of at most 40 steps, in a temporary folder. Prints the table and a one-line
summary last and writes ``bench/results/efficiency.json`` (directory
overridable with ``CSLAB_BENCH_RESULTS``; ``--quick`` writes to ``bench/results/quick/``
instead).
"""

from __future__ import annotations

import argparse
import fcntl
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import ceiling, write_result
from loop import compare
from loop.config import RunConfig
from loop.report import find_runs, load_run, results_frame
from loop.stats import Headline, headline, needs_table

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "bench" / "results" / "efficiency-study"
STRATEGIES = "random,dose_grid,uncertainty,disagreement,eig,nipv,fisher,cost_aware"
REFERENCES = ("random", "dose_grid")
#: name -> column where higher is better. ``risk_training_controls`` is the risk's definition until 2026-12-08
#: (against the training data's controls), reported beside the current one.
METRICS = {"identifiability": "identifiability", "risk": "neg_risk", "risk_training_controls": "neg_risk_training"}
LABELS = {"identifiability": "ident", "risk": "risk", "risk_training_controls": "risk(train ctl)"}
TARGET, AIM = 0.5, 1 / 3
#: ``--quick`` run settings on top of world and budget: the code path in seconds, not the figure.
QUICK = {"n_members": 2, "heldout_per_axis": 2, "model_options": {"max_steps": 40, "warm_steps": 20}}


def ceiling_folder(study: Path) -> Path:
    """Where the ceiling's runs of ``study`` live (a study of their own, so ``loop.compare`` never mixes them)."""
    return study.parent / f"{study.name}-ceiling"


def paired_results(study: Path, strategies: list[str], with_ceiling: bool = False) -> tuple[pd.DataFrame, list[int]]:
    """Metrics rows of the finished runs, restricted to seeds every strategy (and the ceiling) has finished.

    Returns:
        The rows (with ``neg_risk = -risk``; the ceiling's as strategy ``ceiling``) and the complete seeds.

    Raises:
        ValueError: If no seed is finished by every strategy.
    """
    compare.summarise(study)  # writes results.parquet and summary.csv of the study, as loop.compare does
    res = pd.read_parquet(study / "results.parquet")
    res = res[res["strategy"].isin(strategies)]
    if with_ceiling:
        top = ceiling_folder(study)
        runs = [load_run(p) for p in find_runs(top)] if (top / "runs").is_dir() else []
        if runs:
            extra = results_frame(runs)
            res = pd.concat([res, extra.assign(strategy=ceiling.NAME)], ignore_index=True)
            strategies = [*strategies, ceiling.NAME]
    res = res[res["status"] != "failed"] if "status" in res else res
    done = res[res["finished"]].groupby("seed")["strategy"].nunique()
    seeds = sorted(int(s) for s in done.index[done == len(strategies)])
    if not seeds:
        raise ValueError(
            f"{study}: no seed has finished runs of every strategy ({','.join(strategies)}) yet "
            "(--strategies names the strategies to pair)"
        )
    res = res[res["seed"].isin(seeds)].copy()
    if "risk_training_controls" not in res:
        res["risk_training_controls"] = np.nan
    before = res["risk_training_controls"].isna() & res["risk"].notna()
    if before.any():  # runs scored before 2026-12-08 stored the training-controls risk as `risk`
        runs = res[before].groupby(["strategy", "seed"]).ngroups
        print(
            f"note: {runs} runs were scored before 2026-12-08: their risk is against the training data's "
            "controls (python -m bench.rescore gives both definitions)",
            file=sys.stderr,
        )
        res["risk_training_controls"] = res["risk_training_controls"].fillna(res["risk"])
    res["neg_risk"] = -res["risk"]
    res["neg_risk_training"] = -res["risk_training_controls"]
    return res, seeds


def ratio_text(h: Headline) -> str:
    """A headline ratio with its interval, or how often the strategy never reaches."""
    if h.n_reached == h.n_seeds and h.n_seeds:
        ci = "" if math.isnan(h.ratio_low) else f" [{h.ratio_low:.2f}, {h.ratio_high:.2f}]"
        return f"{h.ratio:.2f}{ci}"
    if h.n_reached == 0:
        return "never"
    return f">={h.ratio_bound:.2f} ({h.n_seeds - h.n_reached}/{h.n_seeds} never)"


def tables(res: pd.DataFrame, rng: np.random.Generator) -> dict[str, dict[str, list[Headline]]]:
    """Headline rows per metric and reference (references absent from the study are skipped)."""
    present = set(res["strategy"])
    return {
        metric: {ref: headline(res, rng, column=col, reference=ref) for ref in REFERENCES if ref in present}
        for metric, col in METRICS.items()
    }


def per_seed(res: pd.DataFrame) -> dict[str, list[dict]]:
    """Per metric, each (strategy, seed)'s budget to reach random's final level on that seed (NaN: never).

    The headline's geometric mean hides which seeds never reach; this is the table behind it.
    """
    out = {}
    for metric, col in METRICS.items():
        t = needs_table(res, column=col, reference="random")
        sign = -1.0 if col.startswith("neg_") else 1.0  # risks are stored negated (higher is better)
        out[metric] = [
            {
                "strategy": r.strategy,
                "seed": int(r.seed),
                "need": float(r.need),
                "ratio": float(r.ratio),
                "final": sign * float(r.final),
                "random_final": sign * float(r.target),
            }
            for r in t.itertuples()
        ]
    return out


def per_seed_lines(seeds_table: dict[str, list[dict]]) -> list[str]:
    """One line per (metric, non-random strategy): ``seed:need`` pairs, ``-`` for a seed that never reaches."""

    def cell(r: dict) -> str:
        return f"{r['seed']}:" + ("-" if math.isnan(r["need"]) else f"{r['need']:.0f}")

    lines = []
    for metric, rows in seeds_table.items():
        for strategy in dict.fromkeys(r["strategy"] for r in rows if r["strategy"] != "random"):
            cells = [cell(r) for r in rows if r["strategy"] == strategy]
            lines.append(f"  {LABELS[metric]:>15} {strategy:>12}: " + " ".join(cells))
    return lines


def best(rows: list[Headline], exclude: str) -> Headline | None:
    """The user strategy with the smallest ratio among those reaching on every seed (None if none does)."""
    ok = [h for h in rows if h.strategy not in (exclude, ceiling.NAME) and h.n_seeds and h.n_reached == h.n_seeds]
    return min(ok, key=lambda h: h.ratio) if ok else None


def share_of_ceiling(h: Headline, top: Headline | None) -> float:
    """How much of the distance from random (ratio 1) to the ceiling a strategy covers: ``(1 − r) / (1 − r_c)``.

    NaN without a ceiling that beats random; a strategy that does not reach on every seed uses its lower
    bound (so the share is an upper bound).
    """
    if top is None or not (top.n_reached == top.n_seeds and top.n_seeds) or not top.ratio < 1.0:
        return float("nan")
    r = h.ratio if h.n_reached == h.n_seeds and h.n_seeds else h.ratio_bound
    return float((1.0 - r) / (1.0 - top.ratio)) if np.isfinite(r) else float("nan")


def run_study(
    study: Path, strategies: list[str], seeds: int, base: RunConfig, workers: int | None, with_ceiling: bool = False
) -> list[dict]:
    """Run (or resume) the comparison's unfinished runs (and the ceiling's), seed by seed; returns the outcomes."""
    specs = compare.plan(study, strategies, seeds, base)
    specs.sort(key=lambda s: (s.config["seed"], strategies.index(s.config["strategy"])))
    t0 = time.perf_counter()

    def progress(o: dict) -> None:
        if o["status"] != "skipped":
            print(f"  [{time.perf_counter() - t0:6.0f} s] {o['run']}: {o['status']} {o.get('error', '')}", flush=True)

    study.mkdir(parents=True, exist_ok=True)
    with open(study / ".bench.lock", "w") as lock:
        try:  # two benches resuming the same folders at once would interleave their writes
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{study} is being run by another process; wait for it or use --no-run") from None
        if with_ceiling:
            specs += ceiling.ceiling_specs(ceiling_folder(study), seeds, base)
            specs.sort(key=lambda s: s.config["seed"])  # stable: each seed's strategies, then its ceiling
        return compare.execute(specs, runner=ceiling.run_any, workers=workers, on_done=progress)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.efficiency")
    ap.add_argument("--quick", action="store_true", help="small world, 2 seeds, budget 20, random and dose_grid")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per strategy (5; quick 2)")
    ap.add_argument("--budget", type=float, default=None, help="budget per run, cost units (200; quick 20)")
    ap.add_argument("--world", default=None, help="world preset (default; quick small)")
    ap.add_argument("--strategies", default=None, help=f"comma-separated ({STRATEGIES}; quick random,dose_grid)")
    ap.add_argument("--out", default=None, help=f"study folder ({STUDY.relative_to(ROOT)}; quick: a temporary one)")
    ap.add_argument("--workers", type=int, default=None, help="CPUs for local Ray (all)")
    ap.add_argument("--no-run", action="store_true", help="only summarise the runs already finished")
    ap.add_argument(
        "--ceiling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the truth-informed ceiling (bench.ceiling) and report each strategy's share of "
        "the distance from random to it (default: on; off with --quick)",
    )
    args = ap.parse_args(argv)
    q = args.quick
    with_ceiling = (not q) if args.ceiling is None else args.ceiling
    seeds = args.seeds or (2 if q else 5)
    budget = args.budget or (20.0 if q else 200.0)
    world = args.world or ("small" if q else "default")
    strategies = [s.strip() for s in (args.strategies or ("random,dose_grid" if q else STRATEGIES)).split(",")]
    if "random" not in strategies:
        raise SystemExit("--strategies must include random (the reference)")
    tmp = Path(tempfile.mkdtemp(prefix="cslab-eff-")) if q and not args.out else None
    study = Path(args.out) if args.out else (tmp / "study" if tmp else STUDY)
    t0 = time.perf_counter()
    try:
        outcomes = (
            []
            if args.no_run
            else run_study(
                study,
                strategies,
                seeds,
                RunConfig.from_dict({"budget": budget, "world": world, **(QUICK if q else {})}),
                args.workers,
                with_ceiling,
            )
        )
        try:
            res, done_seeds = paired_results(study, strategies, with_ceiling)
        except ValueError as exc:  # nothing to summarise (yet): a clear line, not a traceback
            raise SystemExit(f"error: {exc}") from None
        heads = tables(res, np.random.default_rng(0))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    wall = time.perf_counter() - t0

    final = (
        res.sort_values("round")
        .groupby(["strategy", "seed"])
        .last()
        .groupby("strategy")[["identifiability", "risk", "risk_training_controls", "spent"]]
        .mean()
    )
    cols = [(m, r) for m in METRICS for r in REFERENCES if r in heads[m]]
    print(
        f"budget to reach the reference's level at {budget:g} units, as a ratio to the reference's own need "
        f"(geometric mean over {len(done_seeds)} paired seeds {done_seeds}, 95% bootstrap CI)"
    )
    print(
        f"{'strategy':>13} " + " ".join(f"{LABELS[m] + ' vs ' + r:>27}" for m, r in cols) + f" {'final id':>8} "
        f"{'final risk':>10} {'(train ctl)':>11}"
    )
    for s in (h.strategy for h in heads["identifiability"]["random"]):
        cells = [ratio_text(heads[m][r][[h.strategy for h in heads[m][r]].index(s)]) for m, r in cols]
        print(
            f"{s:>13} " + " ".join(f"{c:>27}" for c in cells) + f" {final.loc[s, 'identifiability']:>8.3f} "
            f"{final.loc[s, 'risk']:>10.3f} {final.loc[s, 'risk_training_controls']:>11.3f}"
        )
    shares = {}
    if with_ceiling and ceiling.NAME in final.index:
        print("share of the distance from random to the ceiling (1 = as good as the truth-informed design):")
        for m in METRICS:
            rows = heads[m]["random"]
            top_c = next((h for h in rows if h.strategy == ceiling.NAME), None)
            shares[m] = {
                h.strategy: share_of_ceiling(h, top_c) for h in rows if h.strategy not in ("random", ceiling.NAME)
            }
            print(
                f"  {m:>15}: ceiling {ratio_text(top_c) if top_c else 'none'}; "
                + ", ".join(f"{k} {v:.2f}" for k, v in shares[m].items())
            )
    seeds_table = per_seed(res)
    print(f"budget to reach random's final level on each seed (seed:units; - never; of {budget:g}):")
    for line in per_seed_lines(seeds_table):
        print(line)
    failed = [o for o in outcomes if o["status"] == "failed"]
    partial = len(done_seeds) < seeds
    top = best(heads["identifiability"]["random"], "random")
    top_risk = best(heads["risk"]["random"], "random")
    top_risk_old = best(heads["risk_training_controls"]["random"], "random")
    top_grid = (
        best(heads["identifiability"]["dose_grid"], "dose_grid") if "dose_grid" in heads["identifiability"] else None
    )
    result = {
        "quick": q,
        "world": world,
        "budget": budget,
        "strategies": strategies,
        "seeds_asked": seeds,
        "seeds_used": done_seeds,
        "partial": partial,
        "failed_runs": [o["run"] for o in failed],
        "study": str(study),
        "wall_s": wall,
        "final_mean": final.reset_index().to_dict("records"),
        "headline": {m: {r: [h.__dict__ for h in rows] for r, rows in by_ref.items()} for m, by_ref in heads.items()},
        "best_identifiability_vs_random": top.__dict__ if top else None,
        "best_risk_vs_random": top_risk.__dict__ if top_risk else None,
        "best_risk_training_controls_vs_random": top_risk_old.__dict__ if top_risk_old else None,
        "best_identifiability_vs_dose_grid": top_grid.__dict__ if top_grid else None,
        "target_ratio": TARGET,
        "aim_ratio": AIM,
        "share_of_ceiling": shares,
        "per_seed": seeds_table,
    }
    path = write_result("efficiency", result, q, default=float)
    print(f"wrote {path}" + (f"; study {study}" if not tmp else ""))
    note = (
        f"{len(done_seeds)} of {seeds} seeds"
        + (" (PARTIAL)" if partial else "")
        + (f", {len(failed)} runs failed" if failed else "")
    )
    if top is None:
        closest = max(
            (h for h in heads["identifiability"]["random"] if h.strategy != "random"),
            key=lambda h: h.final_mean,
            default=None,
        )
        ref = heads["identifiability"]["random"][0]
        near = (
            (
                f"; closest {closest.strategy}: ratio {ratio_text(closest)}, final identifiability "
                f"{closest.final_mean:.3f} vs random's {ref.final_mean:.3f}"
            )
            if closest
            else ""
        )
        print(
            f"efficiency: no strategy reaches random's identifiability at {budget:g} on every seed (target <= 0.5: "
            f"missed){near}; {note}"
        )
    else:
        verdict = "meets" if top.ratio <= TARGET else f"misses by {top.ratio / TARGET:.2f}x"
        risk = f"{top_risk.strategy} {ratio_text(top_risk)}" if top_risk else "none reaches on every seed"
        risk += (
            f" (against the training data's controls: {top_risk_old.strategy} {ratio_text(top_risk_old)})"
            if top_risk_old
            else " (against the training data's controls: none reaches on every seed)"
        )
        print(
            f"efficiency: best {top.strategy} needs {ratio_text(top)} x random's budget for random's "
            f"identifiability at {budget:g} (target <= 0.5: {verdict}; aim 0.33); risk: best {risk}; {note}"
        )
    return result


if __name__ == "__main__":
    main()
