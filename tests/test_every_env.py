"""Every environment gymnax registers trains in both algorithms and evaluates; environments that
cannot be built say why."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxac.config import ConfigError, compose_config, validate
from jaxac.envs import env_names, make_env

HERE = Path(__file__).parent
# Fast-compiling XLA: this checks that every environment runs, not how fast.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def run_workers(runs: list[str], names: list[str], cache: Path, processes: int = 2) -> list[dict]:
    """Split `names` over `processes` worker processes (2 CPU devices each); their JSON lines."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}")
    children = [subprocess.Popen(
        [sys.executable, str(HERE / "every_env_worker.py"), str(cache), ",".join(runs),
         *names[i::processes]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(processes)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=900)
        assert child.returncode == 0, err[-3000:]
        results += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return results


@pytest.mark.slow
def test_every_registered_environment_trains_and_evaluates(tmp_path):
    names = env_names()
    assert len(names) == 26  # gymnax 1.0.1; a new environment should be looked at, not skipped
    # A2C split over 2 devices and evaluated (the shard_map path where Asterix crashed; one
    # device is the same program on a mesh of one), and A3C on one device without the final
    # evaluation (the same `evaluate` as A2C's; its workers only change device with devices=2).
    # Every combination for every environment, by hand: docs/learning.md.
    runs = ["a2c-2dev", "a3c-1dev-noeval"]
    results = run_workers(runs, names, tmp_path / "cache")
    failed = [f"{r['env']} {r['run']}: {r['error']}\n{r['traceback']}" for r in results
              if not r["ok"]]
    assert not failed, "\n".join(failed)
    assert {(r["env"], r["run"]) for r in results} == {(n, run) for n in names for run in runs}
    for r in results:
        assert r["env_steps"] == 24, r
        if r["run"].startswith("a2c"):  # evaluated
            assert len(r["eval"]) == 1 and math.isfinite(r["eval"][0]), r


def test_mnist_bandit_without_its_data_says_what_it_needs(monkeypatch):
    from urllib.error import URLError

    from gymnax.utils import load_mnist

    def no_network(url, filename, directory="/tmp/mnist"):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(load_mnist, "_download", no_network)
    make_env.cache_clear()
    try:
        with pytest.raises(ConfigError) as error:
            validate(compose_config(["env.name=MNISTBandit-bsuite"]), 1)
    finally:
        make_env.cache_clear()
    message = str(error.value)
    assert error.value.key == "env.name"
    for needed in ("MNISTBandit-bsuite", "MNIST", "/tmp/mnist", "train-images-idx3-ubyte.gz",
                   "Name or service not known"):
        assert needed in message, message


def test_discrete_observations_are_one_hot():
    spec = make_env("FrozenLake-misc")
    import jax

    from jaxac.envs import reset_envs

    carry = reset_envs(spec, jax.random.split(jax.random.PRNGKey(0), 3))
    assert spec.obs_shape == (spec.one_hot_states,) and spec.one_hot_states > 1
    assert carry.obs.shape == (3, spec.one_hot_states)
    assert (carry.obs.sum(axis=1) == 1).all() and set(carry.obs.ravel().tolist()) <= {0.0, 1.0}


def test_an_unsupported_space_is_refused_naming_environment_and_space():
    from gymnax.environments import spaces

    from jaxac.envs import spec_from_env

    class DictObservations:
        def action_space(self, params):
            return spaces.Discrete(2)

        def observation_space(self, params):
            return spaces.Dict({"a": spaces.Discrete(2)})

    with pytest.raises(ValueError, match="env.name='Odd-v0': its observation space .*Dict"):
        spec_from_env("Odd-v0", DictObservations(), None)
