"""jaxac: synchronous (A2C) and asynchronous (A3C) advantage actor-critic in JAX."""

from jaxac.cpu_rng import use_unrolled_threefry_on_cpu

__version__ = "0.1.0"

# Before anything is compiled: see jaxac/cpu_rng.py (same random bits, far fewer CPU kernels).
use_unrolled_threefry_on_cpu()
