"""Sweeps: the preset study, launchers, failing jobs, loading results and the analysis notebook."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from jaxac import plots
from jaxac.analysis import find_run_dirs, latest_sweep, load_results, read_metrics, seed_table

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "experiments" / "analysis.ipynb"


def sweep(*overrides, timeout=600):
    return subprocess.run([sys.executable, "-m", "jaxac.run", "-m", *overrides],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def preset_sweep(tmp_path_factory):
    """The preset study at a tiny budget, on the joblib launcher, with one invalid worker count
    (workers=0) so that some combinations fail."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    out = sweep("+experiment=workers_rollout", "total_steps=3000", "log_interval=1000",
                "eval_episodes=3", "eval_every=1500", "workers=0,2", "seed=0",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir, out


@pytest.mark.slow
def test_preset_sweep_runs_every_combination_and_survives_failures(preset_sweep):
    sweep_dir, out = preset_sweep
    assert out.returncode == 1, out.stderr[-3000:]  # something failed, and the exit status says so
    assert "workers=0 is not allowed" in out.stderr
    assert "Traceback" not in out.stderr  # an expected failure is a message, not a stack trace
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert len(jobs) == 2 * 2 * 2  # algo x workers x rollout_length (seed fixed)
    for job in jobs:  # directories are named by the swept values
        assert "algo=" in job and "workers=" in job and "rollout_length=" in job
        job_dir = sweep_dir / job
        if "workers=0" in job:
            failure = json.loads((job_dir / "failure.json").read_text())
            assert failure["kind"] == "config_error" and failure["key"] == "workers"
            assert not (job_dir / "metrics.jsonl").exists()
        else:
            summary = json.loads((job_dir / "summary.json").read_text())
            assert summary["env_steps"] > 0 and summary["config"]["total_steps"] == 3000


@pytest.mark.slow
def test_results_load_into_tidy_frames(preset_sweep):
    sweep_dir, _ = preset_sweep
    results = load_results(sweep_dir)
    runs, metrics = results.runs, results.metrics
    assert len(runs) == 8
    for column in ["algo", "workers", "rollout_length", "seed", "job_dir", "total_steps",
                   "experiment", "log_interval", "eval_episodes"]:
        assert column in runs and column in metrics
    assert set(results.swept_columns) == {"algo", "workers", "rollout_length"}
    assert sorted(runs["status"].value_counts().items()) == [("completed", 4), ("failed", 4)]
    assert set(metrics["workers"]) == {2} and set(metrics["algo"]) == {"a2c", "a3c"}
    assert set(metrics["rollout_length"]) == {5, 20}
    # every logged point of every completed run, each tagged with its own job's config
    for _, run in runs[runs.status == "completed"].iterrows():
        own = metrics[metrics.job_dir == run.job_dir]
        assert len(own) == len(read_metrics(run.job_dir)) > 0
        assert (own["algo"] == run.algo).all() and (own["rollout_length"] == run.rollout_length).all()
    a3c = runs[(runs.algo == "a3c") & (runs.status == "completed")]
    assert a3c["staleness_mean"].notna().all()
    table = seed_table(runs, ["final_return"], ["algo", "workers", "rollout_length"])
    assert len(table) == 8


@pytest.mark.slow
def test_plots_draw_and_save(preset_sweep, tmp_path):
    results = load_results(preset_sweep[0])
    runs = results.runs
    figures = {
        "curves": plots.plot_learning_curves(results.metrics, by=["algo", "rollout_length"],
                                             threshold=475, path=tmp_path / "curves.png"),
        "final": plots.plot_final_return_vs_workers(runs, path=tmp_path / "final.png"),
        "throughput": plots.plot_throughput_vs_workers(runs, path=tmp_path / "throughput.png"),
        "staleness": plots.plot_staleness_vs_workers(runs, path=tmp_path / "staleness.png"),
        "heatmap": plots.plot_heatmaps(runs, "final_return", path=tmp_path / "heatmap.png"),
    }
    for name, fig in figures.items():
        assert (tmp_path / f"{name}.png").stat().st_size > 5000
    assert len(figures["curves"].axes) == 2  # against env steps and against wall time
    assert [ax.get_title() for ax in figures["final"].axes] == ["algo=a2c", "algo=a3c"]
    assert len(figures["curves"].axes[0].get_lines()) >= 4  # 4 groups (+ threshold)


