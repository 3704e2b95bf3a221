"""The published returns jaxac's learning results are measured against, and a random policy's
returns (the zero of normalised scores)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """A preset (`conf/env/<preset>.yaml`) and the published return it is measured against."""

    preset: str
    env: str
    value: float | None  # None: no published reference (the suite reports what it reaches)
    source: str
    steps: int | None = None  # env steps the reference was trained for, where it says


REFERENCES = (
    Reference("cartpole", "CartPole-v1", 500.0, "rl-baselines3-zoo A2C (benchmark.md)",
              500_000),
    Reference("acrobot", "Acrobot-v1", -83.4, "rl-baselines3-zoo A2C", 500_000),
    Reference("mountaincar", "MountainCar-v0", -111.3, "rl-baselines3-zoo A2C", 1_000_000),
    Reference("mountaincar_continuous", "MountainCarContinuous-v0", 91.2,
              "rl-baselines3-zoo A2C (gSDE)", 100_000),
    Reference("pendulum", "Pendulum-v1", -163.0, "rl-baselines3-zoo A2C (gSDE)", 1_000_000),
    Reference("catch", "Catch-bsuite", 1.0, "gymnax README, PPO"),
    Reference("asterix", "Asterix-MinAtar", 15.0, "gymnax README, PPO", 10_000_000),
    Reference("breakout", "Breakout-MinAtar", 28.0, "gymnax README, PPO"),
    Reference("freeway", "Freeway-MinAtar", 58.0, "gymnax README, PPO"),
    Reference("spaceinvaders", "SpaceInvaders-MinAtar", 131.0, "gymnax README, PPO"),
    Reference("seaquest", "Seaquest-MinAtar", None, "none published"),
)
BY_PRESET = {r.preset: r for r in REFERENCES}
# Mean return of a uniformly random policy (1,000 episodes; `python -m jaxac.suite
# --random-returns` measures them again): the zero of normalised scores (`jaxac.analysis`).
RANDOM_RETURNS = {
    "CartPole-v1": 21.839, "Acrobot-v1": -499.326, "MountainCar-v0": -200.0,
    "MountainCarContinuous-v0": -32.981, "Pendulum-v1": -1235.088, "Catch-bsuite": -0.612,
    "Asterix-MinAtar": 0.478, "Breakout-MinAtar": 0.422, "Freeway-MinAtar": 0.393,
    "SpaceInvaders-MinAtar": 4.226, "Seaquest-MinAtar": 0.101,
}


def random_policy_returns(env_name: str, episodes: int = 1000, seed: int = 0) -> float:
    """Mean return of `episodes` episodes of uniformly random actions in `env_name`."""
    import jax
    import jax.numpy as jnp

    from jaxac.envs import make_env, reset_envs, step_envs

    spec = make_env(env_name)
    space = spec.env.action_space(spec.params)
    limit = spec.max_episode_steps or 100_000

    @jax.jit
    def run(key):
        carry = reset_envs(spec, jax.random.split(key, episodes))

        def body(loop):
            c, finished, returns, t, k = loop
            k, sub = jax.random.split(k)
            actions = jax.vmap(space.sample)(jax.random.split(sub, episodes))
            actions = actions.reshape(episodes, -1) if not spec.discrete else actions
            c, out = step_envs(spec, c, actions)
            returns = jnp.where(finished, returns, returns + out.reward)
            return c, finished | out.terminated | out.truncated, returns, t + 1, k

        def cond(loop):
            return (~jnp.all(loop[1])) & (loop[3] < limit)

        init = (carry, jnp.zeros(episodes, bool), jnp.zeros(episodes), 0, key)
        return jax.lax.while_loop(cond, body, init)[2].mean()

    return float(run(jax.random.PRNGKey(seed)))
