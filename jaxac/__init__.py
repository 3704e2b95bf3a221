"""jaxac: synchronous (A2C) and asynchronous (A3C) advantage actor-critic in JAX."""

__version__ = "0.1.0"
