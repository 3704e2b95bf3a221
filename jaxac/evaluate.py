"""Greedy evaluation: the policy's mode (argmax or Gaussian mean) for a number of full episodes.

Also a command: `python -m jaxac.evaluate RUN_DIR [--episodes N] [--seed S]` loads a run's
checkpoint and prints the greedy return of every trained agent.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxac.envs import EnvSpec, reset_envs, step_envs
from jaxac.normalization import ObsStats, normalize


def evaluate(spec: EnvSpec, apply_fn: Callable, params: Any, obs_stats: ObsStats,
             key: jax.Array, episodes: int, normalize_obs: bool) -> jax.Array:
    """Returns of `episodes` greedy episodes, run in parallel until every one has ended."""
    carry = reset_envs(spec, jax.random.split(key, episodes))
    max_steps = spec.max_episode_steps or 100_000

    def cond(loop):
        _, finished, _, t = loop
        return (~jnp.all(finished)) & (t < max_steps)

    def body(loop):
        c, finished, returns, t = loop
        dist, _ = apply_fn(params, normalize(obs_stats, c.obs, normalize_obs))
        c, out = step_envs(spec, c, dist.mode())
        returns = jnp.where(finished, returns, returns + out.reward)
        return c, finished | out.terminated | out.truncated, returns, t + 1

    init = (carry, jnp.zeros(episodes, bool), jnp.zeros(episodes, jnp.float32), 0)
    return jax.lax.while_loop(cond, body, init)[2]


def evaluate_seeds(spec: EnvSpec, apply_fn: Callable, params: Any, obs_stats: ObsStats,
                   key: jax.Array, episodes: int, normalize_obs: bool) -> np.ndarray:
    """Greedy returns `[seeds, episodes]` for agents stacked along a leading seed axis."""
    seeds = jax.tree.leaves(params)[0].shape[0]
    run = jax.jit(jax.vmap(lambda p, s, k: evaluate(spec, apply_fn, p, s, k, episodes,
                                                    normalize_obs)))
    return np.asarray(run(params, obs_stats, jax.random.split(key, seeds)))


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: a whole number >= 1")
    return value


def main(argv: list[str] | None = None) -> None:
    from jaxac import platform
    from jaxac.checkpoint import load_policy

    parser = argparse.ArgumentParser(prog="python -m jaxac.evaluate",
                                     description="Greedy evaluation of a trained jaxac run.")
    parser.add_argument("run_dir", help="a run directory written by `python -m jaxac.run`")
    parser.add_argument("--episodes", type=positive_int, default=100,
                        help="greedy episodes per trained agent (>= 1)")
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args(argv)  # exits 2 with the message on a bad argument
    platform.set_up()  # before JAX starts
    try:
        policy = load_policy(args.run_dir)
    except FileNotFoundError as missing:
        parser.error(str(missing))
    returns = evaluate_seeds(policy.spec, policy.network.apply, policy.params, policy.obs_stats,
                             jax.random.PRNGKey(args.seed), args.episodes, policy.normalize_obs)
    print(json.dumps({"env": policy.spec.name, "episodes": args.episodes,
                      "greedy_return_mean_per_seed": returns.mean(axis=1).round(3).tolist()}))


if __name__ == "__main__":
    main()
