"""The FLOP-bound roofline: the machine's matrix-multiply rate, XLA's FLOP count of a training
env step, and the rates of the update's parts alone (acting only; the network passes only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxac import core
from jaxac.bench.timing import calibrate, timed_repeats
from jaxac.envs import reset_envs
from jaxac.normalization import init_obs_stats

ROLLOUT = 5  # rollout_length of every bench row


@dataclass
class FlopCount:
    """XLA's FLOPs per training env step: the rollout's policy forward pass, the loss's forward
    and backward pass, their total, and the network passes timed alone (within 1% of the total)."""

    forward_per_step: float
    loss_and_grad_per_step: float
    total_per_step: float
    network_passes_per_step: float = 0.0


def default_matmul_size() -> int:
    """Side of the square matrices the matrix-multiply rate is measured with."""
    return 8192 if jax.default_backend() == "gpu" else 1024


def matmul_timer(size: int) -> Callable[[], float]:
    """A calibrated measurement of the default device's float32 matrix-multiply rate: each call
    returns one measurement in FLOP/s (about half a second of chained multiplies)."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (size, size), jnp.float32)
    b = jax.random.normal(key_b, (size, size), jnp.float32)
    step = jax.jit(lambda x, y: (x @ y) * (1.0 / size))  # scaled to stay finite when chained

    def run(n: int):
        x = a
        for _ in range(n):
            x = step(x, b)
        x.block_until_ready()

    n = calibrate(run, 0.5, start=1)
    return lambda: timed_repeats(lambda: (run(n), 2 * size ** 3 * n)[1], 1)[0]


def flop_bound_fraction(steps_per_second: float, flops_per_step: float,
                        matmul_flops_per_second: float) -> float:
    """Training throughput as a fraction of the FLOP-bound limit: the matrix-multiply rate
    divided by the FLOPs of one training env step."""
    return steps_per_second * flops_per_step / matmul_flops_per_second


def flops(fn: Callable, *args) -> float:
    """XLA's count of the floating-point operations of `fn(*args)`, compiled."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, list):  # older JAX returns one dict per computation
        analysis = analysis[0]
    return float(analysis["flops"])


def sample_trajectory(spec, network, workers: int, normalize_obs: bool = False
                      ) -> tuple[Any, core.Trajectory]:
    """Freshly initialised parameters, and one `ROLLOUT`-step trajectory of `workers` fresh
    environments acted in with them: the inputs of a training step, to count or time it on."""
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape))
    stats = init_obs_stats(spec.obs_shape)
    envs = reset_envs(spec, jax.random.split(jax.random.PRNGKey(1), workers))
    _, traj = jax.jit(lambda p, e: core.rollout(network.apply, p, stats, e, spec, ROLLOUT,
                                                normalize_obs))(params, envs)
    return params, traj


def training_flops_per_step(cfg, spec, network, workers: int) -> FlopCount:
    """FLOPs of one training env step: the rollout's policy forward pass per step, plus the
    loss's forward and backward pass over a [rollout, workers] trajectory, per env step.

    Acting needs only the policy: the rollout never evaluates the value head (XLA drops it), so
    its forward pass is counted without it, as compiled. With the MLP's separate critic stream
    that is about half the network's full forward pass."""
    loss = core.LossConfig.from_config(cfg)
    stats = init_obs_stats(spec.obs_shape)
    params, traj = sample_trajectory(spec, network, workers, loss.normalize_obs)
    obs = jnp.zeros((workers,) + spec.obs_shape)
    forward = flops(lambda p, o: network.apply(p, o)[0], params, obs)  # the policy only
    backward = flops(lambda p, t: core.gradients(p, network.apply, stats, t, loss), params, traj)
    steps = ROLLOUT * workers
    return FlopCount(forward / workers, backward / steps, forward / workers + backward / steps)


def inference_rates(cfg, spec, network, workers: int, repeats: int,
                    seconds: float) -> list[float]:
    """Env steps/s of acting only: the policy's forward pass, sampling, and the env step."""
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape))
    stats = init_obs_stats(spec.obs_shape)

    @jax.jit
    def act(envs, n):
        def body(_, e):
            e, traj = core.rollout(network.apply, params, stats, e, spec, ROLLOUT, False)
            return e
        return jax.lax.fori_loop(0, n, body, envs)

    holder = {"envs": reset_envs(spec, jax.random.split(jax.random.PRNGKey(1), workers))}

    def run(n: int) -> int:
        holder["envs"] = act(holder["envs"], n)
        jax.block_until_ready(holder["envs"])
        return n * ROLLOUT * workers

    n = calibrate(run, seconds)
    return timed_repeats(lambda: run(n), repeats)


def network_pass_rates(cfg, spec, network, workers: int, repeats: int,
                       seconds: float) -> tuple[list[float], float]:
    """Env steps/s of a training update's network passes alone: the rollout's `ROLLOUT` policy
    forward passes over `workers` observations, and the loss's forward pass (policy and value)
    and backward pass over the [ROLLOUT, workers] trajectory, with the value of the next
    observations; no environment, sampling, loss terms, optimizer or bookkeeping.

    This is the work the FLOP count counts, as XLA's CPU kernels run it: how close to the
    FLOP-bound limit the trainer could get if everything else were free. The passes are
    `vmap`ped over a seed axis of one, as the trainer compiles them. Returns the rates and XLA's
    FLOP count of the passes per env step (to compare with the training step's)."""
    params, traj = sample_trajectory(spec, network, workers)

    def policy_output(p, obs) -> jax.Array:  # logits or Gaussian means
        return jax.tree.leaves(network.apply(p, obs)[0])[0]

    # Fixed random weights on the outputs make the backward pass start from a cotangent that
    # varies per sample, as the loss's does (a plain sum lets XLA simplify the last layer).
    policy_shape = jax.eval_shape(policy_output, params, traj.obs_tm1).shape
    k_policy, k_value = jax.random.split(jax.random.PRNGKey(2))
    policy_weight = jax.random.normal(k_policy, policy_shape)
    value_weight = jax.random.normal(k_value, traj.reward_t.shape)

    def weighted_outputs(p, obs):  # one scalar to differentiate
        # One apply for both heads: two would give a shared torso two backward passes.
        dist, value = network.apply(p, obs)
        return (jnp.sum(jax.tree.leaves(dist)[0] * policy_weight)
                + jnp.sum(value * value_weight))

    def passes(p):
        acting = sum(jnp.sum(policy_output(p, traj.obs_tm1[t])) for t in range(ROLLOUT))
        next_value = jnp.sum(network.apply(p, traj.obs_t)[1])
        grads = jax.grad(weighted_outputs)(p, traj.obs_tm1)
        # A tiny step that depends on every pass, so that each iteration needs the one before.
        return jax.tree.map(lambda x, g: x - 1e-9 * g - 1e-12 * (acting + next_value), p, grads)

    @jax.jit
    def run_passes(p, n):
        return jax.lax.fori_loop(0, n, lambda _, q: jax.vmap(passes)(q), p)

    holder = {"params": jax.tree.map(lambda x: x[None], params)}

    def run(n: int) -> int:
        holder["params"] = jax.block_until_ready(run_passes(holder["params"], n))
        return n * ROLLOUT * workers

    n = calibrate(run, seconds)
    flops_per_step = flops(jax.vmap(passes), holder["params"]) / (ROLLOUT * workers)
    return timed_repeats(lambda: run(n), repeats), flops_per_step
