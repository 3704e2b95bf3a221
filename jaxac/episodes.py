"""In-jit bookkeeping of finished episodes: the last-100 window that decides "solved", and the
statistics of the episodes finished within a logging interval."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

WINDOW = 100  # the classic "mean of the last 100 episodes"


@struct.dataclass
class RecentEpisodes:
    """Ring buffer of the returns of the last `WINDOW` finished episodes."""

    returns: jax.Array  # [WINDOW]
    count: jax.Array  # how many slots hold an episode (<= WINDOW)
    next: jax.Array  # slot the next episode goes into

    @classmethod
    def empty(cls) -> "RecentEpisodes":
        return cls(jnp.zeros(WINDOW, jnp.float32), jnp.int32(0), jnp.int32(0))

    def mean(self) -> jax.Array:
        """Mean return of the buffered episodes (NaN while there are none)."""
        filled = jnp.arange(WINDOW) < self.count
        return jnp.sum(jnp.where(filled, self.returns, 0.0)) / jnp.where(
            self.count > 0, self.count, jnp.nan)

    def full_mean(self) -> jax.Array:
        """Mean over exactly the last WINDOW episodes, or -inf until that many have finished."""
        return jnp.where(self.count >= WINDOW, jnp.mean(self.returns), -jnp.inf)


def add_episodes(recent: RecentEpisodes, returns: jax.Array, done: jax.Array) -> RecentEpisodes:
    """Insert the returns of the episodes that finished at each step of `[T, B]` arrays.

    Within one step, environments are taken in batch order; when more than WINDOW finish in the
    same step only the last WINDOW are kept, so every kept episode lands in its own slot.
    """

    def one_step(r: RecentEpisodes, xs):
        ret, d = xs
        n_done = jnp.sum(d.astype(jnp.int32))
        rank = jnp.cumsum(d.astype(jnp.int32))  # 1-based position among this step's episodes
        keep = d & (rank > n_done - WINDOW)
        slot = jnp.where(keep, (r.next + rank - 1 - jnp.maximum(n_done - WINDOW, 0)) % WINDOW,
                         WINDOW)  # WINDOW is out of bounds: dropped
        kept = jnp.minimum(n_done, WINDOW)
        returns = r.returns.at[slot].set(ret, mode="drop")
        return RecentEpisodes(returns, jnp.minimum(r.count + kept, WINDOW),
                              (r.next + kept) % WINDOW), None

    recent, _ = jax.lax.scan(one_step, recent, (returns, done))
    return recent


@struct.dataclass
class EpisodeStats:
    """Sums over the episodes finished in an interval (merge with `+`-like `merge`)."""

    count: jax.Array
    return_sum: jax.Array
    return_min: jax.Array
    return_max: jax.Array
    length_sum: jax.Array

    @classmethod
    def empty(cls) -> "EpisodeStats":
        return cls(jnp.int32(0), jnp.float32(0), jnp.float32(jnp.inf), jnp.float32(-jnp.inf),
                   jnp.float32(0))

    @classmethod
    def of(cls, returns: jax.Array, lengths: jax.Array, done: jax.Array) -> "EpisodeStats":
        return cls(
            jnp.sum(done.astype(jnp.int32)),
            jnp.sum(jnp.where(done, returns, 0.0)),
            jnp.min(jnp.where(done, returns, jnp.inf)),
            jnp.max(jnp.where(done, returns, -jnp.inf)),
            jnp.sum(jnp.where(done, lengths, 0)).astype(jnp.float32),
        )

    def merge(self, other: "EpisodeStats") -> "EpisodeStats":
        return EpisodeStats(self.count + other.count, self.return_sum + other.return_sum,
                            jnp.minimum(self.return_min, other.return_min),
                            jnp.maximum(self.return_max, other.return_max),
                            self.length_sum + other.length_sum)
