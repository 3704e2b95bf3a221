"""Greedy evaluation during training (`eval_every`): rows at the right steps, the same for the
same seed, one compiled program, the summary's best and last, A3C on a snapshot, resume."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxac.analysis import read_metrics
from jaxac.config import ConfigError, compose_config, validate
from jaxac.envs import make_env
from jaxac.evaluate import GreedyEvaluator, PeriodicEvaluation
from jaxac.networks import make_network

BASE = ["total_steps=8000", "workers=8", "rollout_length=5", "log_interval=3000",
        "eval_every=2000", "eval_episodes_during=4", "eval_episodes=2",
        "compilation_cache_dir=null"]


def eval_rows(run_dir):
    metrics = read_metrics(run_dir)
    return metrics[metrics["eval_return"].notna()]


@pytest.mark.slow
def test_a2c_evaluates_at_every_multiple_identically_for_the_same_seed(tmp_path):
    from jaxac.run import execute

    summaries = [execute(compose_config(BASE + ["seeds=2"]), tmp_path / name)
                 for name in ("a", "b")]
    rows = [eval_rows(tmp_path / name) for name in ("a", "b")]
    # 40 env steps per update: every multiple of 2000 is an update boundary
    assert sorted(rows[0]["env_steps"].unique()) == [2000, 4000, 6000, 8000]
    assert (rows[0].groupby("env_steps").size() == 2).all()  # one row per seed
    assert set(rows[0]["eval_episodes"]) == {4}
    np.testing.assert_array_equal(rows[0]["eval_return"].to_numpy(),
                                  rows[1]["eval_return"].to_numpy())
    # the training log points are kept too: the eval points are added to them
    steps = sorted(read_metrics(tmp_path / "a")["env_steps"].unique())
    assert steps == [2000, 4000, 6000, 8000]  # log_interval 3000 > eval_every: eval points win
    during = summaries[0]["eval_during"]
    per_point = rows[0].groupby("env_steps")["eval_return"].mean()
    assert during["evaluations"] == 4 and during["every"] == 2000
    assert during["last"]["env_steps"] == 8000
    assert during["last"]["return_mean"] == pytest.approx(per_point[8000])
    assert during["best"]["return_mean"] == pytest.approx(per_point.max())
    assert during["best"]["env_steps"] == int(per_point.idxmax())


def test_the_evaluator_is_traced_once_for_many_evaluations():
    spec = make_env("CartPole-v1")
    network = make_network(spec, "mlp", (8,), "tanh")
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = jax.vmap(lambda k: network.init(k, jax.numpy.zeros((1, 4))))(keys)
    from jaxac.normalization import init_obs_stats

    stats = jax.vmap(lambda _: init_obs_stats((4,)))(keys)
    evaluator = GreedyEvaluator(spec, network.apply, 3, False)
    periodic = PeriodicEvaluation(evaluator, every=100, seed=0)
    results = [periodic.run(params, stats, step) for step in (100, 200, 300)]
    assert evaluator.traces == 1
    assert all(r.shape == (3, 3) for r in results)
    # the key follows the step: the same step evaluates alike, another one (usually) not
    np.testing.assert_array_equal(periodic.run(params, stats, 100), results[0])


@pytest.mark.slow
def test_a3c_evaluates_a_snapshot_while_its_workers_go_on(tmp_path):
    from jaxac.run import execute

    summary = execute(compose_config(["algo=a3c", "workers=2", "total_steps=12000",
                                      "log_interval=1000", "eval_every=3000",
                                      "eval_episodes_during=3", "eval_episodes=2",
                                      "compilation_cache_dir=null"]), tmp_path)
    rows = eval_rows(tmp_path)
    history = summary["eval_during"]
    assert len(rows) == history["evaluations"] >= 2
    # each evaluation is of the policy at or past a new multiple of eval_every, taken before
    # the log point's rows (the workers went on meanwhile)
    snapshot = rows["eval_env_steps"].to_numpy()
    assert (np.diff(snapshot // 3000) >= 1).all() and (snapshot >= 3000).all()
    assert (rows["env_steps"].to_numpy() >= snapshot).all()
    assert history["last"]["env_steps"] == int(snapshot[-1])


@pytest.mark.parametrize("override,key", [("eval_every=-5", "eval_every"),
                                          ("eval_episodes_during=0", "eval_episodes_during")])
def test_bad_evaluation_settings_name_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        validate(compose_config([override]), 1)
    assert info.value.key == key
