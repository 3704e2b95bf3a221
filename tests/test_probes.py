"""Probe environments with known answers, trained through the real config, trainer and core."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probe_envs
from jaxac.a2c import build_learner
from jaxac.config import compose_config
from jaxac.envs import spec_from_env
from jaxac.networks import make_network

GAMMA = 0.9
PROBE_OVERRIDES = ["workers=32", "algo.optimizer=adam", "algo.lr=3e-3", "algo.entropy_coef=0.0",
                   "algo.max_grad_norm=10.0", f"algo.gamma={GAMMA}"]


def train_probe(env, updates, overrides=()):
    """Train on a probe; returns the function obs -> (distribution, value) of seed 0's agent."""
    cfg = compose_config(PROBE_OVERRIDES + list(overrides))
    spec = spec_from_env(type(env).__name__, env, env.default_params)
    network = make_network(spec)
    trainer = build_learner(cfg, spec, network, jax.devices())
    state, _ = trainer.run_updates(trainer.init_state(0), updates)
    params = jax.tree.map(lambda x: x[0], state.params)
    return lambda obs: network.apply(params, jnp.asarray([[obs]], jnp.float32))


def test_constant_reward_value():
    policy = train_probe(probe_envs.ConstantReward(), 300, ["rollout_length=1"])
    assert float(policy(0.0)[1][0]) == pytest.approx(1.0, abs=0.05)


@pytest.mark.slow
def test_observation_dependent_value():
    policy = train_probe(probe_envs.ObservationReward(), 400, ["rollout_length=1"])
    assert float(policy(1.0)[1][0]) == pytest.approx(1.0, abs=0.05)
    assert float(policy(-1.0)[1][0]) == pytest.approx(-1.0, abs=0.05)


@pytest.mark.parametrize("rollout_length", [1, 2])
def test_two_step_discounting(rollout_length):
    # rollout_length=1 learns V(first) only by bootstrapping from V(second).
    policy = train_probe(probe_envs.TwoStepDiscount(), 600, [f"rollout_length={rollout_length}"])
    assert float(policy(1.0)[1][0]) == pytest.approx(1.0, abs=0.05)
    assert float(policy(-1.0)[1][0]) == pytest.approx(GAMMA, abs=0.05)


@pytest.mark.slow
def test_action_dependent_reward_policy():
    policy = train_probe(probe_envs.ActionReward(), 400, ["rollout_length=1"])
    dist, value = policy(0.0)
    probs = np.exp(np.asarray(jax.nn.log_softmax(dist.logits[0])))
    assert probs[1] > 0.95
    assert float(value[0]) == pytest.approx(1.0, abs=0.1)


@pytest.mark.slow
def test_continuous_action_gaussian_mean():
    policy = train_probe(probe_envs.ContinuousTarget(), 2000, ["rollout_length=1"])
    dist, _ = policy(0.0)
    assert float(dist.mean[0, 0]) == pytest.approx(0.5, abs=0.1)


def test_time_out_bootstraps_instead_of_terminating():
    # Reward 1 forever, cut by a 5-step time limit: bootstrapping gives V = 1/(1-gamma) = 10.
    # Treating the time-out as a termination would give at most 1 + 0.9 + ... (5 terms) = 4.1.
    policy = train_probe(probe_envs.TimeLimitOnly(), 1500, ["rollout_length=5"])
    assert float(policy(0.0)[1][0]) == pytest.approx(1 / (1 - GAMMA), rel=0.08)
