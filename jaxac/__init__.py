"""jaxac: synchronous (A2C) and asynchronous (A3C) advantage actor-critic in JAX.

Importing jaxac (or any of its modules) changes nothing about JAX; the entry points set up the CPU
runtime explicitly with `jaxac.platform.set_up` before JAX starts.
"""

__version__ = "0.1.0"
