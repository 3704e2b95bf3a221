"""Running observation normalisation (mean and variance over everything seen so far).

Statistics are merged with the parallel-variance formula (Chan et al.), so a batch split across
devices and merged with `lax.pmean` gives the same statistics as the whole batch on one device.
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


def update_obs_stats(
    stats: ObsStats, batch: jax.Array, enabled: bool, axis_name: str | None = None
) -> ObsStats:
    """Merge a batch `[N, *obs_shape]` into the statistics; `axis_name` averages across devices."""
    if not enabled:
        return stats
    batch_mean = jnp.mean(batch, axis=0)
    if axis_name is not None:
        batch_mean = jax.lax.pmean(batch_mean, axis_name)
    batch_var = jnp.mean((batch - batch_mean) ** 2, axis=0)
    batch_count = jnp.asarray(batch.shape[0], jnp.float32)
    if axis_name is not None:
        batch_var = jax.lax.pmean(batch_var, axis_name)
        batch_count = jax.lax.psum(batch_count, axis_name)
    delta = batch_mean - stats.mean
    total = stats.count + batch_count
    mean = stats.mean + delta * batch_count / total
    m2 = stats.var * stats.count + batch_var * batch_count + delta**2 * stats.count * batch_count / total
    return ObsStats(mean=mean, var=m2 / total, count=total)
