"""gymnax environments: construction, a static description of their spaces, and a batched step
that auto-resets, keeps per-episode statistics and reports the true final observation."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

# gymnax is imported where it is used: importing it creates JAX arrays, which starts JAX's CPU
# client, and XLA's thread pools must be sized before that (see jaxac/platform.py).

# Classic "solved" thresholds (Gym's reward_threshold) for the environments that have one.
KNOWN_SOLVE_THRESHOLDS = {
    "CartPole-v1": 475.0,
    "Acrobot-v1": -100.0,
    "MountainCar-v0": -110.0,
    "MountainCarContinuous-v0": 90.0,
}


def solve_threshold(name: str, configured: float | None) -> float | None:
    """The configured threshold, else the classic one for `name`, else None (no solve tracking)."""
    return configured if configured is not None else KNOWN_SOLVE_THRESHOLDS.get(name)


def env_names() -> list[str]:
    """Names of every registered gymnax environment."""
    import gymnax

    return list(gymnax.registered_envs)


def unknown_env_message(name: str) -> str:
    """Error text for an unknown environment name, listing the closest registered names."""
    close = difflib.get_close_matches(name, env_names(), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"env.name={name!r} is not a gymnax environment.{hint} Known: {', '.join(env_names())}."


@dataclass(frozen=True)
class EnvSpec:
    """Everything the learner needs to know about an environment, fixed at trace time."""

    name: str
    env: Any
    params: Any
    obs_shape: tuple[int, ...]
    discrete: bool
    action_dim: int  # number of actions (discrete) or action vector length (continuous)
    action_low: Any = None  # continuous bounds, numpy arrays of shape (action_dim,)
    action_high: Any = None
    max_episode_steps: int = 0
    # > 0: the environment observes one of this many discrete states (an integer), which the
    # learner sees one-hot encoded as a vector of this length (`obs_shape` is then (n,)).
    one_hot_states: int = 0

    def __hash__(self) -> int:  # used as a static jit argument
        return hash((self.name, self.obs_shape, self.discrete, self.action_dim, id(self.env)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnvSpec) and hash(self) == hash(other)

    def observe(self, obs: jax.Array) -> jax.Array:
        """The environment's observation as the float32 array the learner sees."""
        if self.one_hot_states:
            return jax.nn.one_hot(obs, self.one_hot_states, dtype=jnp.float32)
        return jnp.asarray(obs, jnp.float32).reshape(self.obs_shape)


def spec_from_env(name: str, env: Any, params: Any) -> EnvSpec:
    """Describe an instantiated gymnax environment (also used for the probe environments in tests)."""
    from gymnax.environments import spaces

    action_space, obs_space = env.action_space(params), env.observation_space(params)
    max_steps = int(getattr(params, "max_steps_in_episode", 0))
    if isinstance(obs_space, spaces.Discrete):
        one_hot, obs_shape = int(obs_space.n), (int(obs_space.n),)
    elif isinstance(obs_space, spaces.Box):
        one_hot, obs_shape = 0, tuple(obs_space.shape) or (1,)
    else:
        raise ValueError(f"env.name={name!r}: its observation space {obs_space!r} is not one "
                         "jaxac can feed a network; allowed: Box (any shape) or Discrete")
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(name, env, params, obs_shape, True, int(action_space.n),
                       max_episode_steps=max_steps, one_hot_states=one_hot)
    if isinstance(action_space, spaces.Box):
        shape = tuple(action_space.shape) or (1,)
        dim = int(np.prod(shape))
        low = np.broadcast_to(np.asarray(action_space.low, np.float32), (dim,)).copy()
        high = np.broadcast_to(np.asarray(action_space.high, np.float32), (dim,)).copy()
        return EnvSpec(name, env, params, obs_shape, False, dim, low, high, max_steps, one_hot)
    raise ValueError(f"env.name={name!r}: its action space {action_space!r} is not one jaxac "
                     "can act in; allowed: Discrete or Box")


# gymnax's MNIST bandit reads the MNIST files from here, downloading them first if missing.
MNIST_DIR = "/tmp/mnist"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class EnvironmentDataMissing(ValueError):
    """An environment needs data that is not on this machine and could not be fetched."""


@functools.lru_cache(maxsize=None)
def make_env(name: str) -> EnvSpec:
    """Instantiate a registered gymnax environment by name (once per process: the same spec,
    hence the same compiled programs, for every caller)."""
    if name not in env_names():
        raise ValueError(unknown_env_message(name))
    import gymnax

    try:
        env, params = gymnax.make(name)
    except OSError as error:  # urllib's URLError too: an environment that downloads its data
        if name != "MNISTBandit-bsuite":
            raise
        raise EnvironmentDataMissing(
            f"env.name={name!r} needs the MNIST dataset, which gymnax downloads when the "
            f"environment is built; that failed ({error}). Put the four files "
            f"({', '.join(MNIST_FILES)}) into {MNIST_DIR} (for example copied from a machine "
            f"with network access), removing any partial download there, and run again."
        ) from error
    return spec_from_env(name, env, params)


def to_env_action(spec: EnvSpec, action: jax.Array) -> jax.Array:
    """Map a policy sample to what the environment accepts (continuous actions clipped to bounds)."""
    if spec.discrete:
        return action
    clipped = jnp.clip(action, spec.action_low, spec.action_high)
    return clipped if spec.env.action_space(spec.params).shape else clipped[0]


@struct.dataclass
class EnvCarry:
    """Per-environment state carried across steps (leading axis: the environment batch)."""

    env_state: Any
    obs: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    key: jax.Array


@struct.dataclass
class StepOutput:
    """What one batched environment step reports (leading axis: the environment batch)."""

    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array  # the true next observation, before any auto-reset
    episode_return: jax.Array  # the finished episode's return, where terminated | truncated
    episode_length: jax.Array


def reset_envs(spec: EnvSpec, keys: jax.Array) -> EnvCarry:
    """Reset one environment per key; each environment keeps its own RNG stream afterwards."""

    def reset_one(key):
        key, reset_key = jax.random.split(key)
        obs, state = spec.env.reset(reset_key, spec.params)
        return EnvCarry(state, spec.observe(obs), jnp.float32(0), jnp.int32(0), key)

    return jax.vmap(reset_one)(keys)


def step_envs(spec: EnvSpec, carry: EnvCarry, action: jax.Array) -> tuple[EnvCarry, StepOutput]:
    """Step every environment once, auto-resetting the ones whose episode ended."""

    def step_one(c: EnvCarry, a):
        key, step_key = jax.random.split(c.key)
        obs, state, reward, terminated, truncated, info = spec.env.step(
            step_key, c.env_state, to_env_action(spec, a), spec.params)
        reward = jnp.asarray(reward, jnp.float32)
        terminated = jnp.asarray(terminated, bool)
        truncated = jnp.asarray(truncated, bool) & ~terminated  # a termination wins
        done = terminated | truncated
        ep_return = c.episode_return + reward
        ep_length = c.episode_length + 1
        new_carry = EnvCarry(
            env_state=state,
            obs=spec.observe(obs),
            episode_return=jnp.where(done, 0.0, ep_return),
            episode_length=jnp.where(done, 0, ep_length),
            key=key,
        )
        out = StepOutput(reward, terminated, truncated,
                         spec.observe(info["final_observation"]), ep_return, ep_length)
        return new_carry, out

    return jax.vmap(step_one)(carry, action)
