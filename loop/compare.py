"""``python -m loop.compare``: every strategy × seed as its own run, then one comparison report.

Example::

    python -m loop.compare --strategies random,eig --seeds 5 --budget 200 --world small --out studies/cmp

writes ``DIR/runs/<strategy>-seed<k>/`` (ordinary run folders, one Ray task
each, run in parallel), ``DIR/results.parquet`` (every metrics row with
``strategy``, ``seed``, ``finished`` and ``status``; failed runs are kept
there, marked, and left out of every mean), ``DIR/summary.csv`` (the headline
table, see :mod:`loop.stats`) and ``DIR/report.html`` (:mod:`loop.report`).
Rerunning the same command resumes: finished runs (their folder's
``checkpoints/finished.json``: budget spent, or nothing more to propose) are
skipped, failed and unfinished ones continue where they stopped
(``Study.open``). A run's state is its folder's alone
(:meth:`loop.rounds.RoundStore.state`); ``DIR/status.json`` is the log of
what each attempt here ended with (outcome, wall time, error). Seed ``k`` is the same
world for every strategy, so seeds are paired.

Exit codes: 0 every run finished; 1 some run failed (the others and the
report are still written); 2 bad arguments or a run folder made with other
settings; 130 interrupted (rerun the command to resume).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loop.config import IDENTITY_KEYS, RunConfig, normalise
from loop.remote import WorkingCopy, display, join, working_copy
from loop.report import STATUS_FILE, find_runs, load_run, render, results_frame, scored_results
from loop.rounds import RoundStore, RunState, is_run_folder
from loop.stats import REFERENCE, headline, headline_frame, model_ranking
from loop.storage import read_json, write_bytes, write_json, write_table

#: Per run: every attempt at it (``node``, ``host``, ``pid``, ``started``); a retried run has several.
ATTEMPTS_FILE = "attempts.json"
#: Ray retries a run whose worker or node died this often (it resumes from its last finished step).
RUN_RETRIES = 3


@dataclass(frozen=True)
class RunSpec:
    """One strategy × seed run of a comparison.

    Attributes:
        root: Its run folder, ``DIR/runs/<strategy>-seed<k>`` (on shared storage: the driver's copy).
        config: Its :class:`RunConfig` as a dict (picklable for Ray).
        location: Where the run lives when the study is on shared storage
            (``s3://bucket/study/runs/<strategy>-seed<k>``); None when ``root`` is it.
    """

    root: Path
    config: dict
    location: str | None = None

    @property
    def name(self) -> str:
        """``<strategy>-seed<k>``."""
        return self.root.name


def check_arguments(strategies: list[str], seeds: int, models: list[str] | None = None) -> None:
    """Raise ValueError for no strategies (or models), a repeated one, or fewer than one seed."""
    if not strategies:
        raise ValueError("--strategies is empty; give a comma-separated list, e.g. random,eig")
    for flag, names in (("--strategies", strategies), ("--models", models or [])):
        if len(set(names)) != len(names):
            raise ValueError(f"{flag} repeats a name: {','.join(names)}")
    if models is not None and not models:
        raise ValueError("--models is empty; give a comma-separated list, e.g. csl,additive,linear")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")


def plan(
    out: str | Path,
    strategies: list[str],
    seeds: int,
    base: RunConfig,
    location: str | None = None,
    models: list[str] | None = None,
) -> list[RunSpec]:
    """The runs of a comparison, checking any existing run folder against them.

    Args:
        out: Study folder (the driver's copy when the study is on shared storage).
        strategies: Strategy names.
        seeds: Number of seeds (0 .. seeds-1).
        base: Settings shared by every run (strategy and seed are overridden).
        location: The study's storage URI, when it has one (:mod:`loop.remote`).
        models: Model names, each run with every strategy (folders ``<model>-<strategy>-seed<k>``);
            None: the base settings' model only (folders ``<strategy>-seed<k>``).

    Raises:
        ValueError: No strategies, fewer than one seed, a repeated strategy or model, or
            an existing run folder made with different settings.
    """
    check_arguments(strategies, seeds, models)
    specs = []
    for m, s, k in ((m, s, k) for m in models or [None] for s in strategies for k in range(seeds)):
        # the config's model options are for the config's model; the others run with their defaults
        model = {} if m is None else {"model": m, "model_options": base.model_options if m == base.model else {}}
        cfg = RunConfig.from_dict({**base.to_dict(), "strategy": s, "seed": k, **model}).to_dict()
        root = Path(out) / "runs" / f"{m + '-' if m else ''}{s}-seed{k}"
        if is_run_folder(root):
            stored = {**RunConfig().to_dict(), **normalise(read_json(RoundStore(root).config_path).get("config", {}))}
            bad = [key for key in IDENTITY_KEYS if stored.get(key) != cfg[key]]
            if bad:
                raise ValueError(
                    f"{root} was made with {', '.join(f'{b}={stored.get(b)!r}' for b in bad)}, not "
                    f"{', '.join(f'{b}={cfg[b]!r}' for b in bad)}; use another --out or the same "
                    "settings"
                )
        specs.append(RunSpec(root, cfg, str(join(location, "runs", root.name)) if location else None))
    return specs


def is_finished(root: Path) -> bool:
    """True when the run folder says it ended normally (:meth:`~loop.rounds.RoundStore.state`)."""
    return is_run_folder(root) and RoundStore(root).state() is RunState.FINISHED


def _mark_lost(spec: RunSpec, exc: BaseException) -> None:
    """Record in the run folder that every attempt of the run was lost (its process or node died)."""
    try:
        with working_copy(spec.location or spec.root) as copy:
            if is_run_folder(copy.folder):
                RoundStore(copy.folder).mark_failed(exc)
                copy.save()
    except OSError as err:  # the storage is unreachable too: status.json still has the outcome
        print(f"warning: could not record the failure of {spec.name} in its folder: {err}", file=sys.stderr)


def _record(outcome: dict, study: Path) -> None:
    """Add a run's outcome to the study's ``status.json`` (driver only, so no concurrent writers)."""
    path = study / STATUS_FILE
    status = read_json(path) if path.is_file() else {}
    status[outcome["run"]] = {k: v for k, v in outcome.items() if k not in ("run", "traceback")}
    write_json(path, status)


def run_one(spec: RunSpec, prepare: Callable[[object], None] | None = None) -> dict:
    """Run or resume one study in this process (the body of a Ray task).

    The oracle and the ensemble fits run in the task's own process
    (``local_oracle=True``, ``fit_map=map``): the runs are the parallel unit, so
    a task starts no nested actors or tasks that would queue behind the other
    runs for a CPU (a blocked run frees its CPU, and Ray hands it to the next
    run, not to the blocked run's fits).

    Args:
        spec: The run.
        prepare: Called with the opened :class:`~loop.study.Study` before it runs (e.g. the
            benchmark's ceiling swaps in its strategy).

    Returns:
        ``{"run", "rounds", "identifiability"}`` of the finished run.
    """
    import torch

    from loop.study import Study  # imported here: it needs the model and strategy packages

    torch.set_num_threads(1)
    with working_copy(spec.location or spec.root) as copy:
        kwargs = {"local_oracle": True, "fit_map": map, "save": copy.save}
        if is_run_folder(copy.folder):
            study = Study.open(copy.folder, expect=spec.config, **kwargs)
        else:
            study = Study.create(copy.folder, RunConfig.from_dict(spec.config), **kwargs)
        _note_attempt(copy.folder)
        if prepare is not None:
            prepare(study)
        study.store.clear_failed()
        try:
            metrics = study.run()
        except Exception as exc:  # recorded in the run folder (its one state), then reported by _guarded
            study.store.mark_failed(exc)
            copy.save()
            raise
    last = metrics.iloc[-1] if len(metrics) else None
    return {
        "run": spec.name,
        "rounds": len(metrics),
        "node": _node(),
        "identifiability": float(last["identifiability"]) if last is not None else float("nan"),
    }


def _node() -> str:
    """The Ray node this process runs on (its host name outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else socket.gethostname()


def _note_attempt(folder: Path) -> None:
    """Append this attempt (node, host, time) to the run's ``attempts.json``: where it ran, and how often."""
    path = folder / ATTEMPTS_FILE
    attempts = read_json(path) if path.is_file() else []
    attempts.append(
        {
            "node": _node(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    write_json(path, attempts)


def _guarded(runner: Callable[[RunSpec], dict], spec: RunSpec) -> dict:
    """``runner(spec)``, turning an exception into a ``failed`` outcome (one bad run must not stop the rest)."""
    t0 = time.perf_counter()
    try:
        out = {"status": "finished", **runner(spec)}
    except Exception as exc:  # noqa: BLE001 - reported per run, with its traceback, by the caller
        out = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    return {"run": spec.name, **out, "wall_s": time.perf_counter() - t0}


def _execute_on_ray(
    todo: list[RunSpec],
    runner: Callable[[RunSpec], dict],
    workers: int | None,
    address: str | None,
    done: Callable[[dict, RunSpec], None],
) -> None:
    """Run ``todo`` as Ray tasks (one CPU each), calling ``done`` with each outcome as it arrives."""
    import ray

    from loop.distributed import init_ray

    started = init_ray(address, workers)
    try:
        # A run's own errors come back as a "failed" outcome (_guarded); Ray retries only a run whose
        # worker or node died, and the retry resumes the run from its last finished step. SPREAD puts
        # the runs on as many nodes as the cluster has (Ray's default packs a node before the next).
        task = ray.remote(num_cpus=1, max_retries=RUN_RETRIES, scheduling_strategy="SPREAD")(_guarded)
        by_ref = {task.remote(runner, spec): spec for spec in todo}
        pending = list(by_ref)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            spec = by_ref[ready[0]]
            try:
                outcome = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # lost RUN_RETRIES + 1 times: report it, keep the others
                outcome = {
                    "run": spec.name,
                    "status": "failed",
                    "error": f"{type(exc).__name__}: {exc}",
                    "wall_s": float("nan"),
                }
                _mark_lost(spec, exc)
            done(outcome, spec)
    finally:
        if started:
            ray.shutdown()


def execute(
    specs: list[RunSpec],
    runner: Callable[[RunSpec], dict] = run_one,
    use_ray: bool = True,
    workers: int | None = None,
    address: str | None = None,
    on_done: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run the unfinished specs (Ray tasks, one CPU each, in parallel), skipping finished ones.

    Args:
        specs: Runs to do.
        runner: Picklable callable doing one run (default :func:`run_one`).
        use_ray: False runs them one after another in this process.
        workers: CPUs of a local Ray instance (default all).
        address: Ray cluster to join instead.
        on_done: Called with each outcome as it arrives.

    Returns:
        One outcome per spec: ``run``, ``status`` (``skipped``, ``finished``
        or ``failed``), ``error`` when failed, ``wall_s``.
    """
    outcomes, todo = [], []

    def done(outcome: dict, spec: RunSpec) -> None:
        outcomes.append(outcome)
        if outcome["status"] != "skipped":
            _record(outcome, spec.root.parent.parent)
        if on_done:
            on_done(outcome)

    for spec in specs:
        if is_finished(spec.root):
            done({"run": spec.name, "status": "skipped", "wall_s": 0.0}, spec)
        else:
            todo.append(spec)
    if not todo:
        return outcomes
    if not use_ray:
        for spec in todo:
            done(_guarded(runner, spec), spec)
        return outcomes
    _execute_on_ray(todo, runner, workers, address, done)
    return outcomes


def summarise(out: str | Path, seed: int = 0) -> pd.DataFrame:
    """Write ``results.parquet`` and ``summary.csv`` of a study folder; returns the summary.

    The summary ranks the models on every axis when there are several
    (:func:`loop.stats.model_ranking`); otherwise it is the headline table when
    ``random`` is among the strategies, else each strategy's final
    identifiability (mean, sd over seeds).
    """
    out = Path(out)
    runs = [load_run(p) for p in find_runs(out)]
    results = results_frame(runs)
    write_table(out / "results.parquet", results)
    results = scored_results(results)
    if not len(results):
        raise ValueError(f"{out}: every run with a scored round failed; nothing to summarise")
    if results["model"].nunique() > 1:
        summary = model_ranking(results)
    elif REFERENCE in set(results["strategy"]):
        summary = headline_frame(headline(results, np.random.default_rng(seed)))
    else:
        last = results.sort_values("round").groupby(["strategy", "seed"]).last().reset_index()
        summary = last.groupby("strategy")["identifiability"].agg(["count", "mean", "std"]).reset_index()
        summary.columns = ["strategy", "n_seeds", "final_identifiability", "final_identifiability_sd"]
    write_bytes(out / "summary.csv", summary.to_csv(index=False).encode())
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="python -m loop.compare", description="Compare acquisition strategies over seeds; resumable."
    )
    p.add_argument("--strategies", required=True, help="comma-separated strategy names, e.g. random,eig")
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated models, each run with every strategy and ranked in the report, "
        "e.g. csl,mean,additive,linear (default: the config's model, csl)",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per strategy, 0 .. N-1 (3)")
    p.add_argument("--budget", type=float, default=None, help=f"budget per run, cost units ({d.budget:g})")
    p.add_argument("--world", default=None, help=f"simulator preset small|default|large ({d.world})")
    p.add_argument("--batch-size", type=int, default=None, help=f"queries per round ({d.batch_size})")
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--workers", type=int, default=None, help="CPUs for local Ray (all)")
    p.add_argument("--address", default=None, help="join an existing Ray cluster at ADDR")
    p.add_argument("--config", default=None, metavar="FILE", help="TOML or JSON with further run settings")
    p.add_argument("--no-recovery", action="store_true", help="skip the model-vs-truth section of the report")
    p.add_argument(
        "--no-report",
        action="store_true",
        help="write results.parquet and summary.csv but no report.html (render it later: python -m loop.report DIR)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = RunConfig.from_file(args.config) if args.config else {}
        flags = {"budget": args.budget, "world": args.world, "batch_size": args.batch_size}
        settings.update({k: v for k, v in flags.items() if v is not None})  # flags win over --config
        base = RunConfig.from_dict(settings)
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        models = None if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
        check_arguments(strategies, args.seeds, models)  # before any storage is touched
        with working_copy(args.out, read_only=("runs/",)) as copy:
            return _study(args, copy, strategies, base, models)
    except (ValueError, OSError) as exc:  # bad arguments or settings; unreachable or refused storage
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _study(
    args: argparse.Namespace, copy: WorkingCopy, strategies: list[str], base: RunConfig, models: list[str] | None
) -> int:
    """Run the comparison in the study folder ``copy`` stands for; returns the exit code."""
    specs = plan(copy.folder, strategies, args.seeds, base, location=args.out if copy.remote else None, models=models)
    for spec in specs:
        RunConfig.from_dict(spec.config).validate()
    if args.address and not copy.remote:
        print(
            f"note: each run writes {args.out}/runs/... on the node that runs it; on a cluster without a shared "
            "filesystem give --out a storage URI (s3://bucket/study, gs://...) so the driver sees every run",
            file=sys.stderr,
        )
    t0, n = time.perf_counter(), len(specs)
    seen = []

    def progress(o: dict) -> None:
        seen.append(o)
        copy.save()  # status.json
        if args.quiet:
            return
        extra = {
            "finished": f"{o.get('rounds', '?')} rounds, identifiability {o.get('identifiability', np.nan):.3f}",
            "skipped": "already finished",
            "failed": o.get("error", ""),
        }[o["status"]]
        print(f"[{len(seen)}/{n}] {o['run']} {o['status']}: {extra} ({o['wall_s']:.0f} s)", flush=True)

    try:
        outcomes = execute(specs, workers=args.workers, address=args.address, on_done=progress)
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume ({display(args.out)})", file=sys.stderr)
        return 130
    failed = [o for o in outcomes if o["status"] == "failed"]
    for o in failed:
        print(f"run {o['run']} failed:\n{o.get('traceback', o['error'])}", file=sys.stderr)
    copy.refresh()  # what the runs wrote to the storage
    try:
        summary = summarise(copy.folder)
        if not args.no_report:
            render(copy.folder, recovery=None if args.no_recovery else _default_recovery())
    except ValueError as exc:
        print(f"error: {str(exc).replace(str(copy.folder), display(args.out))}", file=sys.stderr)
        return 1
    print(summary.to_string(index=False))
    where = "no report (--no-report)" if args.no_report else f"report: {display(join(args.out, 'report.html'))}"
    print(f"{n - len(failed)}/{n} runs finished in {time.perf_counter() - t0:.0f} s; {where}")
    return 1 if failed else 0


def _default_recovery() -> Callable:
    from loop.recovery import checkpoint_recovery

    return checkpoint_recovery


if __name__ == "__main__":
    sys.exit(main())
