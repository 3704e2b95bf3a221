"""Observation statistics: shards' moments pool to the whole batch's, merges are order-free."""

import jax
import numpy as np

from jaxac.normalization import (batch_moments, init_obs_stats, merge_moments, pool_moments,
                                 update_obs_stats)


def test_pooled_shard_moments_are_the_whole_batch_moments():
    batch = jax.random.normal(jax.random.PRNGKey(0), (12, 3)) * 5.0 + 100.0  # far from 0
    shards = batch.reshape(3, 4, 3)
    means, variances = jax.vmap(batch_moments)(shards)
    mean, var = pool_moments(means, variances)
    np.testing.assert_allclose(mean, batch.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, np.var(np.asarray(batch, np.float64), 0), rtol=1e-4)


def test_merging_two_batches_equals_merging_their_union():
    stats = init_obs_stats((3,))
    a, b = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 3)) * np.array([1.0, 2.0, 3.0])
    one_by_one = update_obs_stats(update_obs_stats(stats, a, True), b, True)
    both = merge_moments(stats, *batch_moments(np.concatenate([a, b])), 16)
    for x, y in zip(jax.tree.leaves(one_by_one), jax.tree.leaves(both)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert update_obs_stats(stats, a, False) is stats  # disabled: untouched
