"""Running observation normalisation (mean and variance over everything seen so far).

Statistics are merged with the parallel-variance formula (Chan et al.), so a batch split across
devices, each shard's moments pooled (`pool_moments`), gives the same statistics as the whole batch
on one device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

CLIP = 10.0


@struct.dataclass
class ObsStats:
    """Running mean and variance of observations; `count` counts observations seen."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def init_obs_stats(obs_shape: tuple[int, ...]) -> ObsStats:
    return ObsStats(
        mean=jnp.zeros(obs_shape, jnp.float32),
        var=jnp.ones(obs_shape, jnp.float32),
        count=jnp.asarray(1e-4, jnp.float32),
    )


def normalize(stats: ObsStats, obs: jax.Array, enabled: bool) -> jax.Array:
    """Standardise `obs` with the running statistics (identity when not `enabled`)."""
    if not enabled:
        return obs
    return jnp.clip((obs - stats.mean) / jnp.sqrt(stats.var + 1e-8), -CLIP, CLIP)


def batch_moments(batch: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of a batch `[N, *obs_shape]` over its leading axis."""
    mean = jnp.mean(batch, axis=0)
    return mean, jnp.mean((batch - mean) ** 2, axis=0)


def pool_moments(means: jax.Array, variances: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of the union of equal-sized batches, from each batch's moments
    (`[shards, *obs_shape]`): the mean of the variances plus the variance of the means."""
    mean = jnp.mean(means, axis=0)
    return mean, jnp.mean(variances, axis=0) + jnp.mean((means - mean) ** 2, axis=0)


def merge_moments(stats: ObsStats, batch_mean: jax.Array, batch_var: jax.Array,
                  batch_count: int) -> ObsStats:
    """The statistics after also seeing a batch of `batch_count` observations with these moments."""
    batch_count = jnp.asarray(batch_count, jnp.float32)
    delta = batch_mean - stats.mean
    total = stats.count + batch_count
    mean = stats.mean + delta * batch_count / total
    m2 = (stats.var * stats.count + batch_var * batch_count
          + delta**2 * stats.count * batch_count / total)
    return ObsStats(mean=mean, var=m2 / total, count=total)


def update_obs_stats(stats: ObsStats, batch: jax.Array, enabled: bool) -> ObsStats:
    """Merge a batch `[N, *obs_shape]` into the statistics (unchanged when not `enabled`)."""
    if not enabled:
        return stats
    return merge_moments(stats, *batch_moments(batch), batch.shape[0])
