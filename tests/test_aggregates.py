"""Aggregate statistics across seeds and environments (`jaxac.analysis`, rliable's metrics)
against a hand-computed case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaxac.analysis import (aggregate_scores, performance_profiles, score_matrices, seed_scores,
                            stratified_bootstrap)

pytest.importorskip("rliable")


def runs() -> pd.DataFrame:
    """Two algorithms, two environments, four seeds each; one run that did not complete."""
    return pd.DataFrame([
        {"algo": "x", "env": "A", "status": "completed", "final_return_per_seed": (1, 2, 3, 8)},
        {"algo": "x", "env": "B", "status": "completed", "final_return_per_seed": (5, 9, 4, 12)},
        {"algo": "y", "env": "A", "status": "completed", "final_return_per_seed": (10,) * 4},
        {"algo": "y", "env": "B", "status": "completed", "final_return_per_seed": (20,) * 4},
        {"algo": "y", "env": "B", "status": "diverged", "final_return_per_seed": (-1e9,)},
    ])


def test_the_aggregates_are_those_computed_by_hand():
    scores = seed_scores(runs(), normalize={"A": (0, 10), "B": (0, 10)})
    assert len(scores) == 16  # the diverged run is left out
    table = aggregate_scores(scores, reps=300).set_index("algo")
    x = table.loc["x"]
    # x's normalised scores: A 0.1 0.2 0.3 0.8, B 0.5 0.9 0.4 1.2
    # IQM: mean of the middle half of all 8 (0.3 0.4 0.5 0.8) = 0.5
    assert x["iqm"] == pytest.approx(0.5)
    # median and mean of the per-environment means (0.35, 0.75), as rliable defines them
    assert x["median"] == pytest.approx(0.55) and x["mean"] == pytest.approx(0.55)
    # optimality gap: mean shortfall below 1: (0.9+0.8+0.7+0.2 + 0.5+0.1+0.6+0) / 8
    assert x["optimality_gap"] == pytest.approx(3.8 / 8)
    for stat in ("iqm", "median", "mean", "optimality_gap"):
        assert x[f"{stat}_low"] <= x[stat] <= x[f"{stat}_high"]
        assert x[f"{stat}_low"] < x[f"{stat}_high"]  # x's scores vary: so does a resample
    y = table.loc["y"]  # constant within each environment: every resample is the same
    assert y["iqm"] == y["iqm_low"] == y["iqm_high"] == pytest.approx(1.5)
    assert y["optimality_gap"] == 0.0


def test_reference_normalisation_and_profiles():
    frame = runs().assign(env=lambda f: f["env"].map({"A": "CartPole-v1", "B": "Acrobot-v1"}))
    scores = seed_scores(frame)  # random policy -> 0, the published reference -> 1
    cart = scores[(scores["env"] == "CartPole-v1") & (scores["algo"] == "x")]
    np.testing.assert_allclose(cart["score"], (np.array([1, 2, 3, 8]) - 21.839) / (500 - 21.839))
    profile = performance_profiles(seed_scores(runs(), normalize={"A": (0, 10), "B": (0, 10)}),
                                   taus=[0.25, 1.0], reps=200).set_index(["algo", "tau"])
    assert profile.loc[("x", 0.25), "fraction"] == pytest.approx(6 / 8)
    assert profile.loc[("x", 1.0), "fraction"] == pytest.approx(1 / 8)
    assert profile.loc[("y", 1.0), "fraction"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="Unknown-v0"):
        seed_scores(frame.assign(env="Unknown-v0"))


def test_the_bootstrap_resamples_within_each_environment():
    # each column constant: any within-column resample keeps every column's mean
    matrix = np.array([[1.0, 5.0], [1.0, 5.0], [1.0, 5.0]])
    low, high = stratified_bootstrap(matrix, lambda m: m.mean(axis=0), 100, 0.95,
                                     np.random.default_rng(0))
    np.testing.assert_array_equal(low, [1.0, 5.0])
    np.testing.assert_array_equal(high, [1.0, 5.0])
    uneven = pd.DataFrame({"algo": "x", "env": ["A"] * 3 + ["B"] * 2, "score": range(5)})
    assert score_matrices(uneven)["x"].shape == (2, 2)  # cut to the fewest agents
