"""The learning suite: every environment preset in both algorithms over several seeds, and a table
of what they reached next to the published references.

    python -m jaxac.suite                       # everything, 5 seeds, into suite/<date>
    python -m jaxac.suite --envs catch,acrobot --algos a2c --seeds 3 --out suite/try

Each (preset, algorithm) pair is one *entry*: A2C trains its seeds side by side in one run
(`seeds=N`, vmapped), A3C runs one job per seed (`seed=i`). Every run is a plain
`python -m jaxac.run` in its own directory under `OUT/runs/`, so a stopped suite picks up where it
stopped: finished runs are kept, a run with a checkpoint is resumed (`resume=`), and `--report`
rebuilds the table from what is there without training. The results are `OUT/results.md`,
`OUT/results.csv` and `OUT/learning_curves.png`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from jaxac.references import BY_PRESET, REFERENCES, Reference, random_policy_returns

ALGOS = ("a2c", "a3c")
TABLE_FILE, CSV_FILE, FIGURE_FILE = "results.md", "results.csv", "learning_curves.png"
CONFIDENCE, BOOTSTRAP_RESAMPLES = 0.95, 10_000




@dataclass
class Job:
    """One `python -m jaxac.run` of an entry: all seeds (A2C) or one seed (A3C)."""

    reference: Reference
    algo: str
    seeds: list[int]  # the `seed` values this job trains (A2C: seed 0 with `seeds=len`)
    run_dir: Path
    overrides: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        seeds = (f"{len(self.seeds)} seeds" if self.algo == "a2c"
                 else f"seed {self.seeds[0]}")
        return f"{self.algo} {self.reference.preset} ({seeds})"

    def command(self) -> list[str]:
        """The command that trains this job, or continues it from its checkpoint."""
        if resumable(self.run_dir):
            return [sys.executable, "-m", "jaxac.run", f"resume={self.run_dir}"]
        seeding = ([f"seed={self.seeds[0]}", f"seeds={len(self.seeds)}"] if self.algo == "a2c"
                   else [f"seed={self.seeds[0]}", "seeds=1"])
        threshold = ([f"env.solve_threshold={self.reference.value}"]
                     if self.reference.value is not None else [])
        return [sys.executable, "-m", "jaxac.run", f"algo={self.algo}",
                f"env={self.reference.preset}", *seeding, *threshold, *self.overrides,
                f"hydra.run.dir={self.run_dir}"]


def plan(out: Path, presets: list[str], algos: list[str], seeds: int,
         overrides: list[str] = (), first_seed: int = 0) -> list[Job]:
    """The jobs of a suite, in order: every preset in every algorithm, seeds `first_seed` on
    (A2C: `seed=first_seed` and `seeds=N`, whose agents derive their keys from (seed, index);
    A3C: one job per `seed=first_seed + i`)."""
    jobs = []
    numbers = list(range(first_seed, first_seed + seeds))
    for preset in presets:
        reference = BY_PRESET[preset]
        for algo in algos:
            entry = out / "runs" / f"{algo}_{preset}"
            if algo == "a2c":
                jobs.append(Job(reference, algo, numbers, entry, list(overrides)))
            else:
                jobs += [Job(reference, algo, [s], entry / f"seed{s}", list(overrides))
                         for s in numbers]
    return jobs


def finished(run_dir: Path) -> bool:
    """A run that trained to its end (not interrupted) and wrote its summary."""
    summary = _read_json(run_dir / "summary.json")
    return summary is not None and not summary.get("interrupted", True)


def resumable(run_dir: Path) -> bool:
    """A run that stopped before its end and left an intact training checkpoint to continue
    from (the one `resume=` would load)."""
    from jaxac.checkpoint import find_checkpoint

    return find_checkpoint(run_dir) is not None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----- running -----------------------------------------------------------------------------------
def run_jobs(jobs: list[Job], echo=print) -> dict[str, str]:
    """Run every job not finished yet, one after another; returns {label: problem} for the jobs
    that failed (the others go on). Stops at an interrupted job (Ctrl-C), raising
    KeyboardInterrupt once the job has saved its checkpoint."""
    todo = [job for job in jobs if not finished(job.run_dir)]
    done_before = len(jobs) - len(todo)
    if done_before:
        echo(f"suite: {done_before} of {len(jobs)} runs already finished, kept")
    problems: dict[str, str] = {}
    started, work_done = time.monotonic(), 0.0
    work = {id(job): _work(job) for job in todo}
    for i, job in enumerate(todo, 1):
        tag = f"[{done_before + i}/{len(jobs)}]"
        how = "resuming" if resumable(job.run_dir) else "starting"
        echo(f"suite {tag} {how} {job.label} in {job.run_dir}")
        if not resumable(job.run_dir) and job.run_dir.exists():
            shutil.rmtree(job.run_dir)  # a run that ended before its first checkpoint
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        code, tail = _run(job.command(), tag, echo)
        if code == 130:
            raise KeyboardInterrupt
        if code != 0 or not finished(job.run_dir):
            problems[job.label] = f"exit code {code}: " + " | ".join(tail)[-600:]
            echo(f"suite {tag} {job.label} FAILED (exit code {code}); see {job.run_dir}")
        work_done += work[id(job)]
        elapsed = time.monotonic() - started
        left = elapsed / work_done * (sum(work.values()) - work_done) if work_done else 0.0
        echo(f"suite: {done_before + i}/{len(jobs)} runs done, {_clock(elapsed)} this session, "
             f"about {_clock(left)} left")
    return problems


def _work(job: Job) -> float:
    """A rough cost of a job for the time-left estimate: its env steps, all seeds counted."""
    from jaxac.config import compose_config

    cfg = compose_config([f"algo={job.algo}", f"env={job.reference.preset}", *job.overrides])
    return float(cfg.total_steps) * len(job.seeds)


def _run(command: list[str], tag: str, echo) -> tuple[int, list[str]]:
    """Run a child, passing its progress lines through (prefixed with `tag`); returns its exit
    code and its last lines."""
    tail: deque[str] = deque(maxlen=20)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, HYDRA_FULL_ERROR="1"))
    try:
        for line in child.stdout:
            line = line.rstrip()
            tail.append(line)
            if " - [" in line and " steps " in line or " - done: " in line:
                echo(f"  {tag} {line.split(' - ', 1)[-1]}")
        return child.wait(), list(tail)
    except KeyboardInterrupt:  # the child got the same SIGINT: let it checkpoint and stop
        child.wait()
        raise


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


# ----- the results table -------------------------------------------------------------------------
def interquartile_mean(values: np.ndarray) -> float:
    """The mean of the middle 50% of `values` (rliable's IQM: 25% trimmed from each end, with
    fractional weights where the quartiles fall between values)."""
    x = np.sort(np.asarray(values, float))
    n = len(x)
    low, high = 0.25 * n, 0.75 * n
    edges = np.arange(n + 1)
    weights = np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0.0, None)
    return float(np.sum(weights * x) / np.sum(weights))


def bootstrap_interval(values: np.ndarray, confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over the seeds in `values`."""
    x = np.asarray(values, float)
    if len(x) == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    stats = x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass
