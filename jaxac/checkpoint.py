"""Checkpoints: msgpack-serialised pytrees (flax.serialization, no pickle), written atomically.

A run directory's `checkpoint/policy.msgpack` holds the final parameters and observation
statistics of every seed; `load_policy(run_dir)` rebuilds the network from the run's saved Hydra
config and returns everything needed to act.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import serialization
from omegaconf import DictConfig, OmegaConf

from jaxac.envs import EnvSpec, make_env
from jaxac.networks import ActorCritic, make_network
from jaxac.normalization import ObsStats, init_obs_stats

POLICY_FILE = "checkpoint/policy.msgpack"


def save_tree(path: str | os.PathLike, tree: Any) -> None:
    """Serialise `tree` to `path` atomically: a crash mid-write leaves any older file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(serialization.to_bytes(jax.device_get(tree)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_tree(path: str | os.PathLike, target: Any) -> Any:
    """Read a tree written by `save_tree` into the structure of `target`."""
    with open(path, "rb") as f:
        return serialization.from_bytes(target, f.read())


def network_from_config(cfg: DictConfig, spec: EnvSpec) -> ActorCritic:
    n = cfg.network
    return make_network(spec, n.torso, list(n.hidden_sizes), n.activation, n.conv_channels,
                        n.conv_dense)


def save_policy(run_dir: str | os.PathLike, params: Any, obs_stats: ObsStats) -> Path:
    """Save every seed's parameters and observation statistics (leading axis: seed)."""
    path = Path(run_dir) / POLICY_FILE
    save_tree(path, {"params": params, "obs_stats": obs_stats})
    return path


@dataclass
class Policy:
    spec: EnvSpec
    network: ActorCritic
    params: Any  # leading axis: seed
    obs_stats: ObsStats
    normalize_obs: bool
    config: DictConfig


def load_policy(run_dir: str | os.PathLike) -> Policy:
    """Load a finished run's policy (network rebuilt from `.hydra/config.yaml` in the run)."""
    run_dir = Path(run_dir)
    cfg_path, ckpt = run_dir / ".hydra" / "config.yaml", run_dir / POLICY_FILE
    for needed in (cfg_path, ckpt):
        if not needed.exists():
            raise FileNotFoundError(f"{run_dir} is not a finished jaxac run: {needed} is missing")
    cfg = OmegaConf.load(cfg_path)
    spec = make_env(cfg.env.name)
    network = network_from_config(cfg, spec)
    seeds = int(cfg.seeds)
    one = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape))
    stack = lambda tree: jax.tree.map(lambda x: jnp.stack([x] * seeds), tree)  # noqa: E731
    target = {"params": stack(one), "obs_stats": stack(init_obs_stats(spec.obs_shape))}
    tree = load_tree(ckpt, target)
    return Policy(spec, network, tree["params"], tree["obs_stats"], bool(cfg.env.normalize_obs),
                  cfg)