def test_mean_and_band_start_when_every_curve_has_and_hold_finished_ones():
    import numpy as np

    grid, mean, low, high = plots.mean_and_band(
        [(np.array([0.0, 10.0]), np.array([0.0, 10.0])),
         (np.array([5.0, 7.5]), np.array([7.0, 9.0]))], points=5)
    np.testing.assert_allclose(grid, [0, 2.5, 5, 7.5, 10])
    assert np.isnan(mean[:2]).all()  # the second curve has not started yet
    np.testing.assert_allclose(mean[2:], [6.0, 8.25, 9.5])  # it holds 9.0 after it ends
    np.testing.assert_allclose(high[2] - mean[2], 1.96 * np.std([5, 7], ddof=1) / np.sqrt(2))


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_the_sweep(preset_sweep):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:  # committed with outputs cleared
        assert cell.cell_type != "code" or (not cell.outputs and cell.execution_count is None)
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert "SWEEP_DIR =" in first_code.source
    first_code.source = first_code.source.replace("SWEEP_DIR = None",
                                                  f"SWEEP_DIR = {str(preset_sweep[0])!r}")
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # curves x2, heatmaps x2, final return, throughput, staleness, evaluation curves,
    # aggregates, performance profiles
    assert len(images) >= 10
    assert ": 8 runs" in "".join(o.get("text", "") for o in outputs)
    tables = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "optimality_gap" in tables and "iqm_high" in tables


@pytest.mark.slow
def test_basic_launcher_runs_the_jobs_after_a_failed_one(tmp_path):
    out = sweep("workers=0,2", "total_steps=2000", "eval_episodes=0", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 1
    assert "workers=0 is not allowed" in out.stderr and "Traceback" not in out.stderr
    [failed] = tmp_path.glob("*workers=0")
    [completed] = tmp_path.glob("*workers=2")
    assert json.loads((failed / "failure.json").read_text())["key"] == "workers"
    assert json.loads((completed / "summary.json").read_text())["env_steps"] == 2000


@pytest.mark.slow
def test_slurm_launcher_job_script_requests_the_configured_resources(tmp_path):
    script = tmp_path / "sbatch.sh"
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "slurm_dry_run.py"), str(script), "-m",
         "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.mem_gb=48",
         "workers=1,2,4", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = set(script.read_text().splitlines())
    for expected in ["#SBATCH --array=0-2%3",  # 3 jobs, at most array_parallelism at once
                     "#SBATCH --cpus-per-task=8", "#SBATCH --gpus-per-node=1",
                     "#SBATCH --mem=48GB", "#SBATCH --time=120", "#SBATCH --nodes=1",
                     "#SBATCH --ntasks-per-node=1", "#SBATCH --partition=debug",
                     "#SBATCH --job-name=jaxac_run", "#SBATCH --signal=USR2@120"]:
        assert expected in lines, expected


def test_latest_sweep_is_the_newest_one(tmp_path):
    import os

    for i, name in enumerate(["2026-11-20/10-00-00", "2026-11-21/09-00-00"]):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "multirun.yaml").write_text("{}")
        os.utime(tmp_path / name / "multirun.yaml", (1000 + i, 1000 + i))
    assert latest_sweep(tmp_path) == tmp_path / "2026-11-21/09-00-00"
    with pytest.raises(FileNotFoundError, match="no sweep"):
        latest_sweep(tmp_path / "2026-11-20" / "10-00-00" / "empty")