class Entry:
    """What one (preset, algorithm) reached, per seed."""

    reference: Reference
    algo: str
    budget: int  # env steps per seed
    final_returns: list[float]  # final greedy evaluation, one per finished seed
    steps_to_reference: list[float | None]  # per seed; None: never reached
    wall_to_reference: list[float | None]
    wall_seconds: float  # the entry's training wall time, all its jobs together
    missing: int = 0  # seeds without a result: their run has not finished, or it diverged

    def row(self) -> dict:
        """The entry's line of the results table (statistics over the finished seeds)."""
        x = np.asarray(self.final_returns, float)
        low, high = bootstrap_interval(x) if len(x) else (math.nan, math.nan)
        reached = [s for s in self.steps_to_reference if s is not None]
        walls = [w for w in self.wall_to_reference if w is not None]
        ref = self.reference
        return {
            "environment": ref.env, "algo": self.algo, "seeds": len(x),
            "mean": float(x.mean()) if len(x) else math.nan,
            "iqm": interquartile_mean(x) if len(x) else math.nan,
            "ci_low": low, "ci_high": high,
            "reference": ref.value, "reference_steps": ref.steps, "source": ref.source,
            "budget_steps": self.budget,
            "seeds_reaching_reference": len(reached),
            "median_steps_to_reference": float(np.median(reached)) if reached else None,
            "median_wall_seconds_to_reference": float(np.median(walls)) if walls else None,
            "wall_seconds": self.wall_seconds, "missing_seeds": self.missing,
        }


