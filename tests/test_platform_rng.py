"""The unrolled threefry lowering on the CPU: one fused kernel, the same random bits."""

import inspect
import pytest
import json
import subprocess
import sys

import jax
import numpy as np

from jaxac.platform import use_unrolled_threefry_on_cpu


def draws():
    """Random bits and split keys, each drawn in a jitted function."""
    k = jax.random.PRNGKey(7)
    return {"bits": np.asarray(jax.jit(lambda k: jax.random.bits(k, (6,)))(k)).tolist(),
            "keys": np.asarray(jax.jit(lambda k: jax.random.split(k, 3))(k)).tolist()}


def test_random_draws_compile_without_a_loop():
    assert use_unrolled_threefry_on_cpu()  # the test session set up the platform
    compiled = jax.jit(lambda k: jax.random.uniform(k, (16,))).lower(
        jax.random.PRNGKey(0)).compile().as_text()
    assert " while(" not in compiled


@pytest.mark.slow
def test_unrolled_draws_give_the_same_bits_as_jax_default():
    # JAX's default (rolled) lowering, in a process that never imports jaxac.
    script = "\n".join(["import json, jax, numpy as np", inspect.getsource(draws),
                        "print(json.dumps(draws()))"])
    default = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True, timeout=120)
    assert json.loads(default.stdout) == draws()
