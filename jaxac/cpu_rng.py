"""Random numbers on the CPU as one fused kernel per draw instead of a loop of tiny ones.

JAX lowers its default PRNG (threefry2x32) for the CPU as a `fori_loop` of 5 iterations, to keep
compile times short. On XLA's CPU runtime every iteration of that loop runs as separate small
kernels plus buffer copies: about 40 launches per random draw. An actor-critic update draws
several times per environment step (key splits, action sampling, the environments' own resets),
so at small batch sizes those launches were most of the update's time: 1,255 kernel launches per
A2C update at 8 workers, of which 800 were copies, and 481 once the hash is unrolled.

`use_unrolled_threefry_on_cpu` registers JAX's own unrolled form of the same hash (the one it
uses on GPU) for the CPU. The bits are identical, so results do not change; compilation takes a
little longer. It reaches into a private JAX module: if that moves in a future JAX, the function
leaves JAX's default in place and returns False.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)


@functools.cache
def use_unrolled_threefry_on_cpu() -> bool:
    """Lower threefry2x32 unrolled on the CPU (idempotent); True if it took effect."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry
        lowering = threefry._threefry2x32_lowering
        primitive = threefry.threefry2x32_p
    except (ImportError, AttributeError) as missing:
        log.debug(f"keeping JAX's rolled threefry lowering on the CPU ({missing})")
        return False
    mlir.register_lowering(
        primitive,
        mlir.lower_fun(functools.partial(lowering, use_rolled_loops=False),
                       multiple_results=True),
        platform="cpu")
    return True
