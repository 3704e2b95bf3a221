import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # probe_envs and helpers


def pytest_configure(config):
    """The CPU runtime as the entry points set it up, before any test starts JAX."""
    from jaxac import platform

    platform.set_up()
