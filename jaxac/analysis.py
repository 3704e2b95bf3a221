"""Loading run and sweep directories into pandas.

A *run directory* is one `python -m jaxac.run` (or one job of a `-m` sweep): it holds
`.hydra/config.yaml`, `metrics.jsonl` and, once finished, `summary.json` (or `failure.json`).
A *sweep directory* holds one run directory per job. `load_results(paths)` takes any mix of them:

    results = load_results("multirun/2026-11-21/15-02-11")
    results.metrics   # tidy: one row per logged point per seed, with the config columns
    results.runs      # one row per run: config columns, status and summary figures

Config columns: `algo`, `env`, `workers`, `rollout_length`, `seed`, `total_steps`, plus every key
that any of the loaded runs overrode on the command line or swept (dotted, e.g. `algo.lr`), plus
`job_dir`. Runs that are still going, were killed or failed load too: a partial last line in
`metrics.jsonl` is skipped, and `status` says what became of each run. A file that cannot be read
costs only its own run's figures: `runs["problems"]` (and `Results.problems`) says which file and
line, and `runs["duplicated_log_points"]` counts log points logged twice.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from jaxac.metrics import METRICS_FILE

log = logging.getLogger("jaxac")

# algo.backend: A3C runs of the thread and the Ray backend load side by side
BASE_COLUMNS = ("algo", "algo.backend", "env", "workers", "rollout_length", "seed",
                "total_steps")
STATUSES = ("completed", "interrupted", "diverged", "failed", "running or killed")


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """All records of a run's `metrics.jsonl`; a partial last line (a killed run) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    return pd.DataFrame.from_records(records)


def find_run_dirs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Every run directory at or below `paths` (run directories, sweep directories, or parents
    of either), sorted. Raises FileNotFoundError for a path that does not exist or holds none."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        # `.hydra/config.yaml` marks a run; `.hydra/resumed-*/config.yaml` (a resume's) does not
        runs = [p.parent.parent for p in path.rglob("config.yaml") if p.parent.name == ".hydra"]
        if not runs:
            raise FileNotFoundError(f"{path} holds no jaxac run directory (none with "
                                    ".hydra/config.yaml below it)")
        found.extend(runs)
    return sorted(set(found))


def latest_sweep(directory: str | os.PathLike = "multirun") -> Path:
    """The most recently started sweep (a folder with Hydra's `multirun.yaml`) below `directory`."""
    sweeps = [p.parent for p in Path(directory).rglob("multirun.yaml")]
    if not sweeps:
        raise FileNotFoundError(f"no sweep (multirun.yaml) below {directory}; run one with "
                                "python -m jaxac.run -m ...")
    return max(sweeps, key=lambda p: (p / "multirun.yaml").stat().st_mtime)


@dataclass
class Results:
    """What `load_results` returns."""

    metrics: pd.DataFrame  # one row per log point per seed
    runs: pd.DataFrame  # one row per run
    config_columns: list[str]  # the config columns both frames carry (job_dir last)
    swept_columns: list[str]  # the config columns whose value differs between runs
    # job_dir -> what could not be read there (file and line), for the runs with problems
    problems: dict[str, list[str]] = field(default_factory=dict)


def _read(run_dir: Path, problems: list[str]) -> tuple[dict, list[str], pd.DataFrame]:
    """(flat config, overridden keys, metrics) of one run; what cannot be read is noted in
    `problems` instead of raised."""
    try:
        flat, keys = _run_config(run_dir)
    except Exception as error:  # noqa: BLE001 - any unreadable config costs only this run
        problems.append(f"{run_dir / '.hydra' / 'config.yaml'}: {error}")
        flat, keys = {}, []
    try:
        metrics = read_metrics(run_dir)
    except (OSError, ValueError) as error:
        problems.append(str(error))
        metrics = pd.DataFrame()
    return flat, keys, metrics


