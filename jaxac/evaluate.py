"""Greedy evaluation: the policy's mode (argmax or Gaussian mean) for a number of full episodes.

Also a command: `python -m jaxac.evaluate RUN_DIR [--episodes N] [--seed S]` loads a run's
checkpoint and prints the greedy return of every trained agent.
"""

from __future__ import annotations

import argparse
import json
import time
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


class GreedyEvaluator:
    """Greedy returns `[seeds, episodes]` for agents stacked along a leading seed axis, from one
    jitted program: evaluating again (during training, every `eval_every` steps) reuses it."""

    def __init__(self, spec: EnvSpec, apply_fn: Callable, episodes: int, normalize_obs: bool):
        self.episodes = episodes
        self.traces = 0  # how often the program was traced (once, for parameters of one shape)

        def run(params, obs_stats, key):
            self.traces += 1  # runs only while tracing
            seeds = jax.tree.leaves(params)[0].shape[0]
            return jax.vmap(lambda p, s, k: evaluate(spec, apply_fn, p, s, k, episodes,
                                                     normalize_obs))(
                params, obs_stats, jax.random.split(key, seeds))

        self._run = jax.jit(run)
        self._compiled = None

    def compile(self, params: Any, obs_stats: ObsStats) -> float:
        """Compile for parameters shaped like these, ahead of the first evaluation; returns the
        seconds it took."""
        began = time.perf_counter()
        self._compiled = self._run.lower(params, obs_stats, jax.random.PRNGKey(0)).compile()
        return time.perf_counter() - began

    def __call__(self, params: Any, obs_stats: ObsStats, key: jax.Array) -> np.ndarray:
        run = self._compiled or self._run
        return np.asarray(run(params, obs_stats, key))


def evaluate_seeds(spec: EnvSpec, apply_fn: Callable, params: Any, obs_stats: ObsStats,
                   key: jax.Array, episodes: int, normalize_obs: bool) -> np.ndarray:
    """Greedy returns `[seeds, episodes]` for agents stacked along a leading seed axis."""
    return GreedyEvaluator(spec, apply_fn, episodes, normalize_obs)(params, obs_stats, key)


class PeriodicEvaluation:
    """Greedy evaluation during training: every `every` env steps (per seed), `episodes`
    episodes per seed. The key of an evaluation depends only on the run's seed and the step,
    so the same seed and config evaluate alike, resumed or not."""

    def __init__(self, evaluator: GreedyEvaluator, every: int, seed: int,
                 history: list[dict] | None = None):
        self.evaluator, self.every = evaluator, every
        self._key = jax.random.PRNGKey(seed + 2_000_003)
        self.history: list[dict] = list(history or [])  # one entry per evaluation so far

    def next_at(self, env_steps: int) -> int:
        """The first evaluation point after `env_steps`."""
        return (env_steps // self.every + 1) * self.every

    def due(self, env_steps: int) -> bool:
        """Whether an evaluation point was passed since the last evaluation."""
        last = self.history[-1]["env_steps"] if self.history else 0
        return env_steps // self.every > last // self.every

    def run(self, params: Any, obs_stats: ObsStats, env_steps: int) -> np.ndarray:
        """Greedy returns `[seeds, episodes]` of the stacked agents, with the key of `env_steps`."""
        return self.evaluator(params, obs_stats, jax.random.fold_in(self._key, env_steps))

    def record(self, env_steps: int, returns: np.ndarray) -> None:
        """Keep an evaluation (of the policy at `env_steps`) for the summary and checkpoints."""
        self.history.append({"env_steps": int(env_steps),
                             "return_mean_per_seed": returns.mean(axis=1).tolist()})

    def summary(self) -> dict:
        """summary.json's `eval_during`: the cadence, the best and the last evaluation (by the
        mean over seeds)."""
        def entry(e: dict) -> dict:
            return {"env_steps": e["env_steps"],
                    "return_mean": float(np.mean(e["return_mean_per_seed"])),
                    "return_mean_per_seed": e["return_mean_per_seed"]}

        best = max(self.history, key=lambda e: np.mean(e["return_mean_per_seed"]), default=None)
        return {"every": self.every, "episodes": self.evaluator.episodes,
                "policy": "greedy", "evaluations": len(self.history),
                "best": None if best is None else entry(best),
                "best_per_seed": [max(e["return_mean_per_seed"][i] for e in self.history)
                                  for i in range(len(self.history[0]["return_mean_per_seed"]))]
                if self.history else None,
                "last": entry(self.history[-1]) if self.history else None}


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

    parser = argparse.ArgumentParser(
        prog="python -m jaxac.evaluate",
        description="Greedy evaluation of a trained jaxac run, or with --render an animation "
                    "of its greedy policy.")
    parser.add_argument("run_dir", help="a run directory written by `python -m jaxac.run`")
    parser.add_argument("--episodes", type=positive_int, default=None,
                        help="greedy episodes per trained agent (>= 1; default 100, or 1 with "
                             "--render)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--render", metavar="OUT.gif", default=None,
                        help="write an animated GIF (or .mp4, with ffmpeg) of the greedy policy "
                             "with gymnax's visualiser; an MP4 beside a GIF where ffmpeg exists")
    parser.add_argument("--seed-index", type=int, default=0,
                        help="with --render: which of the run's agents (its seeds) to watch")
    parser.add_argument("--max-steps", type=positive_int, default=None,
                        help="with --render: at most this many frames per episode")
    args = parser.parse_args(argv)  # exits 2 with the message on a bad argument
    platform.set_up()  # before JAX starts
    try:
        policy = load_policy(args.run_dir)
    except FileNotFoundError as missing:
        parser.error(str(missing))
    if args.render is not None:
        render(parser, policy, args)
        return
    episodes = args.episodes or 100
    returns = evaluate_seeds(policy.spec, policy.network.apply, policy.params, policy.obs_stats,
                             jax.random.PRNGKey(args.seed), episodes, policy.normalize_obs)
    print(json.dumps({"env": policy.spec.name, "episodes": episodes,
                      "greedy_return_mean_per_seed": returns.mean(axis=1).round(3).tolist()}))


def render(parser: argparse.ArgumentParser, policy: Any, args: argparse.Namespace) -> None:
    """`--render`: play and animate the greedy episodes of one agent of the run."""
    from jaxac.render import play_greedy, renderable_message, write_animation

    problem = renderable_message(policy.spec.name)
    if problem is not None:
        parser.error(f"--render: {problem}")
    seeds = jax.tree.leaves(policy.params)[0].shape[0]
    if not 0 <= args.seed_index < seeds:
        parser.error(f"--seed-index {args.seed_index} is not allowed: the run has {seeds} "
                     f"agent(s), 0 to {seeds - 1}")
    params, stats = jax.tree.map(lambda x: x[args.seed_index], (policy.params, policy.obs_stats))
    states, returns, lengths = play_greedy(policy.spec, policy.network.apply, params, stats,
                                           jax.random.PRNGKey(args.seed), policy.normalize_obs,
                                           args.episodes or 1, args.max_steps)
    try:
        written = write_animation(policy.spec, states, returns, args.render)
    except ValueError as error:
        parser.error(str(error))
    ends = np.cumsum(lengths) - 1  # the return so far at each episode's last step
    print(json.dumps({"env": policy.spec.name, "seed_index": args.seed_index,
                      "episode_lengths": lengths,
                      "episode_returns": [round(returns[i], 3) for i in ends],
                      "frames": len(states),
                      "files": [str(p) for p in written]}))


if __name__ == "__main__":
    main()
