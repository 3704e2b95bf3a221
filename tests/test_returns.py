"""Hand-computed n-step returns and GAE, including a time-out and a termination mid-rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxac.core import gae_advantages, n_step_returns

GAMMA = 0.9

# One environment, T = 5 steps:
#   t=0 r=1          episode goes on
#   t=1 r=2          time-out (truncated): bootstrap from v(final obs) = 10
#   t=2 r=3          episode goes on
#   t=3 r=4          termination: no bootstrap
#   t=4 r=5          episode goes on: bootstrap from v(next obs) = 7
R = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
TERMINATED = np.array([0, 0, 0, 1, 0], bool)
TRUNCATED = np.array([0, 1, 0, 0, 0], bool)
V_TM1 = np.array([0.5, 1.5, 2.5, 3.5, 4.5])  # values of the observations acted in
V_T = np.array([1.5, 10.0, 3.5, 99.0, 7.0])  # values of the true next observations


def _inputs():
    discount = GAMMA * (1.0 - TERMINATED)
    done = TERMINATED | TRUNCATED
    return (jnp.asarray(R), jnp.asarray(discount, jnp.float32), jnp.asarray(done),
            jnp.asarray(V_TM1), jnp.asarray(V_T))


def test_n_step_returns_by_hand():
    r, discount, done, _, v_t = _inputs()
    expected = np.array([
        1 + GAMMA * (2 + GAMMA * 10.0),  # runs into the time-out, bootstraps from 10
        2 + GAMMA * 10.0,
        3 + GAMMA * 4,  # runs into the termination: 4 and nothing after it
        4.0,  # terminal: v_t = 99 must be ignored
        5 + GAMMA * 7.0,  # end of rollout: bootstrap from v_t
    ])
    got = jax.jit(n_step_returns)(r, discount, done, v_t)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_gae_by_hand(lam):
    r, discount, done, v_tm1, v_t = _inputs()
    delta = R + GAMMA * (1.0 - TERMINATED) * V_T - V_TM1
    trace = GAMMA * lam * (1.0 - (TERMINATED | TRUNCATED))
    expected = np.zeros(5)
    running = 0.0
    for t in reversed(range(5)):
        running = delta[t] + trace[t] * running
        expected[t] = running
    got = jax.jit(gae_advantages, static_argnums=(5, 6))(r, discount, done, v_tm1, v_t, GAMMA, lam)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if lam == 0.0:  # one-step TD errors, the time-out bootstrapping from v(final obs) = 10
        np.testing.assert_allclose(got[1], 2 + GAMMA * 10.0 - 1.5, rtol=1e-6)


def test_gae_lambda_one_is_n_step_return_and_batches_under_vmap():
    # Column 2 is a second, consistent trajectory (v_t of an ongoing step = next step's v_tm1),
    # as every real rollout is; the telescoping identity needs that.
    second = (jnp.ones(5), jnp.full(5, GAMMA), jnp.zeros(5, bool), jnp.arange(1.0, 6.0),
              jnp.arange(2.0, 7.0))
    args = [jnp.stack([x, y.astype(x.dtype)], axis=1) for x, y in zip(_inputs(), second)]
    adv = gae_advantages(*args, GAMMA, 1.0)
    returns = n_step_returns(args[0], args[1], args[2], args[4])
    np.testing.assert_allclose(adv + args[3], returns, rtol=1e-5)
    # vmap over a leading seed axis gives the same per-element results
    seeds = [jnp.stack([a, a]) for a in args]
    vmapped = jax.vmap(lambda *a: gae_advantages(*a, GAMMA, 1.0))(*seeds)
    np.testing.assert_allclose(vmapped[1], adv, rtol=1e-6)