def load_results(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Results:
    """Load every run at or below `paths` into a tidy metrics frame and a per-run frame; a run
    whose files cannot be read loads with what can, and says what could not."""
    run_dirs = find_run_dirs(paths)
    problems: dict[str, list[str]] = {str(d): [] for d in run_dirs}
    read = [_read(d, problems[str(d)]) for d in run_dirs]
    overridden = sorted({k for _, keys, _ in read for k in keys} - set(BASE_COLUMNS))
    columns = list(BASE_COLUMNS) + overridden
    metric_frames, run_rows = [], []
    for run_dir, (flat, _, metrics) in zip(run_dirs, read):
        config = {c: flat.get(c) for c in columns} | {"job_dir": str(run_dir)}
        noted = problems[str(run_dir)]
        duplicated = 0
        if len(metrics) and {"seed_index", "env_steps"} <= set(metrics):
            duplicated = int(metrics.duplicated(["seed_index", "env_steps"]).sum())
            if duplicated:
                noted.append(f"{run_dir / METRICS_FILE}: {duplicated} log point(s) logged twice")
        if len(metrics):
            metric_frames.append(metrics.assign(**config))
        record = _run_record(run_dir, metrics, noted)
        run_rows.append({**config, **record, "duplicated_log_points": duplicated,
                         "problems": "; ".join(noted) or None})
    problems = {d: p for d, p in problems.items() if p}
    for job_dir, noted in problems.items():
        log.warning(f"{job_dir}: " + "; ".join(noted))
    config_columns = columns + ["job_dir"]
    runs = pd.DataFrame.from_records(run_rows)
    metrics = (pd.concat(metric_frames, ignore_index=True) if metric_frames
               else pd.DataFrame(columns=config_columns))
    swept = [c for c in columns if runs[c].astype(str).nunique() > 1]
    return Results(metrics, runs, config_columns, swept, problems)


def _run_config(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """(flattened config with `algo` and `env` as names, keys overridden for this run)."""
    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"),
                                 resolve=False)
    flat = _flatten(cfg)
    flat["algo"] = cfg.get("algo", {}).get("name")
    flat["env"] = cfg.get("env", {}).get("name")
    keys = []
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if overrides_file.exists():
        for override in OmegaConf.load(overrides_file):
            key, _, value = str(override).lstrip("+~").partition("=")
            if key.startswith("hydra") or key in ("resume",):
                continue
            keys.append(key)
            if key not in flat:  # a config group such as `experiment`: keep its choice
                flat[key] = value
    return flat, keys


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tuple(tree) if isinstance(tree, list) else tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}." if isinstance(value, dict) else
                             f"{prefix}{key}"))
    return {k.rstrip("."): v for k, v in flat.items()}


def _json_file(path: Path, problems: list[str]) -> dict | None:
    """The JSON object in `path`, or None if it is absent or unreadable (noted in `problems`)."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problems.append(f"{path}: not readable as JSON ({error})")
        return None
    if not isinstance(value, dict):
        problems.append(f"{path}: not a JSON object")
        return None
    return value


def _run_record(run_dir: Path, metrics: pd.DataFrame, problems: list[str]) -> dict[str, Any]:
    """Status and headline figures of one run, from its summary (or failure, or metrics)."""
    summary = _json_file(run_dir / "summary.json", problems)
    failure = _json_file(run_dir / "failure.json", problems)
    usable = len(metrics) and {"seed_index", "env_steps", "return_last100"} <= set(metrics)
    if len(metrics) and not usable:
        problems.append(f"{run_dir / METRICS_FILE}: lines without the fields of a metric record")
    metrics = metrics if usable else pd.DataFrame()
    last = metrics.groupby("seed_index").tail(1) if len(metrics) else None
    figures: dict[str, Any] = {}
    if summary is not None:
        try:
            figures = _summary_figures(summary, metrics)
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"{run_dir / 'summary.json'}: not a jaxac summary ({error!r} "
                            "missing or malformed)")
            summary = None
    record: dict[str, Any] = {
        "status": _status(summary, failure),
        "error": failure.get("message") if failure else None,
        "env_steps": int(metrics["env_steps"].max()) if len(metrics) else 0,
        "return_last100": _mean(last["return_last100"]) if last is not None else np.nan,
    }
    return {**record, **figures}


def _summary_figures(summary: dict, metrics: pd.DataFrame) -> dict[str, Any]:
    """The headline figures of a summary.json (KeyError or TypeError if it is not one)."""
    record: dict[str, Any] = {"interrupted": bool(summary["interrupted"])}
    solved = summary["solved"]
    seeds_steps = [np.nan if s is None else s for s in solved["env_steps"]]
    seeds_wall = [np.nan if s is None else s for s in solved["wall_seconds"]]
    record.update({
        "env_steps": summary["env_steps"],
        "final_return": _none_to_nan(summary["final_eval"]["return_mean"]),
        "final_return_per_seed": tuple(_none_to_nan(x) for x in
                                       summary["final_eval"]["return_mean_per_seed"] or ()),
        "solved": bool(solved["all_seeds"]),
        # Time to threshold: when the last-100 training mean first reached the threshold; for a
        # run of several seeds, when all of them had (NaN if any never did).
        "threshold_env_steps": float(np.max(seeds_steps)) if seeds_steps else np.nan,
        "threshold_wall_seconds": float(np.max(seeds_wall)) if seeds_wall else np.nan,
        "steps_per_second": _none_to_nan(summary["steps_per_second_median"]),
        "wall_seconds": summary["wall_seconds"],
        "compile_seconds": summary["compile_seconds"],
        "peak_memory_mb": summary.get("peak_memory_mb"),
    })
    during = summary.get("eval_during")
    if during and during.get("best"):
        record.update(eval_best_return=during["best"]["return_mean"],
                      eval_best_env_steps=during["best"]["env_steps"],
                      eval_last_return=during["last"]["return_mean"])
    objective = summary.get("objective")
    if objective:
        record["objective"] = _none_to_nan(objective["value"])
    a3c = summary.get("a3c")
    if a3c:
        record.update({"staleness_mean": a3c["staleness_mean"],
                       "interleaved_updates": a3c["interleaved_updates"],
                       "updates_applied": a3c["updates_applied"]})
        if len(metrics) and "updates_per_second" in metrics:
            record["updates_per_second"] = float(metrics["updates_per_second"].median())
    return record


def _status(summary: dict | None, failure: dict | None) -> str:
    if failure is not None and (summary is None or failure.get("kind") != "diverged"):
        return "failed"
    if summary is None:
        return "running or killed"
    if summary.get("diverged"):
        return "diverged"
    return "interrupted" if summary["interrupted"] else "completed"


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else np.nan


def _none_to_nan(value: Any) -> float:
    return np.nan if value is None else float(value)


def seed_table(runs: pd.DataFrame, values: Iterable[str], by: Iterable[str]) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of `values`, per combination of `by`."""
    values, by = list(values), list(by)
    table = runs.groupby(by, dropna=False)[values].agg(["mean", "std", "count"])
    return table.round(3)


