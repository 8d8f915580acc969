"""Atlas-scale replay: load time and peak memory of the lab adapter on a sparse screen of up to 1M cells.

    python -m bench.atlas [--quick] [--sizes 100000,300000,1000000] [--genes 2000] [--plates 4]

For each size it writes, chunk by chunk (never a dense matrix), an scPerturb-style screen as one
``.h5ad`` per plate in a temporary directory: obs ``perturbation`` / ``dose_value`` / ``dose_unit`` /
``time`` / ``cell_line`` / ``plate`` / ``ncounts``, cells of 60 drugs × 3 doses × 4 cell lines and a
DMSO control per cell line (on every plate) in shuffled order, integer counts in CSR at about 7 %
density. Then, in a fresh interpreter (``OPENBLAS_NUM_THREADS=1``), it builds
``LabAdapter.from_file(<directory>)`` (lazy: obs in memory, the matrices scanned once in chunks) and
replays 5 rounds of 8 conditions (every cell of each condition handed out, densified, dropped after
the round, as the loop writes a round to its ledger). While that runs it samples every 0.05 s the
summed PSS (``/proc/<pid>/smaps_rollup``: shared pages split between the processes mapping them) of
the process and its descendants; the child also reports its own peak RSS (``VmHWM``), the exact peak
of the one process. The eager reader (``lazy = false``: whole files densified) is measured the same
way on the smallest size, in the same run, for the ratio.

Target (issue 16): peak PSS <= 2 GB on 1M cells × 2,000 genes. ``--quick``: 10k and 20k cells ×
200 genes on 2 plates. Prints a table and a one-line summary last and writes
``bench/results/atlas.json`` (directory overridable with ``CSLAB_BENCH_RESULTS``; ``--quick`` writes to
``bench/results/quick/`` instead).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import write_result
from loop.distributed import THREAD_ENV

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, **THREAD_ENV)
TARGET_PSS_MB = 2048.0
DRUGS, DOSES_UM, CELL_LINES = 60, (0.1, 1.0, 10.0), ("A549", "MCF7", "HepG2", "K562")
ROUNDS, PER_ROUND = 5, 8


# ------------------------------------------------------------------ writing a screen
def conditions() -> pd.DataFrame:
    """The screen's conditions: drug × dose × cell line, and DMSO per cell line (``drug`` -1)."""
    rows = [(d, dose, c) for d in range(DRUGS) for dose in DOSES_UM for c in CELL_LINES]
    rows += [(-1, 0.0, c) for c in CELL_LINES]
    return pd.DataFrame(rows, columns=["drug", "dose", "cell_line"])


