"""End to end: wall time, stage breakdown and peak memory of ``python -m loop.run --budget 200``.

    python -m bench.e2e [--quick] [--budget 200] [--world default] [--strategy cost_aware]

Runs ``python -m loop.run --budget B --world W --out TMP --quiet`` as a
subprocess (``OPENBLAS_NUM_THREADS=1``) and, while it runs, samples every
0.2 s the resident memory (``VmRSS`` in ``/proc/<pid>/status``) of the run
and all its descendants (none for the default run, which starts no Ray; the
raylet, GCS and Ray workers of a run that does);
a process once seen is followed even after it is re-parented. The peak is the
largest per-sample *sum*, so shared pages (Ray's object store, torch's
libraries) are counted once per process that maps them: an upper bound. The
peak of the summed PSS (``/proc/<pid>/smaps_rollup``, shared pages split
between the processes that map them; sampled once a second) is reported
beside it: the memory the run really occupies.

From the run's ``metrics.parquet`` it reads the stage seconds per round (fit,
score, acquire, measure) and their totals; the acquisition share of a round
is ``acquire_s / wall_s`` of the rounds that use a strategy (round 0 is the
fixed initial design). In the same invocation, before the runs, it times
in one fresh interpreter the start and the import of the loop's modules,
then ``ray.init(include_dashboard=False)`` + ``ray.shutdown()`` through
``loop.distributed.init_ray`` (what a run that uses Ray pays once). A run
starts Ray on its first per-member fit, so Ray's start is inside that fit's
time. The remainder ``wall - stages - imports - Ray shutdown`` (Ray only for
a run that started it) is the writes, the held-out stress sets measured once
at the start, and report.html (``--quick`` runs render no report and time
the imports without it).

In the same invocation it runs the loop a second time on the previous
design, one Ray task and one torch process per ensemble member
(``[model] batched = false``), and prints the ratios of wall time, fit time
and memory (``--no-baseline`` skips it). Each run's ledger digest (SHA-256 of
its ledger shards) is printed: the same seed gives the same digest on every
run of the same code path (``tests/loop/test_study.py`` checks it under load).

Targets: wall <= 60 s (aim 40 s), peak PSS <= 1 GB, acquisition <= 30 % of a
round. ``--quick``: small world, budget 20, 2 members of at most 40 steps,
2 held-out queries per axis, no report. Prints a table and a one-line
summary last and writes ``bench/results/e2e.json`` (directory overridable
with ``CSLAB_BENCH_RESULTS``; ``--quick`` writes to ``bench/results/quick/`` instead).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import write_result
from loop.distributed import THREAD_ENV

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, **THREAD_ENV)
TARGET_WALL_S, AIM_WALL_S, TARGET_MEM_GB, TARGET_ACQ_SHARE = 60.0, 40.0, 1.0, 0.30
STAGES = ("fit_s", "score_s", "acquire_s", "measure_s")


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from ``/proc/<pid>/stat``."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:  # the process ended while we looked
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def _rss_kb(pid: int) -> int:
    """``VmRSS`` of a process in KiB (0 if it is gone or a kernel thread)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """Proportional set size in KiB (shared pages split between the processes mapping them; 0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Samples the summed RSS of a process tree in a background thread.

    Args:
        pid: Root of the tree.
        interval_s: Seconds between samples.
    """

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.seen: set[int] = {pid}
        self.peak_kb, self.peak_procs, self.samples, self.peak_pss_kb = 0, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        kids = _children()
        stack = list(self.seen)
        while stack:  # descendants of the root and of every process seen before (re-parented daemons)
            for c in kids.get(stack.pop(), []):
                if c not in self.seen:
                    self.seen.add(c)
                    stack.append(c)
        alive = [p for p in self.seen if os.path.exists(f"/proc/{p}")]
        rss = [_rss_kb(p) for p in alive]
        total = sum(rss)
        self.samples += 1
        if total > self.peak_kb:
            self.peak_kb, self.peak_procs = total, sum(r > 0 for r in rss)
        if self.samples % 5 == 1:  # PSS is dearer to read: once a second
            self.peak_pss_kb = max(self.peak_pss_kb, sum(_pss_kb(p) for p in alive))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def time_startup(report: bool = True) -> tuple[float, float, float]:
    """Seconds a fresh interpreter takes to import the loop, and then to start and stop a local Ray.

    One interpreter times all three: the imports (what ``python -m loop.run`` pays first), then
    ``init_ray()`` (local, dashboard off) and ``ray.shutdown()``.

    Args:
        report: The runs render their report (``loop.report`` and matplotlib are imported too).

    Returns:
        ``(imports_s, ray_start_s, ray_shutdown_s)``.
    """
    modules = "loop.run, loop.study" + (", loop.report" if report else "")
    code = (
        f"import time; import {modules}; t1 = time.perf_counter(); import json, ray; "
        "from loop.distributed import init_ray; t2 = time.perf_counter(); init_ray(); t3 = time.perf_counter(); "
        "ray.shutdown(); t4 = time.perf_counter(); print(json.dumps([t4 - t1, t3 - t2, t4 - t3]))"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after_imports, start_s, stop_s = json.loads(out.stdout.strip().splitlines()[-1])
    return wall - after_imports, start_s, stop_s  # the interpreter's start and the imports: what a run pays


#: ``--quick`` run settings (a ``--config`` file): the code path in seconds, not the figure.
QUICK_CONFIG = "n_members = 2\nheldout_per_axis = 2\n"
QUICK_MODEL = {"max_steps": 40, "warm_steps": 20}


def config_text(quick: bool, batched: bool) -> str:
    """The ``--config`` file of a run: quick sizes, and the earlier per-member fit for the baseline."""
    model = {**(QUICK_MODEL if quick else {}), **({} if batched else {"batched": False})}
    lines = [QUICK_CONFIG if quick else "", "[model_options]", *(f"{k} = {json.dumps(v)}" for k, v in model.items())]
    return "\n".join(lines) + "\n"


def ledger_digest(run: Path) -> str:
    """SHA-256 over the run's ledger shards, in round order (first 16 hex digits)."""
    h = hashlib.sha256()
    for shard in sorted((run / "ledger").glob("round-*.parquet")):
        h.update(shard.read_bytes())
    return h.hexdigest()[:16]


def run_loop(args: argparse.Namespace, out: Path, batched: bool = True) -> dict:
    """Run ``loop.run`` as a subprocess while sampling its process tree's memory."""
    cmd = [
        sys.executable,
        "-m",
        "loop.run",
        "--budget",
        f"{args.budget:g}",
        "--world",
        args.world,
        "--strategy",
        args.strategy,
        "--out",
        str(out),
        "--quiet",
        *(["--no-report"] if args.quick else []),  # quick: the fit paths, not the report (tested elsewhere)
    ]
    config = out.parent / f"{out.name}.toml"
    config.write_text(config_text(args.quick, batched))
    cmd += ["--config", str(config)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemory(proc.pid) as mem:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{stderr[-2000:]}")
    return {
        "command": " ".join(["python", *cmd[1:]]),
        "wall_s": wall,
        "peak_rss_gb": mem.peak_kb / 2**20,
        "peak_pss_gb": mem.peak_pss_kb / 2**20,
        "loadavg_1min_after": os.getloadavg()[0],
        "peak_processes": mem.peak_procs,
        "processes_seen": len(mem.seen),
        "memory_samples": mem.samples,
        "summary_line": stdout.strip().splitlines()[-1] if stdout.strip() else "",
    }


def stage_breakdown(run: Path) -> dict:
    """Per-round and total stage seconds and the acquisition share, from ``metrics.parquet``."""
    import pandas as pd

    m = pd.read_parquet(run / "metrics.parquet").sort_values("round")
    if not (run / "checkpoints" / "finished.json").is_file():
        raise RuntimeError(f"{run}: no checkpoints/finished.json; the run did not end normally")
    per_round = m[["round", *STAGES, "wall_s"]].to_dict("records")
    later = m[m["round"] >= 1]
    shares = (later["acquire_s"] / later["wall_s"]).to_numpy()
    return {
        "rounds": len(m),
        "spent": float(m["spent"].iloc[-1]),
        "identifiability": float(m["identifiability"].iloc[-1]),
        "per_round": per_round,
        "totals": {s: float(m[s].sum()) for s in (*STAGES, "wall_s")},
        "acq_share_total": float(later["acquire_s"].sum() / later["wall_s"].sum()) if len(later) else 0.0,
        "acq_share_max": float(shares.max()) if len(shares) else 0.0,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e")
    ap.add_argument("--quick", action="store_true", help="small world, budget 20, 2 members, 40 steps")
    ap.add_argument("--budget", type=float, default=None, help="budget, cost units (200; quick 20)")
    ap.add_argument("--world", default=None, help="world preset (default; quick small)")
    ap.add_argument("--strategy", default="cost_aware")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run on the earlier per-member fit path")
    args = ap.parse_args(argv)
    args.budget = args.budget or (20.0 if args.quick else 200.0)
    args.world = args.world or ("small" if args.quick else "default")

    imports_s, ray_start_s, ray_stop_s = time_startup(report=not args.quick)
    paths = {"batched": True} if args.no_baseline else {"batched": True, "per_member": False}
    results = {}
    for name, batched in paths.items():
        print(f"-- {name}: {'ensemble fitted as one batched computation' if batched else 'one Ray task per member'}")
        results[name] = measure(args, batched, imports_s, ray_stop_s)
    new = results["batched"]
    if "per_member" in results:
        old = results["per_member"]
        print(
            f"ratio batched / per-member (same run): wall {new['wall_s'] / old['wall_s']:.2f}, fit "
            f"{new['totals']['fit_s'] / old['totals']['fit_s']:.2f}, peak PSS "
            f"{new['peak_pss_gb'] / old['peak_pss_gb']:.2f}, peak RSS {new['peak_rss_gb'] / old['peak_rss_gb']:.2f}"
        )
    result = {
        "quick": args.quick,
        "budget": args.budget,
        "world": args.world,
        "strategy": args.strategy,
        **new,
        "baseline": results.get("per_member"),
        "imports_s": imports_s,
        "ray_start_s": ray_start_s,
        "ray_shutdown_s": ray_stop_s,
        "cpus": os.cpu_count(),
        "targets": {
            "wall_s": TARGET_WALL_S,
            "aim_wall_s": AIM_WALL_S,
            "peak_pss_gb": TARGET_MEM_GB,
            "acq_share": TARGET_ACQ_SHARE,
        },
    }
    path = write_result("e2e", result, args.quick)
    print(f"wrote {path}")

    def verdict(value: float, target: float) -> str:
        return "meets" if value <= target else f"misses by {value / target:.2f}x"

    print(
        f"e2e: budget {args.budget:g} on {args.world}: wall {new['wall_s']:.0f} s "
        f"(target {TARGET_WALL_S:.0f} s: {verdict(new['wall_s'], TARGET_WALL_S)}; aim {AIM_WALL_S:.0f} s), "
        f"peak PSS sum {new['peak_pss_gb']:.2f} GB ({verdict(new['peak_pss_gb'], TARGET_MEM_GB)}; RSS sum "
        f"{new['peak_rss_gb']:.2f} GB), acquisition "
        f"{100 * new['acq_share_total']:.0f}% of a round, max {100 * new['acq_share_max']:.0f}% "
        f"({verdict(new['acq_share_total'], TARGET_ACQ_SHARE)} 30%)"
    )
    return result


def measure(args: argparse.Namespace, batched: bool, imports_s: float, ray_s: float) -> dict:
    """One ``loop.run`` on one fit path: wall, memory, stage table and ledger digest (printed and returned).

    ``imports_s`` and ``ray_s`` (Ray's shutdown, timed apart) are taken off the wall time to leave the
    writes; ``ray_s`` only if the run started Ray (its process tree held more than the run itself). Ray's
    start is not: a run starts Ray on its first per-member fit, so it is inside that round's fit time.
    """
    tmp = Path(tempfile.mkdtemp(prefix="cslab-e2e-"))
    try:
        run = run_loop(args, tmp / "run", batched)
        stages = stage_breakdown(tmp / "run")
        digest = ledger_digest(tmp / "run")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t = stages["totals"]
    staged = sum(t[s] for s in STAGES)
    used_ray = run["processes_seen"] > 1
    startup_s = imports_s + (ray_s if used_ray else 0.0)
    writes_s = run["wall_s"] - staged - startup_s
    print(f"{'round':>5} {'fit s':>7} {'score s':>7} {'acq s':>7} {'meas s':>7} {'round s':>7} {'acq %':>6}")
    for r in stages["per_round"]:
        print(
            f"{r['round']:>5} {r['fit_s']:>7.2f} {r['score_s']:>7.2f} {r['acquire_s']:>7.2f} {r['measure_s']:>7.2f} "
            f"{r['wall_s']:>7.2f} {100 * r['acquire_s'] / r['wall_s']:>6.1f}"
        )
    print(
        f"{'total':>5} {t['fit_s']:>7.2f} {t['score_s']:>7.2f} {t['acquire_s']:>7.2f} {t['measure_s']:>7.2f} "
        f"{t['wall_s']:>7.2f}"
    )
    print(
        f"wall {run['wall_s']:.1f} s = stages {staged:.1f}{' (Ray starts in the first fit)' if used_ray else ''} "
        f"+ imports{' and Ray shutdown' if used_ray else ''} "
        f"{startup_s:.1f} (timed apart) + writes/held-out sets/report {writes_s:.1f}"
        + ("" if used_ray else " (no Ray: the oracle in-process, the ensemble fitted in one batched computation)")
    )
    print(
        f"peak RSS summed over {run['peak_processes']} processes: {run['peak_rss_gb']:.2f} GB; peak PSS sum "
        f"{run['peak_pss_gb']:.2f} GB ({run['processes_seen']} processes seen, {run['memory_samples']} samples; "
        f"load average {run['loadavg_1min_after']:.1f} on {os.cpu_count()} CPUs); identifiability "
        f"{stages['identifiability']:.3f}; ledger sha256 {digest}"
    )
    return {**run, **stages, "writes_other_s": writes_s, "ledger_sha256": digest, "used_ray": used_ray}


if __name__ == "__main__":
    main()
