"""Probe environments: tiny MDPs whose value function and optimal policy are known exactly.

They are real gymnax Environments, so they run through the same rollout, loss and trainer code as
CartPole. Observations are 1-D vectors of length 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class ProbeState(environment.EnvState):
    obs: jax.Array
    time: int


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 5


class _Probe(environment.Environment):
    """Base: one discrete action unless a subclass says otherwise."""

    num_actions_ = 1

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    def action_space(self, params=None):
        return spaces.Discrete(self.num_actions_)

    def observation_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)

    def _state(self, obs, time):
        return ProbeState(obs=jnp.asarray([obs], jnp.float32), time=time)

    def reset_env(self, key, params):
        s = self._state(0.0, 0)
        return s.obs, s


class ConstantReward(_Probe):
    """One step, reward 1: V(0) = 1."""

    def step_env(self, key, state, action, params):
        s = self._state(0.0, state.time + 1)
        return s.obs, s, jnp.float32(1.0), jnp.bool_(True), {}


class ObservationReward(_Probe):
    """One step; the observation is +1 or -1 at random and the reward equals it: V(o) = o."""

    def reset_env(self, key, params):
        s = self._state(jnp.where(jax.random.bernoulli(key), 1.0, -1.0), 0)
        return s.obs, s

    def step_env(self, key, state, action, params):
        s = self._state(0.0, state.time + 1)
        return s.obs, s, state.obs[0], jnp.bool_(True), {}


class TwoStepDiscount(_Probe):
    """Observation 0 then 1; reward 0 then 1, then the episode ends: V(0) = gamma, V(1) = 1."""

    def reset_env(self, key, params):
        s = self._state(-1.0, 0)  # observation -1 encodes the first state
        return s.obs, s

    def step_env(self, key, state, action, params):
        first = state.obs[0] < 0
        s = self._state(1.0, state.time + 1)
        return s.obs, s, jnp.where(first, 0.0, 1.0), ~first, {}


class ActionReward(_Probe):
    """One step, two actions; action 1 earns 1 and action 0 earns 0: the policy should pick 1."""

    num_actions_ = 2

    def step_env(self, key, state, action, params):
        s = self._state(0.0, state.time + 1)
        return s.obs, s, jnp.where(action == 1, 1.0, 0.0), jnp.bool_(True), {}


class ContinuousTarget(_Probe):
    """One step with a continuous action in [-1, 1]; reward -(a - 0.5)^2: the mean should go to 0.5."""

    def action_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)

    def step_env(self, key, state, action, params):
        s = self._state(0.0, state.time + 1)
        a = jnp.reshape(action, ())
        return s.obs, s, -((a - 0.5) ** 2), jnp.bool_(True), {}


class TimeLimitOnly(_Probe):
    """Never terminates, reward 1 every step, truncated after `max_steps_in_episode` steps.

    Because time-outs bootstrap, the value of every state is 1 / (1 - gamma), not the truncated sum.
    """

    def step_env(self, key, state, action, params):
        s = self._state(0.0, state.time + 1)
        return s.obs, s, jnp.float32(1.0), jnp.bool_(False), {}


@struct.dataclass
class LongParams(environment.EnvParams):
    max_steps_in_episode: int = 1_000_000


class NaNRewardAfter(_Probe):
    """Reward 1 per step until each environment's step `nan_from`, then NaN: training diverges at
    a known update (episodes never end, so `time` counts every step of the environment)."""

    def __init__(self, nan_from: int):
        super().__init__()
        self.nan_from = nan_from

    @property
    def default_params(self) -> LongParams:
        return LongParams()

    def step_env(self, key, state, action, params):
        s = self._state(0.0, state.time + 1)
        reward = jnp.where(s.time >= self.nan_from, jnp.nan, 1.0).astype(jnp.float32)
        return s.obs, s, reward, jnp.bool_(False), {}