def load_study(sweep_dir: str | os.PathLike) -> Results:
    """An Optuna search (`+experiment=tune`): its trials as `load_results` loads a sweep, with
    `runs` sorted by `trial` (Hydra's job number) and given `objective` (what the trial
    returned; NaN for one that failed) and `trial_state` ("complete", or "failed" for a trial
    that failed or diverged, which Optuna was told as FAIL). The search's best trial, as the
    sweeper wrote it (`optimization_results.yaml`), is in `runs.attrs["best"]`."""
    sweep_dir = Path(sweep_dir)
    results = load_results(sweep_dir)
    runs = results.runs
    runs["trial"] = [_job_number(Path(d)) for d in runs["job_dir"]]
    if "objective" not in runs:
        runs["objective"] = np.nan
    runs["trial_state"] = np.where((runs["status"] == "completed") & runs["objective"].notna(),
                                   "complete", "failed")
    results.runs = runs.sort_values("trial", ignore_index=True)
    best = sweep_dir / "optimization_results.yaml"
    results.runs.attrs["best"] = (OmegaConf.to_container(OmegaConf.load(best))
                                  if best.exists() else None)
    return results


def _job_number(run_dir: Path) -> int | None:
    try:
        return int(OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.job.num)
    except Exception:  # noqa: BLE001 - a run without Hydra's record has no trial number
        return None


# ----- aggregate statistics across seeds and environments (rliable) -----
AGGREGATES = ("iqm", "median", "mean", "optimality_gap")


def seed_scores(runs: pd.DataFrame, value: str = "final_return_per_seed",
                normalize: str | dict[str, tuple[float, float]] | None = "reference"
                ) -> pd.DataFrame:
    """One row per trained agent (each seed of each run): its config columns, `seed_index`
    and `score`, the final greedy return normalised to (return - low) / (high - low).

    `normalize`: "reference" (low: a random policy's return, high: the published reference,
    `jaxac.references`), a dict env -> (low, high), or None for the
    raw returns. Runs that did not complete are left out."""
    done = runs[runs["status"] == "completed"]
    rows = []
    for _, run in done.iterrows():
        for i, x in enumerate(run[value]):
            rows.append({**run.drop(labels=[value]).to_dict(), "seed_index": i,
                         "return": x})
    scores = pd.DataFrame(rows)
    if not len(scores):
        raise ValueError("no completed run with final greedy returns to aggregate")
    bounds = _normalization(normalize, sorted(scores["env"].unique()))
    if bounds is None:
        scores["score"] = scores["return"]
    else:
        low = scores["env"].map(lambda e: bounds[e][0])
        high = scores["env"].map(lambda e: bounds[e][1])
        scores["score"] = (scores["return"] - low) / (high - low)
    return scores


def _normalization(normalize, envs: list[str]) -> dict[str, tuple[float, float]] | None:
    if normalize is None:
        return None
    if normalize == "reference":
        from jaxac.references import RANDOM_RETURNS, REFERENCES

        normalize = {r.env: (RANDOM_RETURNS[r.env], r.value) for r in REFERENCES
                     if r.value is not None and r.env in RANDOM_RETURNS}
    missing = [e for e in envs if e not in normalize]
    if missing:
        raise ValueError(f"no (low, high) to normalise the scores of {', '.join(missing)}: pass "
                         "normalize={env: (low, high)}, or normalize=None for raw returns")
    return {e: (float(normalize[e][0]), float(normalize[e][1])) for e in envs}


