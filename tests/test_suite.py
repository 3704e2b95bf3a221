"""The learning suite: its plan, its statistics, and a tiny real suite whose table is checked
against the per-seed returns its runs recorded."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from jaxac import suite
from jaxac.config import compose_config, validate

PRESETS = [r.preset for r in suite.REFERENCES]


@pytest.mark.slow  # 22 compositions: a few seconds
@pytest.mark.parametrize("algo", ["a2c", "a3c"])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset, algo):
    cfg = compose_config([f"algo={algo}", f"env={preset}"])
    validate(cfg, 2)
    assert cfg.env.name == suite.BY_PRESET[preset].env


def test_interquartile_mean_against_hand_computed_cases():
    # 4 values: the middle two; 5 values: 1/4, 1, 1, 1, 1/4 weights of the sorted values
    assert suite.interquartile_mean(np.array([10.0, 1.0, 3.0, 2.0])) == pytest.approx(2.5)
    x = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    expected = (0.25 * 1 + 2 + 0.25 * 3) / 1.5
    assert suite.interquartile_mean(x) == pytest.approx(expected)
    assert suite.interquartile_mean(np.array([7.0])) == 7.0


def test_bootstrap_interval_brackets_the_mean_and_is_degenerate_for_equal_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    low, high = suite.bootstrap_interval(x)
    assert low < x.mean() < high and low >= x.min() and high <= x.max()
    assert suite.bootstrap_interval(np.array([500.0] * 5)) == (500.0, 500.0)
    assert suite.bootstrap_interval(x) == suite.bootstrap_interval(x)  # a fixed resampling seed


def test_plan_seeds_and_directories(tmp_path):
    jobs = suite.plan(tmp_path, ["catch"], ["a2c", "a3c"], 3, first_seed=10)
    assert [j.label for j in jobs] == ["a2c catch (3 seeds)", "a3c catch (seed 10)",
                                       "a3c catch (seed 11)", "a3c catch (seed 12)"]
    a2c = jobs[0].command()
    assert "seed=10" in a2c and "seeds=3" in a2c and "env.solve_threshold=1.0" in a2c
    assert jobs[2].run_dir == tmp_path / "runs" / "a3c_catch" / "seed11"
    # A run that stopped with a checkpoint continues from it rather than starting again.
    from jaxac.checkpoint import _digest

    folder = jobs[1].run_dir / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "state-000000001000.json").write_text("{}")  # corrupt: not resumable
    assert suite.resumable(jobs[0].run_dir) is False and suite.resumable(jobs[1].run_dir) is False
    payload, meta = b"state", {"env_steps": 1000}
    (folder / "state-000000001000.msgpack").write_bytes(payload)
    (folder / "state-000000001000.json").write_text(
        json.dumps({**meta, "sha256": _digest(payload, meta)}))
    assert jobs[1].command()[-1] == f"resume={jobs[1].run_dir}"
    assert not suite.finished(jobs[1].run_dir)


def test_the_suite_refuses_overrides_it_sets_itself(capsys):
    with pytest.raises(SystemExit):
        suite.main(["--envs", "catch", "seed=3"])
    assert "--first-seed" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_suite_writes_the_statistics_of_its_runs(tmp_path):
    out = tmp_path / "suite"
    command = [sys.executable, "-m", "jaxac.suite", "--envs", "catch", "--seeds", "2",
               "--out", str(out), "total_steps=2000", "eval_episodes=4", "log_interval=500"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[3/3]" in first.stdout and "left" in first.stdout
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["environment"], r["algo"]) for r in rows} == {("Catch-bsuite", "a2c"),
                                                            ("Catch-bsuite", "a3c")}
    for row in rows:
        preset = "catch"
        runs = out / "runs" / f"{row['algo']}_{preset}"
        summaries = ([runs / "summary.json"] if row["algo"] == "a2c"
                     else [runs / "seed0" / "summary.json", runs / "seed1" / "summary.json"])
        returns = [x for path in summaries
                   for x in json.loads(path.read_text())["final_eval"]["return_mean_per_seed"]]
        assert len(returns) == int(row["seeds"]) == 2
        assert float(row["mean"]) == pytest.approx(np.mean(returns))
        assert float(row["iqm"]) == pytest.approx(suite.interquartile_mean(np.array(returns)))
        low, high = suite.bootstrap_interval(np.array(returns))
        assert float(row["ci_low"]) == pytest.approx(low)
        assert float(row["ci_high"]) == pytest.approx(high)
        assert float(row["reference"]) == suite.BY_PRESET[preset].value
    table = (out / "results.md").read_text()
    assert "| Catch-bsuite | a3c | 2 |" in table and "gymnax README, PPO" in table
    assert (out / "learning_curves.png").stat().st_size > 10_000
    # Run again: every run is finished, nothing trains, the same table comes out.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 of 3 runs already finished" in again.stdout and "starting" not in again.stdout
    assert list(csv.DictReader(open(out / "results.csv"))) == rows
