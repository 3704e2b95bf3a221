"""jaxac: synchronous (A2C) and asynchronous (A3C) advantage actor-critic in JAX."""

from jaxac.cpu_dispatch import run_cpu_computations_inline
from jaxac.cpu_rng import use_unrolled_threefry_on_cpu

__version__ = "0.1.0"

# Before JAX creates its CPU client: see jaxac/cpu_dispatch.py (A3C's short calls, no hand-offs).
run_cpu_computations_inline()
# Before anything is compiled: see jaxac/cpu_rng.py (same random bits, far fewer CPU kernels).
use_unrolled_threefry_on_cpu()
