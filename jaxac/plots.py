"""Figures from loaded results (`jaxac.analysis.load_results`): learning curves with confidence
bands across seeds, final return, throughput and staleness against workers, and heatmaps.

Every function returns a matplotlib figure and saves it when given `path`.
"""

from __future__ import annotations

import os
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

X_LABELS = {"env_steps": "environment steps", "wall_time": "wall time (s)"}
LABELS = {"return_last100": "return (last 100 episodes)", "final_return": "final greedy return",
          "episode_return_mean": "episode return", "steps_per_second": "env steps / s",
          "threshold_env_steps": "env steps to threshold",
          "threshold_wall_seconds": "wall seconds to threshold",
          "staleness_mean": "mean staleness (updates)", "updates_per_second": "updates / s",
          "eval_return": "greedy evaluation return (during training)"}


def _pyplot():
    # Imported late: matplotlib picks its backend itself (inline in a notebook, Agg headless).
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: str | os.PathLike | None):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=fig.dpi)
    return fig


def _label(values: Sequence, names: Sequence[str]) -> str:
    return ", ".join(f"{n}={v}" for n, v in zip(names, values))


def mean_and_band(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 100
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate several (x, y) curves onto one grid; returns (grid, mean, 95% band low, high).

    A curve that has ended keeps its last value (a finished run keeps its result); the mean is
    drawn from the first grid point where every curve has started, so it never jumps as curves
    join. The band is mean +- 1.96 standard errors (none for a single curve).
    """
    curves = [(x, y) for x, y in curves if len(x)]
    grid = np.linspace(min(x.min() for x, _ in curves), max(x.max() for x, _ in curves), points)
    stack = np.full((len(curves), points), np.nan)
    for i, (x, y) in enumerate(curves):
        order = np.argsort(x)
        x, y = x[order], y[order]
        ok = ~np.isnan(y)
        if ok.any():
            started = grid >= x[ok][0]
            stack[i, started] = np.interp(grid[started], x[ok], y[ok])  # holds the last value
    count = (~np.isnan(stack)).sum(axis=0)
    with warnings.catch_warnings():  # a grid point no curve has reached yet is just NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stack, axis=0)
        sem = np.nanstd(stack, axis=0, ddof=1) / np.sqrt(count)
    mean = np.where(count == len(curves), mean, np.nan)
    half = np.where(count >= 2, 1.96 * sem, np.nan)
    return grid, mean, mean - half, mean + half


def plot_learning_curves(metrics: pd.DataFrame, by: Iterable[str] = ("algo",),
                         y: str = "return_last100",
                         xs: Sequence[str] = ("env_steps", "wall_time"),
                         threshold: float | None = None, title: str = "",
                         path: str | os.PathLike | None = None):
    """Mean and 95% band across runs of `y`, one line per combination of `by`, against each of
    `xs` (one panel each). A run here is one seed of one job: a (job_dir, seed_index) pair."""
    plt = _pyplot()
    by = list(by)
    fig, axes = plt.subplots(1, len(xs), figsize=(6 * len(xs), 4), dpi=100, squeeze=False)
    groups = list(metrics.groupby(by, dropna=False)) if by else [((), metrics)]
    for ax, x in zip(axes[0], xs):
        for i, (key, group) in enumerate(groups):
            key = key if isinstance(key, tuple) else (key,)
            curves = [(g[x].to_numpy(float), g[y].to_numpy(float))
                      for _, g in group.groupby(["job_dir", "seed_index"])]
            grid, mean, low, high = mean_and_band(curves)
            n = len(curves)
            ax.plot(grid, mean, color=f"C{i % 10}", lw=2,
                    label=f"{_label(key, by)} ({n} run{'s' if n > 1 else ''})")
            ax.fill_between(grid, low, high, color=f"C{i % 10}", alpha=0.2, lw=0)
        if threshold is not None:
            ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold ({threshold:g})")
        ax.set_xlabel(X_LABELS.get(x, x))
        ax.set_ylabel(LABELS.get(y, y))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_learning_curve(metrics: pd.DataFrame, title: str = "", threshold: float | None = None,
                        path: str | os.PathLike | None = None):
    """One run: episode return against environment steps, one colour per seed (faint: the
    interval's mean, bold: the last-100 mean, dotted: the greedy evaluations during training,
    where `eval_every` made them)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for i, (seed, group) in enumerate(metrics.groupby("seed_index")):
        color = f"C{i % 10}"
        ax.plot(group["env_steps"], group["episode_return_mean"], color=color, alpha=0.3, lw=1,
                label=f"seed {seed}: interval mean")
        ax.plot(group["env_steps"], group["return_last100"], color=color, lw=2,
                label=f"seed {seed}: last 100 episodes")
        if "eval_return" in group and group["eval_return"].notna().any():
            evaluated = group[group["eval_return"].notna()]
            ax.plot(evaluated["env_steps"], evaluated["eval_return"], color=color, ls=":",
                    marker="o", ms=3, lw=1, label=f"seed {seed}: greedy evaluation")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"solved ({threshold:g})")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _finish(fig, path)


