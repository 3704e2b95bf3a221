"""The last-100-episodes window behind the "solved" criterion."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxac.episodes import WINDOW, EpisodeStats, RecentEpisodes, add_episodes


def test_window_keeps_the_most_recent_episodes_in_order():
    recent = RecentEpisodes.empty()
    # 3 steps x 60 envs; every env finishes an episode every step with a distinct return.
    returns = jnp.arange(180, dtype=jnp.float32).reshape(3, 60)
    done = jnp.ones((3, 60), bool)
    recent = jax.jit(add_episodes)(recent, returns, done)
    assert int(recent.count) == WINDOW
    assert sorted(np.asarray(recent.returns).tolist()) == list(range(80, 180))
    assert float(recent.mean()) == np.mean(np.arange(80, 180))


def test_more_than_window_in_one_step_keeps_the_last_window():
    returns = jnp.arange(250, dtype=jnp.float32)[None]
    recent = add_episodes(RecentEpisodes.empty(), returns, jnp.ones((1, 250), bool))
    assert sorted(np.asarray(recent.returns).tolist()) == list(range(150, 250))


def test_partial_window_and_not_done_ignored():
    returns = jnp.array([[5.0, 7.0, 9.0]])
    done = jnp.array([[True, False, True]])
    recent = add_episodes(RecentEpisodes.empty(), returns, done)
    assert int(recent.count) == 2 and float(recent.mean()) == 7.0
    assert float(recent.full_mean()) == -np.inf  # fewer than WINDOW: cannot count as solved
    stats = EpisodeStats.of(returns[0], jnp.array([1.0, 2.0, 3.0]), done[0])
    assert int(stats.count) == 2 and float(stats.return_min) == 5.0
    assert float(stats.return_max) == 9.0 and float(stats.length_sum) == 4.0
