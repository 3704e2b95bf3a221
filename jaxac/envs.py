"""gymnax environments: construction, a static description of their spaces, and a batched step
that auto-resets, keeps per-episode statistics and reports the true final observation."""

from __future__ import annotations

import difflib
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

    def __hash__(self) -> int:  # used as a static jit argument
        return hash((self.name, self.obs_shape, self.discrete, self.action_dim, id(self.env)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnvSpec) and hash(self) == hash(other)


def spec_from_env(name: str, env: Any, params: Any) -> EnvSpec:
    """Describe an instantiated gymnax environment (also used for the probe environments in tests)."""
    from gymnax.environments import spaces

    action_space = env.action_space(params)
    obs_shape = tuple(env.observation_space(params).shape)
    max_steps = int(getattr(params, "max_steps_in_episode", 0))
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(name, env, params, obs_shape, True, int(action_space.n),
                       max_episode_steps=max_steps)
    if isinstance(action_space, spaces.Box):
        shape = tuple(action_space.shape) or (1,)
        dim = int(np.prod(shape))
        low = np.broadcast_to(np.asarray(action_space.low, np.float32), (dim,)).copy()
        high = np.broadcast_to(np.asarray(action_space.high, np.float32), (dim,)).copy()
        return EnvSpec(name, env, params, obs_shape, False, dim, low, high, max_steps)
    raise ValueError(f"env.name={name!r}: unsupported action space {type(action_space).__name__}; "
                     "allowed: Discrete or Box")


def make_env(name: str) -> EnvSpec:
    """Instantiate a registered gymnax environment by name."""
    if name not in env_names():
        raise ValueError(unknown_env_message(name))
    import gymnax

    env, params = gymnax.make(name)
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
        return EnvCarry(state, obs.astype(jnp.float32), jnp.float32(0), jnp.int32(0), key)

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
            obs=obs.astype(jnp.float32),
            episode_return=jnp.where(done, 0.0, ep_return),
            episode_length=jnp.where(done, 0, ep_length),
            key=key,
        )
        out = StepOutput(reward, terminated, truncated,
                         info["final_observation"].astype(jnp.float32), ep_return, ep_length)
        return new_carry, out

    return jax.vmap(step_one)(carry, action)
