"""Benchmarks (speed, memory, sample efficiency); run as ``python -m bench.<name>``, not as tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def results_dir(quick: bool = False) -> Path:
    """The folder the benchmarks write their JSON results (and the runner its logs) to.

    Args:
        quick: Whether the run uses the tiny ``--quick`` sizes; their figures go to
            ``bench/results/quick/`` so they never overwrite the committed ones in ``bench/results/``.

    Returns:
        ``CSLAB_BENCH_RESULTS`` if that variable is set (and not empty), else ``bench/results/quick``
        for quick runs and ``bench/results`` otherwise.
    """
    env = os.environ.get("CSLAB_BENCH_RESULTS")
    if env:
        return Path(env)
    return _ROOT / "bench" / "results" / "quick" if quick else _ROOT / "bench" / "results"


def write_result(name: str, result: dict, quick: bool, **dumps_kwargs) -> Path:
    """Write a benchmark's result as ``<name>.json`` in :func:`results_dir`, atomically.

    The JSON goes to ``<name>.json.tmp`` in the same folder first and then replaces ``<name>.json``,
    so an interrupted write never leaves a truncated file. The folder is created if needed.

    Args:
        name: The benchmark's name (the file's stem).
        result: What to write.
        quick: Whether the run used the ``--quick`` sizes (see :func:`results_dir`).
        **dumps_kwargs: Passed on to :func:`json.dumps` (e.g. ``default=float``).

    Returns:
        The path written.
    """
    folder = results_dir(quick)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = folder / f"{name}.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, **dumps_kwargs))
    tmp.replace(path)
    return path