def collect(jobs: list[Job]) -> list[Entry]:
    """Read every finished job's summary into one Entry per (preset, algorithm)."""
    entries: dict[tuple[str, str], Entry] = {}
    for job in jobs:
        key = (job.reference.preset, job.algo)
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = Entry(job.reference, job.algo, 0, [], [], [], 0.0)
        summary = _read_json(job.run_dir / "summary.json") if finished(job.run_dir) else None
        if summary is None:
            entry.missing += len(job.seeds)
            continue
        entry.budget = int(summary["env_steps"])
        returns = summary["final_eval"]["return_mean_per_seed"] or []
        entry.missing += sum(x is None for x in returns)  # diverged: no evaluation to count
        entry.final_returns += [float(x) for x in returns if x is not None]
        solved = summary["solved"]
        entry.steps_to_reference += solved["env_steps"] if solved["threshold"] is not None \
            else [None] * len(job.seeds)
        entry.wall_to_reference += solved["wall_seconds"] if solved["threshold"] is not None \
            else [None] * len(job.seeds)
        entry.wall_seconds += float(summary["wall_seconds"])
    return list(entries.values())


COLUMNS = (  # (csv field, markdown header)
    ("environment", "environment"), ("algo", "algo"), ("seeds", "seeds"),
    ("mean", "mean"), ("iqm", "IQM"), ("ci", "95% CI of the mean"),
    ("reference", "reference"), ("steps", "env steps (reference's)"),
    ("to_reference", "to reference: seeds, median steps, median wall"),
    ("wall_seconds", "wall (all seeds)"), ("source", "reference from"),
)


