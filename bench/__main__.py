"""``python -m bench``: run the benchmarks, each in its own subprocess, and print one table.

    python -m bench                      # every bench at default sizes except efficiency (a few minutes)
    python -m bench --quick              # tiny sizes, seconds each (what the smoke test runs)
    python -m bench --only e2e,scale     # some of them
    python -m bench --only efficiency    # the sample-efficiency study: 7 strategies x 5 seeds, 30-60 min on
                                         # 2 cores (resumable: rerun to continue); --all adds it to the rest

Each bench is ``python -m bench.<name>`` (run one directly for its options);
it prints a table and a one-line summary ``<name>: ...`` last, and writes
``bench/results/<name>.json``. This runner shows each summary line as the
bench ends, keeps the whole output in ``bench/results/<name>.log``, and ends
with a table of every bench: status, seconds, and whether its JSON was
written. With ``--quick`` the JSON files and logs go to ``bench/results/quick/``
(gitignored) instead, so toy figures never overwrite the real ones committed in
``bench/results/``. ``--results DIR`` (or ``CSLAB_BENCH_RESULTS``) sends them to
``DIR`` in either case; the smoke test uses it. Benches run one after another, with
``OPENBLAS_NUM_THREADS=1``, so they do not compete with each other.
Exit code 1 if any bench failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import results_dir
from loop.distributed import THREAD_ENV

ROOT = Path(__file__).resolve().parents[1]
#: Every bench, in the order they run; efficiency is opt-in (it takes long).
BENCHES = ("simulator", "acquisition", "model_fit", "plates", "e2e", "scale", "atlas", "efficiency")
OPT_IN = ("efficiency",)


def select(only: str | None, run_all: bool) -> list[str]:
    """The benches to run, in order.

    Raises:
        SystemExit: On an unknown name in ``only``.
    """
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHES]
        if unknown:
            raise SystemExit(f"--only: unknown bench {', '.join(unknown)}; known: {', '.join(BENCHES)}")
        return [b for b in BENCHES if b in names]
    return [b for b in BENCHES if run_all or b not in OPT_IN]


def run_bench(name: str, quick: bool, results: Path, env: dict) -> dict:
    """Run ``python -m bench.<name>`` and return its status, seconds, summary line and JSON check."""
    cmd = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
    json_path = results / f"{name}.json"
    before = json_path.stat().st_mtime if json_path.is_file() else None
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (results / f"{name}.log").write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip() if lines else ""
    wrote = json_path.is_file() and json_path.stat().st_mtime != before
    ok = proc.returncode == 0 and summary.startswith(f"{name}:") and wrote
    if proc.returncode != 0:
        summary = f"{name}: FAILED (exit {proc.returncode}): " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    elif not ok:
        summary = f"{name}: FAILED (no summary line or no JSON written); last line: {summary}"
    return {
        "name": name,
        "ok": ok,
        "seconds": seconds,
        "summary": summary,
        "json": wrote,
        "returncode": proc.returncode,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description="Run the benchmarks; see the Performance section of README.md."
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds each)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--all", action="store_true", help="include the opt-in efficiency study (30-60 min)")
    ap.add_argument(
        "--results",
        default=None,
        metavar="DIR",
        help="where the JSON files and logs go (bench/results; with --quick bench/results/quick)",
    )
    args = ap.parse_args(argv)
    names = select(args.only, args.all)
    results = Path(args.results or results_dir(args.quick)).resolve()
    results.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **THREAD_ENV, CSLAB_BENCH_RESULTS=str(results))
    t0 = time.perf_counter()
    rows = []
    for name in names:
        row = run_bench(name, args.quick, results, env)
        rows.append(row)
        print(row["summary"], flush=True)
    print()
    print(f"{'bench':>12} {'status':>6} {'seconds':>8} {'json':>5}")
    for r in rows:
        status, wrote = "ok" if r["ok"] else "FAIL", "yes" if r["json"] else "no"
        print(f"{r['name']:>12} {status:>6} {r['seconds']:>8.1f} {wrote:>5}")
    skipped = [b for b in BENCHES if b not in names]
    print(
        f"{len(rows)} benches in {time.perf_counter() - t0:.0f} s{' (quick sizes)' if args.quick else ''}; "
        f"results and logs in {results}" + (f"; not run: {', '.join(skipped)}" if skipped else "")
    )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