def plate_obs(conds: pd.DataFrame, plate: int, n_plates: int, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` cells of one plate (its drugs: ``drug % n_plates == plate``, and the controls), shuffled.

    Returns:
        ``(n, ...)`` obs in scPerturb keys; ``cond`` is the row of ``conds`` (dropped before writing).
    """
    mine = np.flatnonzero((conds["drug"] % n_plates == plate) | (conds["drug"] < 0))
    cond = rng.choice(mine, size=n)
    c = conds.iloc[cond]
    return pd.DataFrame(
        {
            "perturbation": np.where(c["drug"] < 0, "DMSO", "drug" + c["drug"].astype(str)),
            "dose_value": c["dose"].to_numpy(),
            "dose_unit": "uM",
            "time": 24.0,
            "cell_line": c["cell_line"].to_numpy(),
            "plate": f"plate{plate}",
            "cond": cond,
        },
        index=[f"p{plate}c{i}" for i in range(n)],
    )


def _counts_chunk(cond: np.ndarray, lam: np.ndarray, density: float, rng: np.random.Generator) -> tuple:
    """CSR pieces of a block of cells: ``(data float32, indices int32, row lengths)``."""
    mask = rng.random((len(cond), lam.shape[1]), dtype=np.float32) < density
    r, c = np.nonzero(mask)
    data = (1 + rng.poisson(lam[cond[r], c])).astype(np.float32)
    return data, c.astype(np.int32), np.bincount(r, minlength=len(cond))


def write_plate(path: Path, obs: pd.DataFrame, lam: np.ndarray, density: float, seed: int, chunk: int = 5000) -> None:
    """One plate's ``.h5ad``: obs and var through anndata, then ``X`` as CSR appended chunk by chunk."""
    import anndata as ad
    import h5py

    rng = np.random.default_rng(seed)
    cond = obs.pop("cond").to_numpy()
    n, g = len(obs), lam.shape[1]
    totals = np.zeros(n)
    with h5py.File(path, "w") as f:
        grp = f.create_group("X")
        grp.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n, g)})
        data = grp.create_dataset("data", (0,), np.float32, maxshape=(None,), chunks=(1 << 18,))
        indices = grp.create_dataset("indices", (0,), np.int32, maxshape=(None,), chunks=(1 << 18,))
        indptr = [np.zeros(1, dtype=np.int64)]
        for r0 in range(0, n, chunk):
            d, idx, lengths = _counts_chunk(cond[r0 : r0 + chunk], lam, density, rng)
            s = data.shape[0]
            data.resize((s + len(d),))
            indices.resize((s + len(d),))
            data[s:], indices[s:] = d, idx
            indptr.append(indptr[-1][-1] + np.cumsum(lengths))
            totals[r0 : r0 + chunk] = np.bincount(np.repeat(np.arange(len(lengths)), lengths), d, len(lengths))
        grp.create_dataset("indptr", data=np.concatenate(indptr))
        obs["ncounts"] = totals
        for col in ("perturbation", "dose_unit", "cell_line", "plate"):  # as write_h5ad stores text
            obs[col] = obs[col].astype("category")
        var = pd.DataFrame(index=[f"G{j}" for j in range(g)])
        for key, elem in (("obs", obs), ("var", var), *((k, {}) for k in ("layers", "obsm", "varm", "obsp", "varp"))):
            ad.io.write_elem(f, key, elem)
        ad.io.write_elem(f, "uns", {})
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})


def write_screen(out: Path, n_cells: int, n_genes: int, n_plates: int, density: float = 0.07, seed: int = 0) -> Path:
    """An atlas-style screen: ``out/plate<k>.h5ad`` for each plate; returns ``out``."""
    rng = np.random.default_rng(seed)
    conds = conditions()
    base = rng.lognormal(0.0, 1.0, n_genes).astype(np.float32)
    effect = np.exp(rng.normal(0.0, 0.3, (len(conds), n_genes))).astype(np.float32)
    effect[conds["drug"].to_numpy() < 0] = 1.0
    lam = base * effect
    out.mkdir(parents=True, exist_ok=True)
    sizes = np.diff(np.linspace(0, n_cells, n_plates + 1).astype(int))
    for k, n in enumerate(sizes):
        obs = plate_obs(conds, k, n_plates, int(n), rng)
        write_plate(out / f"plate{k}.h5ad", obs, lam, density, seed + 1 + k)
    return out


# ------------------------------------------------------------------ measuring a replay
def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def replay(data: Path, lazy: bool) -> dict:
    """Build the adapter and hand out ``ROUNDS`` rounds of ``PER_ROUND`` conditions (run in the child).

    Returns:
        ``load_s``, ``replay_s``, ``conditions``, ``cells`` handed out, the pool size, ``vm_hwm_mb``, and
        whether the adapter holds a dense matrix.
    """
    from simulators.lab import LabAdapter

    t0 = time.perf_counter()
    lab = LabAdapter.from_file(data, lazy=lazy)
    load_s = time.perf_counter() - t0
    pool = sorted(lab.space.pool, key=lambda q: q.query_id)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(pool), size=min(ROUNDS * PER_ROUND, len(pool)), replace=False)
    cells, t1 = 0, time.perf_counter()
    for r in range(ROUNDS):
        batch = lab.measure([pool[i] for i in picks[r * PER_ROUND : (r + 1) * PER_ROUND]])
        cells += len(batch)
        del batch
    return {
        "load_s": load_s,
        "replay_s": time.perf_counter() - t1,
        "conditions": len(picks),
        "cells": cells,
        "pool": len(pool),
        "vm_hwm_mb": _vm_hwm_kb() / 1024,
        "dense_in_memory": any(hasattr(m, "X") for m in lab.batch.modalities.values()),
    }


class PssSampler:
    """Samples the summed PSS of a process and its descendants in a background thread.

    Args:
        pid: Root of the tree.
        interval_s: Seconds between samples.
    """

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        from bench.e2e import _children, _pss_kb

        self._children, self._pss_kb = _children, _pss_kb
        self.pid, self.interval_s, self.seen = pid, interval_s, {pid}
        self.peak_kb, self.peak_procs, self.samples = 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        kids, stack = self._children(), list(self.seen)
        while stack:
            for c in kids.get(stack.pop(), []):
                if c not in self.seen:
                    self.seen.add(c)
                    stack.append(c)
        pss = [self._pss_kb(p) for p in self.seen]
        self.samples += 1
        if sum(pss) > self.peak_kb:
            self.peak_kb, self.peak_procs = sum(pss), sum(v > 0 for v in pss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(data: Path, lazy: bool) -> dict:
    """Run :func:`replay` in a fresh interpreter while sampling its PSS; its figures plus ``peak_pss_mb``."""
    code = f"import json, sys; from bench.atlas import replay; print(json.dumps(replay(sys.argv[1], {lazy!r})))"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(data)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True
    )
    with PssSampler(proc.pid) as mem:
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"replay of {data} (lazy={lazy}) failed with exit {proc.returncode}")
    row = json.loads(out.strip().splitlines()[-1])
    return {**row, "wall_s": time.perf_counter() - t0, "peak_pss_mb": mem.peak_kb / 1024, "samples": mem.samples}


def _size_mb(d: Path) -> float:
    return sum(f.stat().st_size for f in d.glob("*.h5ad")) / 2**20


def run(sizes: list[int], genes: int, plates: int, tmp: Path) -> list[dict]:
    """Write and replay each size (lazy), and the smallest also eagerly; one row per measurement."""
    rows = []
    for i, n in enumerate(sizes):
        t0 = time.perf_counter()
        data = write_screen(tmp / f"screen-{n}", n, genes, plates)
        base = {"cells": n, "genes": genes, "plates": plates, "file_mb": _size_mb(data)}
        base["write_s"] = time.perf_counter() - t0
        modes = (True, False) if i == 0 else (True,)
        for lazy in modes:
            r = measure(data, lazy)
            rows.append({**base, "mode": "lazy" if lazy else "eager", **{k: v for k, v in r.items() if k != "cells"}})
            rows[-1]["cells_handed_out"] = r["cells"]
            print(_line(rows[-1]), flush=True)
        for f in data.glob("*.h5ad"):
            f.unlink()
    return rows


HEADER = (
    f"{'cells':>9} {'genes':>5} {'mode':>5} {'file MB':>8} {'load s':>7} {'replay s':>8} "
    f"{'peak PSS MB':>11} {'VmHWM MB':>8} {'handed out':>10}"
)


def _line(r: dict) -> str:
    return (
        f"{r['cells']:>9,} {r['genes']:>5} {r['mode']:>5} {r['file_mb']:>8.0f} {r['load_s']:>7.2f} "
        f"{r['replay_s']:>8.2f} {r['peak_pss_mb']:>11.0f} {r['vm_hwm_mb']:>8.0f} {r['cells_handed_out']:>10,}"
    )


def summary(rows: list[dict]) -> str:
    """The one-line summary: the largest lazy size against the target, and eager / lazy on the smallest."""
    lazy = [r for r in rows if r["mode"] == "lazy"]
    big = max(lazy, key=lambda r: r["cells"])
    small = min(r["cells"] for r in rows)
    e = next((r for r in rows if r["mode"] == "eager" and r["cells"] == small), None)
    s = next(r for r in lazy if r["cells"] == small)
    verdict = "meets" if big["peak_pss_mb"] <= TARGET_PSS_MB else "MISSES"
    ratio = (
        f"; eager / lazy at {small:,} cells: load {e['load_s'] / s['load_s']:.1f} x, "
        f"PSS {e['peak_pss_mb'] / s['peak_pss_mb']:.1f} x ({e['peak_pss_mb']:.0f} vs {s['peak_pss_mb']:.0f} MB)"
        if e
        else ""
    )
    return (
        f"atlas: {big['cells']:,} cells x {big['genes']:,} genes ({big['file_mb']:.0f} MB on disk): load "
        f"{big['load_s']:.1f} s, peak PSS {big['peak_pss_mb']:.0f} MB (target <= {TARGET_PSS_MB:.0f}: {verdict})"
        + ratio
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns what it writes to ``atlas.json``."""
    p = argparse.ArgumentParser(prog="python -m bench.atlas", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="10k and 20k cells x 200 genes, 2 plates")
    p.add_argument("--sizes", default="100000,300000,1000000", help="cells, comma-separated (smallest: + eager)")
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--plates", type=int, default=4)
    p.add_argument("--tmp", default=None, help="where the screens are written (default: a temporary directory)")
    args = p.parse_args(argv)
    sizes, genes, plates = (
        ([10_000, 20_000], 200, 2)
        if args.quick
        else (
            sorted(int(s) for s in args.sizes.split(",")),
            args.genes,
            args.plates,
        )
    )
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        rows = run(sizes, genes, plates, Path(tmp))
    result = {"rows": rows, "target_pss_mb": TARGET_PSS_MB, "summary": summary(rows), "quick": args.quick}
    path = write_result("atlas", result, args.quick)
    print(f"wrote {path}")
    print(result["summary"])
    return result


if __name__ == "__main__":
    main()