def _number(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def _steps(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def markdown_table(rows: list[dict]) -> str:
    """The results table in markdown, one line per (environment, algorithm)."""
    lines = ["| " + " | ".join(header for _, header in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for r in rows:
        n = r["seeds"]
        to_ref = (f"{r['seeds_reaching_reference']}/{n}, {_steps(r['median_steps_to_reference'])},"
                  f" {_number(r['median_wall_seconds_to_reference'], 0)} s"
                  if r["reference"] is not None else "-")
        ref_steps = f" ({_steps(r['reference_steps'])})" if r["reference_steps"] else ""
        missing = r["missing_seeds"]
        seeds = f"{n}" + (f" (+{missing} without a result)" if missing else "")
        cells = [r["environment"], r["algo"], seeds, _number(r["mean"], 2), _number(r["iqm"], 2),
                 f"[{_number(r['ci_low'], 2)}, {_number(r['ci_high'], 2)}]",
                 _number(r["reference"], 1), f"{_steps(r['budget_steps'])}{ref_steps}", to_ref,
                 f"{_number(r['wall_seconds'], 0)} s", r["source"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, jobs: list[Job], header: str = "") -> list[dict]:
    """Write results.md, results.csv and learning_curves.png for the finished runs of `jobs`;
    returns the table's rows."""
    rows = [entry.row() for entry in collect(jobs)]
    out.mkdir(parents=True, exist_ok=True)
    (out / TABLE_FILE).write_text(header + markdown_table(rows))
    with open(out / CSV_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["environment"])
        writer.writeheader()
        writer.writerows(rows)
    plot_suite(jobs, out / FIGURE_FILE)
    return rows


def plot_suite(jobs: list[Job], path: Path) -> None:
    """Learning curves of the finished runs (last-100 training return, mean and 95% band over
    seeds) against env steps, one panel per environment, one line per algorithm, the reference
    dashed."""
    from jaxac.analysis import read_metrics
    from jaxac.plots import _finish, _pyplot, mean_and_band

    curves: dict[str, dict[str, list]] = {}
    for job in jobs:
        if not finished(job.run_dir):  # the table counts only finished runs, and so does this
            continue
        metrics = read_metrics(job.run_dir)
        if not len(metrics):
            continue
        for _, seed in metrics.groupby("seed_index"):
            curves.setdefault(job.reference.preset, {}).setdefault(job.algo, []).append(
                (seed["env_steps"].to_numpy(float), seed["return_last100"].to_numpy(float)))
    if not curves:
        return
    plt = _pyplot()
    columns = min(4, len(curves))
    rows = math.ceil(len(curves) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), dpi=100,
                             squeeze=False)
    for ax, (preset, by_algo) in zip(axes.flat, curves.items()):
        for i, (algo, runs) in enumerate(sorted(by_algo.items())):
            grid, mean, low, high = mean_and_band(runs)
            ax.plot(grid, mean, color=f"C{i}", lw=2, label=f"{algo} ({len(runs)} seeds)")
            ax.fill_between(grid, low, high, color=f"C{i}", alpha=0.2, lw=0)
        reference = BY_PRESET[preset].value
        if reference is not None:
            ax.axhline(reference, color="k", ls="--", lw=1, label="reference")
        ax.set_title(BY_PRESET[preset].env, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    axes[0][0].set_ylabel("return (last 100 training episodes)")
    fig.tight_layout()
    _finish(fig, path)


# ----- command line ------------------------------------------------------------------------------
def _names(text: str, allowed: list[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{what} {', '.join(unknown) or repr(text)} not known; allowed: {', '.join(allowed)}")
    return names


def main(argv: list[str] | None = None) -> int:
    presets = [r.preset for r in REFERENCES]
    parser = argparse.ArgumentParser(
        prog="python -m jaxac.suite",
        description="Train every environment preset in both algorithms over several seeds and "
                    "write a results table next to the published references.")
    parser.add_argument("--envs", default=",".join(presets),
                        type=lambda t: _names(t, presets, "--envs"),
                        help=f"comma-separated presets (default: all: {', '.join(presets)})")
    parser.add_argument("--algos", default="a2c,a3c",
                        type=lambda t: _names(t, list(ALGOS), "--algos"))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per entry (default 5)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds are FIRST_SEED, FIRST_SEED+1, ... (default 0)")
    parser.add_argument("--out", type=Path, default=Path("suite") / date.today().isoformat())
    parser.add_argument("--report", action="store_true",
                        help="only rebuild the table and figure from the runs already there")
    parser.add_argument("--random-returns", action="store_true",
                        help="only measure a uniformly random policy's mean return in each of "
                             "--envs (the zero of jaxac.analysis's normalised scores)")
    parser.add_argument("overrides", nargs="*",
                        help="config overrides for every run, e.g. total_steps=100000")
    args = parser.parse_args(argv)
    if args.random_returns:
        from jaxac import platform

        platform.set_up()
        for preset in args.envs:
            env = BY_PRESET[preset].env
            print(f"{env}: {random_policy_returns(env):.3f}", flush=True)
        return 0
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: allowed: a whole number >= 1")
    own = ("seed", "seeds", "algo", "env")
    refused = [o for o in args.overrides if o.split("=")[0].lstrip("+~") in own]
    if refused:
        parser.error(f"{', '.join(refused)}: the suite sets seed, seeds, algo and env itself "
                     "(use --first-seed, --seeds, --algos, --envs)")
    jobs = plan(args.out, args.envs, args.algos, args.seeds, args.overrides, args.first_seed)
    problems: dict[str, str] = {}
    interrupted = False
    if not args.report:
        print(f"suite: {len(jobs)} runs ({', '.join(args.algos)} x {', '.join(args.envs)}, "
              f"{args.seeds} seeds) into {args.out}", flush=True)
        try:
            problems = run_jobs(jobs, echo=lambda text: print(text, flush=True))
        except KeyboardInterrupt:
            interrupted = True
            print("suite: interrupted; run the same command again to continue", flush=True)
    header = (f"Suite of {date.today().isoformat()}: `python -m jaxac.suite "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n\n")
    write_results(args.out, jobs, header)
    print(f"suite: table in {args.out / TABLE_FILE}, figure in {args.out / FIGURE_FILE}")
    print((args.out / TABLE_FILE).read_text())
    for label, problem in problems.items():
        print(f"suite: {label} failed: {problem}", file=sys.stderr)
    return 130 if interrupted else (1 if problems else 0)


if __name__ == "__main__":
    sys.exit(main())
