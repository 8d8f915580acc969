"""Figures of the report (matplotlib, Agg backend), returned as base64 PNG data URIs.

Every function takes tidy pandas frames and returns a ``data:image/png`` URI
that the report inlines, so the HTML needs no network and no side files.
``random`` is drawn dashed in grey everywhere: it is the reference.
"""

from __future__ import annotations

import base64
import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from loop.stats import REFERENCE, curve_band  # noqa: E402

STAGES = ("acquire_s", "measure_s", "fit_s", "score_s")
plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100})


def to_data_uri(fig: plt.Figure) -> str:
    """Render and close a figure; returns ``data:image/png;base64,...``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def palette(strategies: list[str]) -> dict[str, dict]:
    """Line style per strategy: the reference grey and dashed, the others tab10."""
    cmap = plt.get_cmap("tab10")
    others = [s for s in strategies if s != REFERENCE]
    style = {s: {"color": cmap(i % 10), "ls": "-"} for i, s in enumerate(others)}
    if REFERENCE in strategies:
        style[REFERENCE] = {"color": "0.35", "ls": "--"}
    return style


def _grid(n: int, ncols: int, w: float = 4.6, h: float = 3.2) -> tuple[plt.Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _strategy_curve(
    ax: object, d: pd.DataFrame, col: str, grid: np.ndarray, bounds: tuple | None, style: dict, name: str
) -> None:
    """One strategy on one panel: its seeds (thin), the mean over seeds and its band."""
    band = curve_band(d, col, grid)
    few = d["seed"].nunique() < 3
    low, high = (band["min"], band["max"]) if few else (band["low"], band["high"])
    if bounds is not None:
        low, high = low.clip(*bounds), high.clip(*bounds)
    for _, g in d.sort_values("round").groupby("seed"):
        ax.plot(g["spent"], g[col], lw=0.7, alpha=0.35, color=style["color"])
    ax.plot(band["spent"], band["mean"], lw=2.2, label=f"{name} (n={d['seed'].nunique()})", **style)
    ax.fill_between(band["spent"], low, high, color=style["color"], alpha=0.15, lw=0)


def curves(
    results: pd.DataFrame,
    columns: list[str],
    titles: list[str],
    ylabel: str = "",
    ncols: int = 3,
    n_grid: int = 80,
    bounds: tuple[float, float] | None = None,
    target: float | None = None,
) -> str:
    """Metric vs budget spent per strategy: mean over seeds and its 95% band.

    Args:
        results: ``strategy``, ``seed``, ``round``, ``spent`` and the columns.
        columns: Metrics, one panel each; a panel whose values are all NaN
            says "not available".
        titles: Panel titles.
        ylabel: Y axis label.
        ncols: Panels per row.
        n_grid: Points of the common spent grid.
        bounds: The metric's range (e.g. (0, 1)); the band is clipped to it.
        target: Draw this level as a dotted line (random's whole-budget level).

    Thin lines are the single seeds; the band is the 95% t interval of the
    mean over seeds, or the seeds' min–max with fewer than three seeds
    (where a t interval with one degree of freedom spans the whole axis).
    """
    strategies = sorted(results["strategy"].unique())
    style = palette(strategies)
    grid = np.linspace(0.0, float(results["spent"].max()), n_grid)
    fig, axes = _grid(len(columns), ncols, w=8.0 if len(columns) == 1 else 4.6, h=4.2 if len(columns) == 1 else 3.2)
    for ax, col, title in zip(axes, columns, titles, strict=False):
        ax.set_title(title)
        ax.set_xlabel("budget spent (cost units)")
        ax.set_ylabel(ylabel)
        if col not in results or results[col].isna().all():
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, color="0.4")
            continue
        for s in strategies:
            _strategy_curve(ax, results[results["strategy"] == s], col, grid, bounds, style[s], s)
        if target is not None and np.isfinite(target):
            ax.axhline(target, color="0.35", lw=1, ls=":")
            ax.annotate(
                "target: random's mean level with the whole budget",
                (0.01, target),
                fontsize=8,
                color="0.3",
                xycoords=("axes fraction", "data"),
                va="bottom",
            )
        ax.set_xlim(0, grid[-1] * 1.02)
        ax.grid(alpha=0.3)
    handles, labels = next(
        (h for h in (ax.get_legend_handles_labels() for ax in axes) if h[0]), axes[0].get_legend_handles_labels()
    )
    if handles:
        fig.legend(
            handles,
            labels,
            loc="upper center",
            ncol=min(len(labels), 5),
            frameon=False,
            bbox_to_anchor=(0.5, 1.02 + 0.02 * (len(columns) > 3)),
        )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return to_data_uri(fig)


def spending(props: pd.DataFrame, anchors: set[str]) -> str:
    """Where each strategy spent: mean cost per seed by assay, and the anchor share over the run.

    Args:
        props: One row per proposed query: ``strategy``, ``seed``, ``round``,
            ``assay``, ``cost`` (units).
        anchors: Names of anchor assays (more than one modality).
    """
    strategies = sorted(props["strategy"].unique())
    style = palette(strategies)
    assays = sorted(props["assay"].unique(), key=lambda a: (a in anchors, a))
    n_seeds = props.groupby("strategy")["seed"].nunique()
    per = (
        props.groupby(["strategy", "assay"])["cost"]
        .sum()
        .unstack(fill_value=0.0)
        .reindex(index=strategies, columns=assays, fill_value=0.0)
    )
    per = per.div(n_seeds.reindex(strategies), axis=0)
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(13, 0.5 * len(strategies) + 3.2), gridspec_kw={"width_ratios": [1.4, 1]}
    )
    cmap = plt.get_cmap("tab20")
    left = np.zeros(len(strategies))
    for i, a in enumerate(assays):
        vals = per[a].to_numpy()
        ax.barh(
            strategies,
            vals,
            left=left,
            color=cmap(i % 20),
            hatch="//" if a in anchors else None,
            edgecolor="white",
            label=f"{a} (anchor)" if a in anchors else a,
        )
        left += vals
    ax.set_xlabel("mean cost per seed (cost units); hatched = anchor assays")
    ax.set_title("cost by assay")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    for s in strategies:
        d = props[props["strategy"] == s].sort_values(["seed", "round"])
        fr = []
        for _, g in d.assign(anchor_cost=d["cost"].where(d["assay"].isin(anchors), 0.0)).groupby("seed"):
            cum = g.groupby("round")[["cost", "anchor_cost"]].sum().cumsum()
            fr.append((cum["cost"].to_numpy(), (cum["anchor_cost"] / cum["cost"]).to_numpy()))
        grid = np.linspace(0, max(f[0][-1] for f in fr), 60)
        mean = np.nanmean([np.where(grid <= x[-1], np.interp(grid, x, y), np.nan) for x, y in fr], axis=0)
        ax2.plot(grid, mean, lw=2, label=s, **style[s])
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("budget spent (cost units)")
    ax2.set_ylabel("share of spending on anchors")
    ax2.set_title("anchor share over the run (mean over seeds)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return to_data_uri(fig)


def coverage(points: pd.DataFrame, targets: list[str], time_range_h: tuple[float, float]) -> str:
    """Chosen queries per strategy: target × log10 dose, coloured by time (all seeds pooled).

    Args:
        points: One row per (query, target): ``strategy``, ``target``,
            ``log10_dose``, ``time`` (h), ``order`` (1 single, 2+ combination).
        targets: Target names in display order.
        time_range_h: Colour scale limits, hours.
    """
    strategies = sorted(points["strategy"].unique())
    fig, axes = _grid(len(strategies), 3, w=4.6, h=0.22 * len(targets) + 2.0)
    pos = {t: i for i, t in enumerate(targets)}
    sc = None
    for ax, s in zip(axes, strategies, strict=False):
        d = points[points["strategy"] == s]
        y = d["target"].map(pos).to_numpy(float)
        jitter = ((d.index.to_numpy() * 0.6180339887) % 1.0 - 0.5) * 0.5  # deterministic jitter
        for order, marker in ((1, "o"), (2, "^"), (3, "s")):
            m = (d["order"].to_numpy() == order) if order < 3 else (d["order"].to_numpy() >= 3)
            if m.any():
                sc = ax.scatter(
                    d["log10_dose"].to_numpy()[m],
                    y[m] + jitter[m],
                    c=d["time"].to_numpy()[m],
                    cmap="viridis",
                    vmin=time_range_h[0],
                    vmax=time_range_h[1],
                    s=14,
                    alpha=0.75,
                    marker=marker,
                    label={1: "single", 2: "pair", 3: "triplet+"}[order],
                    lw=0,
                )
        ax.set_yticks(range(len(targets)), targets, fontsize=7)
        ax.set_ylim(len(targets) - 0.3, -0.7)
        ax.set_xlabel("log10 dose (µM or strength)")
        ax.set_title(f"{s}: {len(d)} target doses")
        ax.grid(alpha=0.25)
    if sc is not None:
        fig.colorbar(sc, ax=axes[: len(strategies)], label="time (h)", shrink=0.8)
        axes[0].legend(fontsize=7, loc="lower left", frameon=True)
    return to_data_uri(fig)


def timings(results: pd.DataFrame) -> str:
    """Seconds per round by stage: mean per strategy (bars) and total wall time per round (lines)."""
    strategies = sorted(results["strategy"].unique())
    style = palette(strategies)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 0.45 * len(strategies) + 3.0))
    left = np.zeros(len(strategies))
    for i, st in enumerate(STAGES):
        vals = np.array(
            [np.nanmean(results.loc[results["strategy"] == s, st]) if st in results else 0.0 for s in strategies]
        )
        vals = np.nan_to_num(vals)
        ax.barh(strategies, vals, left=left, color=plt.get_cmap("Set2")(i), label=st.removesuffix("_s"))
        left += vals
    ax.invert_yaxis()
    ax.set_xlabel("mean seconds per round")
    ax.set_title("time per round by stage")
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(STAGES))
    for s in strategies:
        d = results[results["strategy"] == s].groupby("round")["wall_s"].mean()
        ax2.plot(d.index, d.to_numpy(), lw=2, label=s, **style[s])
    ax2.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax2.set_xlabel("round")
    ax2.set_ylabel("wall seconds (mean over seeds)")
    ax2.set_title("wall time per round")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return to_data_uri(fig)


def dose_response(panels: list[dict]) -> str:
    """Recovered vs true dose–response curves.

    Args:
        panels: Each ``{"title", "dose" (n,), "true" (n,), "mean" (n,), "low" (n,), "high" (n,)}``;
            doses in the target's unit (drawn on log10).
    """
    fig, axes = _grid(len(panels), 3, w=4.3, h=3.0)
    for ax, p in zip(axes, panels, strict=False):
        x = np.log10(np.asarray(p["dose"], float))
        ax.plot(x, p["true"], color="black", lw=2, label="true")
        ax.plot(x, p["mean"], color="tab:red", lw=2, ls="--", label="recovered (ensemble mean)")
        ax.fill_between(x, p["low"], p["high"], color="tab:red", alpha=0.2, lw=0)
        ax.set_title(p["title"], fontsize=9)
        ax.set_xlabel("log10 dose")
        ax.set_ylabel("program activity")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return to_data_uri(fig)


def interaction_signs(true: np.ndarray, learned: np.ndarray, labels: list[str]) -> str:
    """True and learned interaction signs of target pairs, side by side (−1 antagonism, +1 synergy).

    Args:
        true: ``(P,)`` signs of the true interaction per pair.
        learned: ``(P,)`` signs the model implies.
        labels: ``P`` pair labels ``"A+B"``.
    """
    mat = np.vstack([true, learned])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(labels) + 2), 2.4))
    ax.imshow(mat, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    ax.set_yticks([0, 1], ["true", "learned"])
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    for (i, j), v in np.ndenumerate(mat):
        ax.text(j, i, {1: "+", -1: "−", 0: "0"}[int(v)], ha="center", va="center", fontsize=10)
    agree = float(np.mean(true == learned)) if len(labels) else float("nan")
    ax.set_title(f"interaction signs (red synergy, blue antagonism): {agree:.0%} agree")
    fig.tight_layout()
    return to_data_uri(fig)
