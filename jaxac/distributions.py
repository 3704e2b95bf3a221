"""Action distributions: categorical for discrete spaces, diagonal Gaussian for continuous ones.

Each distribution is a small pytree so that it can pass through `jit`, `vmap` and `lax.scan`.
We keep these few formulas here rather than depend on distrax (which pulls TensorFlow Probability).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Categorical:
    """Categorical distribution over the last axis of `logits`."""

    logits: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self.logits)

    def log_prob(self, action: jax.Array) -> jax.Array:
        log_p = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        log_p = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1)


@struct.dataclass
class DiagonalGaussian:
    """Independent Gaussian per action dimension (the last axis)."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)

    def log_prob(self, action: jax.Array) -> jax.Array:
        z = (action - self.mean) * jnp.exp(-self.log_std)
        per_dim = -0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi)
        return jnp.sum(per_dim, axis=-1)

    def entropy(self) -> jax.Array:
        per_dim = self.log_std + 0.5 * math.log(2 * math.pi * math.e)
        return jnp.sum(jnp.broadcast_to(per_dim, self.mean.shape), axis=-1)

    def mode(self) -> jax.Array:
        return self.mean
