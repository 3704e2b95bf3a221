"""Hyperparameter search: `+experiment=tune hydra/sweeper=optuna` and `load_study`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from jaxac.config import compose_config
from jaxac.tune import SEARCH_SPACES, extend_search_space

optuna = pytest.importorskip("optuna")
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")


@pytest.mark.slow
def test_a_four_trial_search_on_cartpole_completes_and_loads(tmp_path):
    from jaxac.analysis import load_study

    sweep = tmp_path / "study"
    # total_steps=5 is less than one update: those trials fail (as a diverged one does)
    out = subprocess.run(
        [sys.executable, "-m", "jaxac.run", "-m", "+experiment=tune", "hydra/sweeper=optuna",
         "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=3", "eval_episodes=3",
         "total_steps=choice(4000,5)", "log_interval=2000",
         f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    study = load_study(sweep)
    runs = study.runs
    assert list(runs["trial"]) == [0, 1, 2, 3]
    failed = runs["total_steps"] == 5
    assert failed.any() and (~failed).any(), "the seed should draw both budgets"
    assert (runs.loc[failed, "trial_state"] == "failed").all()
    assert runs.loc[failed, "objective"].isna().all()
    done = runs[~failed]
    assert (done["trial_state"] == "complete").all()
    np.testing.assert_allclose(done["objective"], done["final_return"])
    # every trial drew its own hyperparameters from the A2C space (the swept columns)
    assert {"algo.lr", "algo.entropy_coef", "rollout_length"} <= set(study.swept_columns)
    best = runs.attrs["best"]
    assert best["best_value"] == pytest.approx(done["objective"].max())
    assert "algo.lr" in best["best_params"]


class Trial:
    """The part of optuna's Trial that a search space uses, recording what was asked."""

    def __init__(self):
        self.params = {}

    def suggest_float(self, name, low, high, log=False):
        self.params[name] = ("float", low, high, log)
        return low

    def suggest_categorical(self, name, choices):
        self.params[name] = ("choice", tuple(choices))
        return choices[0]


@pytest.mark.parametrize("algo", ["a2c", "a3c"])
def test_each_algorithm_searches_its_own_space_unless_the_command_line_sets_a_key(algo):
    cfg = compose_config([f"algo={algo}", "+experiment=tune", "hydra/sweeper=optuna",
                          "algo.lr=0.001"], return_hydra_config=True)
    trial = Trial()
    extend_search_space(cfg, trial)
    assert set(trial.params) == set(SEARCH_SPACES[algo]) - {"algo.lr"}
    assert trial.params["algo.entropy_coef"] == ("float", 1e-4, 1e-1, True)
    # the space brackets the algorithm's own default clip
    clip = cfg.algo.max_grad_norm
    assert clip in trial.params["algo.max_grad_norm"][1]