def score_matrices(scores: pd.DataFrame, by: str = "algo") -> dict[str, np.ndarray]:
    """rliable's input: per value of `by`, scores `[agents, environments]` (environments in
    sorted order; every environment cut to the fewest agents any of them has)."""
    envs = sorted(scores["env"].unique())
    matrices = {}
    for name, group in scores.groupby(by, sort=True):
        columns = [group.loc[group["env"] == e, "score"].to_numpy(float) for e in envs]
        if any(len(c) == 0 for c in columns):
            absent = [e for e, c in zip(envs, columns) if len(c) == 0]
            raise ValueError(f"{by}={name} has no scores on {', '.join(absent)}: aggregate "
                             "over the environments every group has")
        n = min(len(c) for c in columns)
        if any(len(c) != n for c in columns):
            log.warning(f"{by}={name}: environments have {sorted({len(c) for c in columns})} "
                        f"agents; each is cut to the first {n}")
        matrices[str(name)] = np.stack([c[:n] for c in columns], axis=1)
    return matrices


def stratified_bootstrap(matrix: np.ndarray, statistic, reps: int, confidence: float,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Percentile confidence interval of `statistic(matrix)` (an array of statistics) by the
    stratified bootstrap of rliable (Agarwal et al., 2021): each resample draws, with
    replacement, as many agents as there are within each environment (a column) independently.
    Returns (low, high), one entry per statistic."""
    agents, envs = matrix.shape
    draws = rng.integers(0, agents, size=(reps, agents, envs))
    columns = np.arange(envs)[None, :]
    samples = np.stack([statistic(matrix[d, columns]) for d in draws])
    tail = 100 * (1 - confidence) / 2
    return np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)


def aggregate_scores(scores: pd.DataFrame, by: str = "algo", reps: int = 2000,
                     confidence: float = 0.95, seed: int = 0,
                     optimality_target: float = 1.0) -> pd.DataFrame:
    """Interquartile mean, median, mean and optimality gap of the scores across agents and
    environments, per value of `by`, each with its stratified-bootstrap confidence interval
    (`reps` resamples, seeded by `seed`). The statistics are rliable's
    (`rliable.metrics.aggregate_*`); the optimality gap is the mean shortfall below
    `optimality_target` (1.0: the reference, with normalised scores), lower is better.

    (The bootstrap is `stratified_bootstrap`, not rliable's own: rliable 1.2 resamples through
    arch < 8, which does not import under pandas 3.)"""
    from rliable import metrics

    def aggregates(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_median(x),
                         metrics.aggregate_mean(x),
                         metrics.aggregate_optimality_gap(x, optimality_target)])

    rng = np.random.default_rng(seed)
    rows = []
    for name, matrix in score_matrices(scores, by).items():
        point = aggregates(matrix)
        low, high = stratified_bootstrap(matrix, aggregates, reps, confidence, rng)
        row = {by: name, "agents": matrix.shape[0], "environments": matrix.shape[1]}
        for i, stat in enumerate(AGGREGATES):
            row.update({stat: float(point[i]), f"{stat}_low": float(low[i]),
                        f"{stat}_high": float(high[i])})
        rows.append(row)
    return pd.DataFrame(rows)


def performance_profiles(scores: pd.DataFrame, by: str = "algo",
                         taus: Iterable[float] | None = None, reps: int = 2000,
                         confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Score distributions (rliable's performance profiles): per value of `by` and threshold
    `tau`, the fraction of agent-environment scores above tau, with its stratified-bootstrap
    confidence interval. Columns: by, tau, fraction, low, high."""
    matrices = score_matrices(scores, by)
    if taus is None:
        values = np.concatenate([m.ravel() for m in matrices.values()])
        taus = np.linspace(min(0.0, values.min()), max(1.0, values.max()), 41)
    taus = np.asarray(list(taus), float)

    def profile(x: np.ndarray) -> np.ndarray:
        return (x.ravel()[:, None] > taus[None, :]).mean(axis=0)

    rng = np.random.default_rng(seed)
    rows = []
    for name, matrix in matrices.items():
        fraction = profile(matrix)
        low, high = stratified_bootstrap(matrix, profile, reps, confidence, rng)
        rows += [{by: name, "tau": t, "fraction": float(fraction[j]), "low": float(low[j]),
                  "high": float(high[j])} for j, t in enumerate(taus)]
    return pd.DataFrame(rows)
