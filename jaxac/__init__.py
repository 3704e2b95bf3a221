"""jaxac: synchronous (A2C) and asynchronous (A3C) advantage actor-critic in JAX."""

from jaxac.cpu_dispatch import run_cpu_computations_inline, use_wide_cpu_vectors
from jaxac.cpu_rng import use_unrolled_threefry_on_cpu

__version__ = "0.1.0"

# Before JAX creates its CPU client: see jaxac/cpu_dispatch.py (A3C's short calls, no hand-offs).
run_cpu_computations_inline()
# Before JAX compiles for the CPU: 512-bit vectors where they run at full clock (cpu_dispatch.py).
use_wide_cpu_vectors()
# Before anything is compiled: see jaxac/cpu_rng.py (same random bits, far fewer CPU kernels).
use_unrolled_threefry_on_cpu()
