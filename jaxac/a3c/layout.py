"""Flat float32 vectors with named parts: how A3C's state, results and reports are laid out.

One vector is one buffer per call instead of one per leaf, and buffers are what XLA's CPU runtime
charges for (docs/performance.md, "A3C"). Every layout is described once, here, by name:

- shared state:  params | obs_stats | opt_state          (the parameter server's vector)
- snapshot:      params | obs_stats                      (what a rollout reads: the state's prefix)
- result:        gradient | observed | report            (one rollout-and-gradient call's output)
- report:        losses | done | episode_return | episode_length
                 (losses: policy loss, value loss, entropy, gradient norm; the rest per step)
- applied:       step | obs_stats | opt_state | flags    (hogwild's optimizer call: the parameter
                                                          step to add, then the new statistics)
- info row:      flags | report                          (locked mode's, one per applied update)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LOSSES = ("policy_loss", "value_loss", "entropy", "grad_norm")  # the report's first four


class Segments:
    """Consecutive named slices of one flat vector: `layout.params` is the slice of the part
    called `params`, `layout.size` the vector's length."""

    def __init__(self, **sizes: int):
        self.slices: dict[str, slice] = {}
        offset = 0
        for name, size in sizes.items():
            self.slices[name] = slice(offset, offset + int(size))
            offset += int(size)
        self.size = offset

    def __getattr__(self, name: str) -> slice:
        try:
            return self.__dict__["slices"][name]
        except KeyError:
            raise AttributeError(name) from None

    def through(self, name: str) -> slice:
        """The slice from the vector's start to the end of part `name`."""
        return slice(0, self.slices[name].stop)

    def after(self, name: str) -> slice:
        """The slice from the end of part `name` to the vector's end."""
        return slice(self.slices[name].stop, self.size)


class FlatLayout:
    """Packs a pytree of arrays into one float32 vector and back, exactly.

    32-bit leaves that are not float32 (step counts, RNG keys) are bit-cast, and narrower ones
    (booleans, bytes) are converted, so every value round-trips unchanged.
    """

    def __init__(self, template: Any):
        leaves, self.treedef = jax.tree.flatten(template)
        self.shapes = [tuple(np.shape(x)) for x in leaves]
        self.dtypes = [np.dtype(x.dtype) if hasattr(x, "dtype") else jnp.asarray(x).dtype
                       for x in leaves]  # a template may hold jax.ShapeDtypeStructs
        self.sizes = [int(np.prod(shape)) for shape in self.shapes]
        self.size = sum(self.sizes)

    @staticmethod
    def _bitcast(dtype) -> bool:
        return dtype != jnp.float32 and dtype.itemsize == 4

    def pack(self, tree: Any) -> jax.Array:
        parts = []
        for x, dtype in zip(jax.tree.leaves(tree), self.dtypes):
            x = jnp.asarray(x, dtype)
            x = (jax.lax.bitcast_convert_type(x, jnp.float32) if self._bitcast(dtype)
                 else x.astype(jnp.float32))
            parts.append(x.ravel())
        return jnp.concatenate(parts) if parts else jnp.zeros(0, jnp.float32)

    def unpack(self, vector: jax.Array) -> Any:
        leaves, offset = [], 0
        for shape, size, dtype in zip(self.shapes, self.sizes, self.dtypes):
            part = vector[offset:offset + size].reshape(shape)
            leaves.append(jax.lax.bitcast_convert_type(part, dtype) if self._bitcast(dtype)
                          else part.astype(dtype))
            offset += size
        return jax.tree.unflatten(self.treedef, leaves)
