"""Loading run directories into pandas, and plots of learning curves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """All records of a run's `metrics.jsonl`; a partial last line (a killed run) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    return pd.DataFrame.from_records(records)


def plot_learning_curve(metrics: pd.DataFrame, title: str = "", threshold: float | None = None,
                        path: str | os.PathLike | None = None):
    """Episode return against environment steps, one line per seed; saved to `path` if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for i, (seed, group) in enumerate(metrics.groupby("seed_index")):
        color = f"C{i % 10}"  # one colour per seed: faint interval mean, bold last-100 mean
        ax.plot(group["env_steps"], group["episode_return_mean"], color=color, alpha=0.3, lw=1,
                label=f"seed {seed}: interval mean")
        ax.plot(group["env_steps"], group["return_last100"], color=color, lw=2,
                label=f"seed {seed}: last 100 episodes")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"solved ({threshold:g})")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
