"""``python -m loop.run``: run or resume one in-silico design study.

Exit codes: 0 finished; 2 bad arguments, setting, data file or run folder;
3 the oracle kept failing; 4 an internal error (a bug in cslab or in a plugged-in
model or strategy: the traceback is printed and kept in ``DIR/failed.json``);
130 interrupted. Everything measured before a 3, 4 or 130 is kept and the
message says how to resume.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from loop.config import RunConfig, SettingError
from loop.distributed import OracleFailed
from loop.progress import RunProgress, score_text
from loop.remote import display, working_copy
from loop.storage import RunFolderError
from loop.study import AwaitingReadout, Study
from simulators.lab_formats import DataFormatError

EXIT_INTERNAL = 4

DEFAULTS = RunConfig()


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (defaults shown in ``--help``)."""
    p = argparse.ArgumentParser(prog="python -m loop.run", description="Closed-loop active learning on a CSL model.")
    p.add_argument("--budget", type=float, default=None, help=f"total budget in cost units ({DEFAULTS.budget:g})")
    p.add_argument("--strategy", default=None, help=f"acquisition strategy ({DEFAULTS.strategy})")
    p.add_argument(
        "--model",
        default=None,
        help=f"model: csl, or a baseline mean|additive|linear, or a plug-in's name ({DEFAULTS.model})",
    )
    p.add_argument("--seed", type=int, default=None, help=f"root seed ({DEFAULTS.seed})")
    p.add_argument("--batch-size", type=int, default=None, help=f"queries per round ({DEFAULTS.batch_size})")
    p.add_argument("--world", default=None, help=f"simulator preset small|default|large ({DEFAULTS.world})")
    p.add_argument(
        "--oracle",
        default=None,
        help=f"sim (simulator), lab (measured data, pool mode) or plates (prospective) ({DEFAULTS.oracle})",
    )
    p.add_argument(
        "--data",
        default=None,
        help="lab data for --oracle lab: a .h5ad, .csv or .parquet file, or a directory or glob of .h5ad files",
    )
    p.add_argument(
        "--out",
        default=None,
        help="run folder: a path or a storage URI such as s3://bucket/run "
        "(default runs/[<model>-]<strategy>-seed<N>-<time>)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="DIR|URI",
        help="continue the run in DIR (its stored settings; --address and --workers may change)",
    )
    p.add_argument("--address", default=None, help="join an existing Ray cluster at ADDR")
    p.add_argument("--workers", type=int, default=None, help="CPUs for local Ray, when the run uses it (all)")
    p.add_argument("--config", default=None, metavar="FILE", help="TOML or JSON with any of these settings")
    p.add_argument("--quiet", action="store_true", help="print only the run path and the final summary")
    p.add_argument("--no-report", action="store_true", help="do not write report.html at the end")
    return p


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, dict]:
    """Merge defaults, ``--config`` file and flags (flags win)."""
    settings = RunConfig.from_file(args.config) if args.config else {}
    flags = {
        k: getattr(args, k)
        for k in ("budget", "strategy", "model", "seed", "batch_size", "world", "oracle", "data", "workers", "address")
    }
    explicit = {k: v for k, v in flags.items() if v is not None}
    settings.update(explicit)
    return RunConfig.from_dict(settings), {**RunConfig.from_file(args.config), **explicit} if args.config else explicit


def summary_line(root: str | Path, metrics: object, wall_s: float) -> str:
    """The final one-line summary."""
    if len(metrics) == 0:
        return f"run {root}: no rounds finished"
    last = metrics.iloc[-1]
    return (
        f"run {root}: {len(metrics)} rounds, spent {last['spent']:.1f} units, "
        f"{int(last['n_queries'])} queries, {score_text(last).replace('  ', ', ')}, "
        f"wall {wall_s:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        config, explicit = config_from_args(args)
        if not args.resume:
            config.validate()
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    location = (
        args.resume
        or args.out
        or str(
            Path("runs") / f"{'' if config.model == 'csl' else config.model + '-'}{config.strategy}-seed{config.seed}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}"
        )
    )
    try:
        with working_copy(location) as copy:
            return _run(args, config, explicit, location, copy.folder, copy.save, t0)
    except (RunFolderError, OSError) as exc:  # the storage itself: unreachable, refused, not a folder
        print(f"error: {display(location)}: {exc}", file=sys.stderr)
        return 2


def _open_study(
    args: argparse.Namespace, config: RunConfig, explicit: dict, folder: Path, save: Callable[[], object]
) -> Study:
    """Resume the run in ``folder`` (checking ``explicit`` settings against it) or create it."""
    if not args.resume:
        return Study.create(folder, config, save=save)
    if explicit.get("data"):
        explicit["data"] = str(Path(explicit["data"]).resolve())  # stored absolute
    study = Study.open(folder, expect=explicit, save=save)
    # Where it runs may change between sessions; what it computes may not (Study.open checks that).
    study.config.address = args.address or study.config.address
    study.config.workers = args.workers or study.config.workers
    return study


def _render_report(root: Path, where: str) -> None:
    """Write report.html; a failure is a warning (the run itself is complete)."""
    from loop.report import render

    try:
        render(root)
    except Exception as exc:  # noqa: BLE001 - a report failure must not hide a finished run
        print(
            f"warning: report.html not written ({type(exc).__name__}: {exc}); retry with python -m loop.report {where}",
            file=sys.stderr,
        )


def _run(
    args: argparse.Namespace,
    config: RunConfig,
    explicit: dict,
    location: str,
    folder: Path,
    save: Callable[[], object],
    t0: float,
) -> int:
    """Open or create the run in ``folder`` (the local copy of ``location``) and run it."""
    where = display(location)
    try:
        study = _open_study(args, config, explicit, folder, save)
    except (ValueError, KeyError) as exc:
        print(f"error: {str(exc).replace(str(folder), where)}", file=sys.stderr)
        return 2
    print(f"run folder: {where}", flush=True)
    study.store.clear_failed()
    try:
        with RunProgress(study.config.budget, quiet=args.quiet) as progress:
            metrics = study.run(on_round=progress.round, on_stage=progress.stage)
    except AwaitingReadout as exc:
        r = exc.args[0]
        print(
            f"round {r} is proposed and waits for the lab: python -m loop.propose --run {where} --plate 96, "
            f"run the plates, python -m loop.ingest --run {where} READOUT.csv, then "
            f"python -m loop.run --resume {where}"
        )
        return 0
    except (RunFolderError, SettingError, DataFormatError) as exc:  # a bad file or setting met during the run
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OracleFailed as exc:
        print(
            f"error: {exc}. Everything measured so far is kept; resume with: python -m loop.run --resume {where}",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        print(f"interrupted; resume with: python -m loop.run --resume {where}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - an internal error: reported as one, with the way back
        tb = traceback.format_exc()
        study.store.mark_failed(exc)
        print(
            f"{tb}internal error: {type(exc).__name__}: {exc}\nThis is a bug in cslab (or in a plugged-in model or "
            f"strategy), not in your settings. Everything measured so far is kept in {where}; after a fix, "
            f"resume with: python -m loop.run --resume {where}",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    if not args.no_report:
        _render_report(study.root, where)
    print(summary_line(where, metrics, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
