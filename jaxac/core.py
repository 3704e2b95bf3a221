"""The learner core shared by A2C and A3C: rollout, returns and advantages, loss, gradient.

Everything here is a pure function of explicit inputs. Trajectories are time-major, `[T, B, ...]`.
Names follow rlax: `_tm1` is the step an action was taken in, `_t` the step it led to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct

from jaxac.envs import EnvCarry, EnvSpec, step_envs
from jaxac.normalization import ObsStats, normalize


@dataclass(frozen=True)
class LossConfig:
    """Hyperparameters of the advantage actor-critic loss (hashable: a static jit argument).
    Their defaults and meaning are the config schema's (`jaxac.config.AlgoConfig`)."""

    gamma: float
    gae_lambda: float
    value_coef: float
    entropy_coef: float  # A3C's per-worker coefficients are passed to the loss directly
    reward_scale: float
    normalize_obs: bool

    @classmethod
    def from_config(cls, cfg: Any) -> "LossConfig":
        """The loss settings of a validated run config."""
        a = cfg.algo
        return cls(gamma=float(a.gamma), gae_lambda=float(a.gae_lambda),
                   value_coef=float(a.value_coef),
                   entropy_coef=float(a.entropy_coef)
                   if isinstance(a.entropy_coef, (int, float)) else 0.0,
                   reward_scale=float(a.reward_scale), normalize_obs=bool(cfg.env.normalize_obs))


@struct.dataclass
class Trajectory:
    """A rollout of `T` steps of `B` environments, with raw (unnormalised) observations."""

    obs_tm1: jax.Array  # [T, B, *obs]   observation the action was taken in
    action_tm1: jax.Array  # [T, B, ...]
    reward_t: jax.Array  # [T, B]
    terminated_t: jax.Array  # [T, B]  natural end: no bootstrap
    truncated_t: jax.Array  # [T, B]   time-out: bootstrap from the final observation
    obs_t: jax.Array  # [T, B, *obs]   true next observation (before auto-reset)
    episode_return: jax.Array  # [T, B]  finished episode's return where the episode ended
    episode_length: jax.Array  # [T, B]

    @property
    def done_t(self) -> jax.Array:
        return self.terminated_t | self.truncated_t


def rollout(
    apply_fn: Callable,
    params: Any,
    obs_stats: ObsStats,
    carry: EnvCarry,
    spec: EnvSpec,
    length: int,
    normalize_obs: bool,
) -> tuple[EnvCarry, Trajectory]:
    """Act for `length` steps in a batch of environments with the current policy.

    A `lax.scan` over time of `vmap`ped environment steps; each environment draws its actions from
    its own RNG stream (in `carry.key`), so results do not depend on how the batch is split.
    """

    def one_step(c: EnvCarry, _):
        dist, _ = apply_fn(params, normalize(obs_stats, c.obs, normalize_obs))
        keys = jax.vmap(jax.random.split)(c.key)
        action = jax.vmap(lambda d, k: d.sample(k))(dist, keys[:, 1])
        next_c, out = step_envs(spec, c.replace(key=keys[:, 0]), action)
        step = Trajectory(
            obs_tm1=c.obs,
            action_tm1=action,
            reward_t=out.reward,
            terminated_t=out.terminated,
            truncated_t=out.truncated,
            obs_t=out.final_obs,
            episode_return=out.episode_return,
            episode_length=out.episode_length,
        )
        return next_c, step

    carry, traj = jax.lax.scan(one_step, carry, None, length=length)
    return carry, traj