def test_find_run_dirs_refuses_a_path_without_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no jaxac run"):
        find_run_dirs(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_run_dirs(tmp_path / "nope")


def test_read_metrics_tolerates_only_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"env_steps": 1}\n{"env_steps": 2}\n{"env_st')
    assert list(read_metrics(tmp_path)["env_steps"]) == [1, 2]
    path.write_text('{"env_steps": 1}\n{"env_st\n{"env_steps": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(tmp_path)


@pytest.mark.slow
def test_a_killed_run_loads_with_its_status(tmp_path):
    from jaxac.config import compose_config
    from jaxac.run import execute

    execute(compose_config(["total_steps=6000", "log_interval=2000", "eval_episodes=0"]),
            tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()  # as if killed before the end
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"env_steps": 80')
    results = load_results(tmp_path)
    [run] = results.runs.to_dict("records")
    assert run["status"] == "running or killed" and run["env_steps"] == 6000
    assert list(results.metrics["env_steps"]) == [2000, 4000, 6000]


def _fake_run(run_dir, seed, lines, summary=None):
    """A run directory with a saved config, the given metrics.jsonl lines and summary text."""
    from omegaconf import OmegaConf

    from jaxac.config import compose_config

    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_config([f"seed={seed}"]), run_dir / ".hydra" / "config.yaml")
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    if summary is not None:
        (run_dir / "summary.json").write_text(summary)


def _point(steps, seed_index=0):
    return json.dumps({"seed_index": seed_index, "env_steps": steps, "return_last100": 10.0,
                       "episode_return_mean": 9.0})


def test_one_unreadable_run_does_not_stop_a_sweep_from_loading(tmp_path):
    _fake_run(tmp_path / "good", 0, [_point(100), _point(200)])
    _fake_run(tmp_path / "corrupt", 1, [_point(100), '{"env_st', _point(300)])
    _fake_run(tmp_path / "twice", 2, [_point(100), _point(200), _point(200)])
    _fake_run(tmp_path / "badsummary", 3, [_point(100)], summary="[1, 2]")
    _fake_run(tmp_path / "oddsummary", 4, [_point(100)], summary='{"env_steps": 5}')
    results = load_results(tmp_path)
    runs = results.runs.set_index("seed")
    assert len(runs) == 5 and sorted(results.metrics.seed.unique()) == [0, 2, 3, 4]
    assert results.runs.problems.isna().sum() == 1 and pd.isna(runs.loc[0, "problems"])
    assert runs.loc[0, "env_steps"] == 200
    # the file and the line of what could not be read
    assert "corrupt/metrics.jsonl" in runs.loc[1, "problems"]
    assert "line 2" in runs.loc[1, "problems"]
    assert runs.loc[2, "duplicated_log_points"] == 1 and "logged twice" in runs.loc[2, "problems"]
    assert "badsummary/summary.json: not a JSON object" in runs.loc[3, "problems"]
    assert "oddsummary/summary.json: not a jaxac summary" in runs.loc[4, "problems"]
    assert set(results.problems) == {str(tmp_path / n) for n in
                                     ("corrupt", "twice", "badsummary", "oddsummary")}


@pytest.mark.slow
def test_a_job_whose_value_does_not_compose_fails_alone(tmp_path):
    out = subprocess.run([sys.executable, "-m", "jaxac.run", "-m", "workers=4,1.5",
                          "total_steps=2000", "eval_episodes=1", f"hydra.sweep.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "workers=1.5" in out.stderr  # the failed job, named
    good, bad = (tmp_path / f"eval_episodes=1,total_steps=2000,workers={w}" for w in (4, "1.5"))
    assert json.loads((good / "summary.json").read_text())["env_steps"] == 2000  # it still ran
    failure = json.loads((bad / "failure.json").read_text())
    assert failure["kind"] == "config_error" and "workers" in failure["message"]
    runs = load_results(tmp_path).runs.set_index("workers")
    assert runs.loc[4, "status"] == "completed"