def plot_against_workers(runs: pd.DataFrame, y: str, hue: str = "rollout_length",
                         panels: str = "algo", log_y: bool = False, title: str = "",
                         path: str | os.PathLike | None = None):
    """`y` against workers (log2 axis), one line per `hue` value with a 95% band across seeds,
    one panel per `panels` value side by side (A2C | A3C by default)."""
    plt = _pyplot()
    runs = runs.dropna(subset=[y])
    panel_values = sorted(runs[panels].dropna().unique()) if len(runs) else []
    fig, axes = plt.subplots(1, max(len(panel_values), 1), figsize=(5.5 * max(len(panel_values), 1),
                                                                     4), dpi=100, squeeze=False,
                             sharey=True)
    for ax, panel in zip(axes[0], panel_values):
        sub = runs[runs[panels] == panel]
        for i, (h, group) in enumerate(sub.groupby(hue)):
            stats = group.groupby("workers")[y].agg(["mean", "std", "count"]).sort_index()
            half = 1.96 * stats["std"].fillna(0) / np.sqrt(stats["count"])
            ax.errorbar(stats.index, stats["mean"], yerr=half, marker="o", capsize=3,
                        color=f"C{i % 10}", label=f"{hue}={h}")
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(f"{panels}={panel}")
        ax.set_xlabel("workers")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(LABELS.get(y, y))
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_final_return_vs_workers(runs: pd.DataFrame, path: str | os.PathLike | None = None):
    """Final greedy return against workers, per rollout length, A2C and A3C side by side."""
    return plot_against_workers(runs, "final_return", title="final return", path=path)


def plot_throughput_vs_workers(runs: pd.DataFrame, path: str | os.PathLike | None = None):
    """Environment steps per second against workers, per rollout length, A2C and A3C side by
    side (log scale)."""
    return plot_against_workers(runs, "steps_per_second", log_y=True, title="throughput",
                                path=path)


def plot_staleness_vs_workers(runs: pd.DataFrame, path: str | os.PathLike | None = None):
    """A3C's mean staleness (updates applied between a gradient's snapshot and its own
    application) against workers, per rollout length and update mode."""
    a3c = runs[runs["algo"] == "a3c"]
    panels = "algo.update" if "algo.update" in a3c and a3c["algo.update"].nunique() > 1 else "algo"
    return plot_against_workers(a3c, "staleness_mean", panels=panels, title="A3C staleness",
                                path=path)


def plot_heatmaps(runs: pd.DataFrame, value: str, index: str = "workers",
                  columns: str = "rollout_length", panels: str = "algo",
                  path: str | os.PathLike | None = None):
    """Mean over seeds of `value` on an `index` x `columns` grid, one heatmap per `panels` value
    (annotated; blank where no run of that cell has a value, e.g. never reached the threshold)."""
    plt = _pyplot()
    panel_values = sorted(runs[panels].dropna().unique())
    fig, axes = plt.subplots(1, max(len(panel_values), 1),
                             figsize=(4.5 * max(len(panel_values), 1), 4), dpi=100, squeeze=False)
    for ax, panel in zip(axes[0], panel_values):
        sub = runs[runs[panels] == panel]
        table = sub.pivot_table(index=index, columns=columns, values=value, aggfunc="mean")
        table = table.reindex(index=sorted(runs[index].dropna().unique()),
                              columns=sorted(runs[columns].dropna().unique()))
        image = ax.imshow(table.to_numpy(float), aspect="auto", cmap="viridis", origin="lower")
        ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
        ax.set_yticks(range(len(table.index)), [str(i) for i in table.index])
        ax.set_xlabel(columns)
        ax.set_ylabel(index)
        ax.set_title(f"{panels}={panel}")
        low, high = image.get_clim()
        for (r, c), v in np.ndenumerate(table.to_numpy(float)):
            if not np.isnan(v):  # dark text on the bright end of viridis, light on the dark end
                bright = high > low and (v - low) / (high - low) > 0.6
                ax.text(c, r, f"{v:.3g}", ha="center", va="center", fontsize=8,
                        color="k" if bright else "w")
        fig.colorbar(image, ax=ax, label=LABELS.get(value, value))
    return _finish(fig, path)


def plot_aggregates(table: pd.DataFrame, by: str = "algo", path: str | os.PathLike | None = None,
                    title: str = ""):
    """`jaxac.analysis.aggregate_scores`' table: one panel per statistic (IQM, median, mean,
    optimality gap), a point with its confidence interval per value of `by`."""
    from jaxac.analysis import AGGREGATES

    plt = _pyplot()
    names = {"iqm": "IQM", "median": "median", "mean": "mean",
             "optimality_gap": "optimality gap (lower is better)"}
    fig, axes = plt.subplots(1, len(AGGREGATES), figsize=(3.2 * len(AGGREGATES), 0.6 * len(table)
                                                               + 1.6), dpi=100, squeeze=False)
    rows = list(range(len(table)))
    for ax, stat in zip(axes[0], AGGREGATES):
        for i, (_, row) in enumerate(table.iterrows()):
            ax.errorbar(row[stat], i, xerr=[[row[stat] - row[f"{stat}_low"]],
                                           [row[f"{stat}_high"] - row[stat]]],
                        fmt="o", color=f"C{i % 10}", capsize=4)
        ax.set_yticks(rows, [str(v) for v in table[by]] if stat == AGGREGATES[0] else [])
        ax.set_xlabel(names[stat])
        ax.grid(alpha=0.3, axis="x")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_performance_profiles(profiles: pd.DataFrame, by: str = "algo",
                              path: str | os.PathLike | None = None, title: str = ""):
    """`jaxac.analysis.performance_profiles`: the fraction of scores above tau, with its band,
    one line per value of `by`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for i, (name, group) in enumerate(profiles.groupby(by, sort=True)):
        ax.plot(group["tau"], group["fraction"], color=f"C{i % 10}", lw=2, label=str(name))
        ax.fill_between(group["tau"], group["low"], group["high"], color=f"C{i % 10}",
                        alpha=0.2, lw=0)
    ax.set_xlabel("normalised score tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(fig, path)