def n_step_returns(
    r_t: jax.Array, discount_t: jax.Array, done_t: jax.Array, v_t: jax.Array
) -> jax.Array:
    """Bootstrapped n-step returns for every step of a `[T, ...]` rollout.

    G_t = r_t + discount_t * (G_{t+1} if the episode goes on else v_t); the last step bootstraps
    from v_t. `discount_t` is gamma * (1 - terminated_t): a time-out (done but not terminated)
    bootstraps from v_t, the value of the true final observation, and a termination does not.
    """
    chex.assert_equal_shape([r_t, discount_t, done_t, v_t])

    def backward(g_next, xs):
        r, discount, done, v = xs
        g = r + discount * jnp.where(done, v, g_next)
        return g, g

    _, returns = jax.lax.scan(backward, v_t[-1], (r_t, discount_t, done_t, v_t), reverse=True)
    return returns


def gae_advantages(
    r_t: jax.Array,
    discount_t: jax.Array,
    done_t: jax.Array,
    v_tm1: jax.Array,
    v_t: jax.Array,
    gamma: float,
    lambda_: float,
) -> jax.Array:
    """Generalised advantage estimates A_t = sum_k (gamma lambda)^k delta_{t+k}, cut at episode ends.

    delta_t = r_t + discount_t * v_t - v_tm1, with v_t the value of the true next observation
    (its final observation when the episode ended). With lambda = 1, A_t + v_tm1 equals
    `n_step_returns`.
    """
    chex.assert_equal_shape([r_t, discount_t, done_t, v_tm1, v_t])
    delta = r_t + discount_t * v_t - v_tm1
    trace = gamma * lambda_ * (1.0 - done_t.astype(jnp.float32))

    def backward(a_next, xs):
        d, tr = xs
        a = d + tr * a_next
        return a, a

    _, adv = jax.lax.scan(backward, jnp.zeros_like(delta[-1]), (delta, trace), reverse=True)
    return adv


@struct.dataclass
class LossInfo:
    """Scalar diagnostics of one loss evaluation."""

    total: jax.Array
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array


def loss_fn(params: Any, apply_fn: Callable, obs_stats: ObsStats, traj: Trajectory,
            cfg: LossConfig, entropy_coef: jax.Array | float | None = None
            ) -> tuple[jax.Array, LossInfo]:
    """Policy gradient + value_coef * value loss - entropy_coef * entropy, averaged over [T, B].

    Observations are normalised with `obs_stats`, the statistics the rollout acted with.
    `entropy_coef` overrides `cfg.entropy_coef` (A3C workers may each have their own).
    """
    entropy_coef = cfg.entropy_coef if entropy_coef is None else entropy_coef
    dist, v_tm1 = apply_fn(params, normalize(obs_stats, traj.obs_tm1, cfg.normalize_obs))
    _, v_t = apply_fn(params, normalize(obs_stats, traj.obs_t, cfg.normalize_obs))
    v_t = jax.lax.stop_gradient(v_t)
    chex.assert_equal_shape([v_tm1, traj.reward_t])
    discount_t = cfg.gamma * (1.0 - traj.terminated_t.astype(jnp.float32))
    adv = gae_advantages(traj.reward_t * cfg.reward_scale, discount_t, traj.done_t,
                         jax.lax.stop_gradient(v_tm1), v_t, cfg.gamma, cfg.gae_lambda)
    returns = jax.lax.stop_gradient(adv + v_tm1)
    policy_loss = -jnp.mean(dist.log_prob(traj.action_tm1) * jax.lax.stop_gradient(adv))
    value_loss = 0.5 * jnp.mean((returns - v_tm1) ** 2)
    entropy = jnp.mean(dist.entropy())
    total = policy_loss + cfg.value_coef * value_loss - entropy_coef * entropy
    return total, LossInfo(total, policy_loss, value_loss, entropy)


def gradients(params: Any, apply_fn: Callable, obs_stats: ObsStats, traj: Trajectory,
              cfg: LossConfig, entropy_coef: jax.Array | float | None = None
              ) -> tuple[Any, LossInfo]:
    """Gradient of `loss_fn` with respect to `params`, with the loss diagnostics."""
    grads, info = jax.grad(loss_fn, has_aux=True)(params, apply_fn, obs_stats, traj, cfg,
                                                  entropy_coef)
    return grads, info

