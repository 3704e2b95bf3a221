"""Run in a fresh process with XLA_FLAGS=--xla_force_host_platform_device_count=4 set: trains the
same total batch on 1 and on 4 devices and prints both results as JSON."""

import json
import sys
from dataclasses import asdict

import jax
import numpy as np

from jaxac.a2c import build_learner
from jaxac.checkpoint import network_from_config
from jaxac.config import compose_config
from jaxac.envs import make_env


def train(devices: int, overrides: list[str], updates: int):
    cfg = compose_config(overrides + [f"devices={devices}"])
    spec = make_env(cfg.env.name)
    trainer = build_learner(cfg, spec, network_from_config(cfg, spec), jax.devices()[:devices])
    state = trainer.init_state(int(cfg.seed))
    rows = []
    for _ in range(3):
        state, new_rows = trainer.run_updates(state, updates // 3)
        rows += [asdict(row) for row in new_rows]
    leaves = [np.asarray(x).ravel() for x in jax.tree.leaves((state.params, state.obs_stats))]
    return np.concatenate(leaves).tolist(), rows


if __name__ == "__main__":
    overrides = sys.argv[1:]
    assert len(jax.devices()) == 4, jax.devices()
    one = train(1, overrides, 150)
    four = train(4, overrides, 150)
    print(json.dumps({"one": one, "four": four}))
