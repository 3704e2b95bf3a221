"""A2C end to end: CartPole solved, the run directory, checkpoints, reproducibility, other envs."""

import json

import jax
import numpy as np
import pytest

from jaxac.analysis import read_metrics
from jaxac.checkpoint import load_policy
from jaxac.config import compose_config
from jaxac.envs import make_env, to_env_action
from jaxac.evaluate import evaluate_seeds, main as evaluate_main
from jaxac.metrics import MACHINE_DEPENDENT_FIELDS
from jaxac.run import execute

METRIC_FIELDS = {"env_steps", "updates", "wall_time", "steps_per_second", "episode_return_mean",
                 "episode_return_min", "episode_return_max", "episode_length_mean",
                 "return_last100", "policy_loss", "value_loss", "entropy", "grad_norm",
                 "learning_rate", "seed_index"}


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cartpole")
    summary = execute(compose_config([]), run_dir)  # the default config: A2C on CartPole-v1
    return run_dir, summary


@pytest.mark.slow
def test_default_config_solves_cartpole(cartpole_run):
    run_dir, summary = cartpole_run
    assert summary["solved"]["threshold"] == 475.0
    assert summary["solved"]["all_seeds"], summary["solved"]
    assert summary["final_eval"]["episodes"] == 100
    assert summary["final_eval"]["return_mean"] >= 475.0
    metrics = read_metrics(run_dir)
    assert metrics["return_last100"].max() >= 475.0
    assert summary["solved"]["env_steps"][0] <= summary["env_steps"]


@pytest.mark.slow
def test_run_directory_contents(cartpole_run):
    run_dir, summary = cartpole_run
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) >= 10
    assert METRIC_FIELDS <= set(records[0])
    steps = [r["env_steps"] for r in records]
    assert steps == sorted(steps) and steps[-1] == summary["env_steps"]
    on_disk = json.loads((run_dir / "summary.json").read_text())
    for key in ("final_eval", "solved", "steps_per_second_median", "compile_seconds",
                "environment", "config", "wall_seconds"):
        assert key in on_disk
    assert on_disk["environment"]["versions"]["jax"] == jax.__version__
    assert on_disk["compile_seconds"] > 0 and on_disk["steps_per_second_median"] > 0
    assert (run_dir / "learning_curve.png").stat().st_size > 10_000


@pytest.mark.slow
def test_checkpoint_loads_and_evaluates(cartpole_run, capsys):
    run_dir, summary = cartpole_run
    policy = load_policy(run_dir)
    returns = evaluate_seeds(policy.spec, policy.network.apply, policy.params, policy.obs_stats,
                             jax.random.PRNGKey(7), 20, policy.normalize_obs)
    assert returns.shape == (1, 20)
    assert returns.mean() >= 475.0
    evaluate_main([str(run_dir), "--episodes", "5"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["greedy_return_mean_per_seed"][0] >= 475.0


def _strip_timing(frame):
    return frame.drop(columns=[c for c in MACHINE_DEPENDENT_FIELDS if c in frame]).to_dict(
        "records")


@pytest.mark.slow
def test_same_seed_same_metrics_and_different_seed_differs(tmp_path):
    overrides = ["total_steps=30000", "log_interval=5000", "eval_episodes=5", "seeds=2"]
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        execute(compose_config(overrides + [f"seed={seed}"]), tmp_path / name)
        runs.append(read_metrics(tmp_path / name))
    assert _strip_timing(runs[0]) == _strip_timing(runs[1])
    assert _strip_timing(runs[0]) != _strip_timing(runs[2])
    # the two vmapped seeds are independent agents with different data
    a = runs[0]
    assert not np.allclose(a[a.seed_index == 0]["policy_loss"], a[a.seed_index == 1]["policy_loss"])


# Acrobot and Breakout train in tests/test_learning.py, every environment in test_every_env.py
@pytest.mark.parametrize("group,name", [("pendulum", "Pendulum-v1")])
@pytest.mark.slow
def test_other_environments_train(tmp_path, group, name):
    overrides = [f"env={group}", "workers=16", "rollout_length=5", "total_steps=4000",
                 "log_interval=1000",
                 "eval_episodes=2"]
    summary = execute(compose_config(overrides), tmp_path)
    assert summary["env"] == name
    metrics = read_metrics(tmp_path)
    assert len(metrics) == 4
    assert np.isfinite(metrics["policy_loss"]).all() and np.isfinite(metrics["value_loss"]).all()


def test_continuous_actions_are_clipped_to_the_space():
    spec = make_env("Pendulum-v1")
    assert not spec.discrete and spec.action_low[0] == -2.0 and spec.action_high[0] == 2.0
    clipped = to_env_action(spec, np.array([5.0], np.float32))
    assert float(np.asarray(clipped).max()) == 2.0


@pytest.mark.slow
def test_several_seeds_of_a_gaussian_policy_through_the_cli(tmp_path):
    # Regression: vmapping the orthogonal initialiser over seeds (a batched CPU QR) deadlocked
    # on 2 cores. In a subprocess with a timeout, so a recurrence fails instead of hanging.
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "jaxac.run", "env=pendulum", "seeds=3", "total_steps=2048",
         "log_interval=1024", "eval_episodes=2", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["final_eval"]["return_mean_per_seed"]) == 3
    assert summary["solved"]["threshold"] is None
    assert (tmp_path / ".hydra" / "config.yaml").exists()
