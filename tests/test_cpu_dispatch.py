"""Importing jaxac makes CPU computations run inline, unless the environment or an existing JAX
backend already decided; each case in a fresh process, since the choice is made once per process."""

import json
import os
import subprocess
import sys

FLAG_VARIABLE = "JAX_CPU_ENABLE_ASYNC_DISPATCH"

PROBE = """
import json, sys
import jax
if "--backend-first" in sys.argv:
    jax.devices()
import jaxac
from jaxac.cpu_dispatch import cpu_dispatch, run_cpu_computations_inline
x = jax.numpy.ones((1024, 1024))
x.block_until_ready()
y = jax.jit(lambda a: a @ a @ a @ a)(x)
ready = y.is_ready()  # inline: the call returned only once the result existed
print(json.dumps({"dispatch": cpu_dispatch(), "ready_on_return": ready,
                  "again": run_cpu_computations_inline()}))
"""


def probe(*args, env_flag=None):
    env = {k: v for k, v in os.environ.items() if k != FLAG_VARIABLE}
    if env_flag is not None:
        env[FLAG_VARIABLE] = env_flag
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_jaxac_runs_cpu_computations_inline():
    result = probe()
    assert result["dispatch"] == "inline"
    assert result["ready_on_return"]
    assert not result["again"]  # the client exists now: a second call changes nothing


def test_the_environment_keeps_asynchronous_dispatch():
    assert probe(env_flag="true")["dispatch"] == "async"


def test_an_existing_backend_is_left_as_it_is():
    assert probe("--backend-first")["dispatch"] == "async"
