"""The jitted calls an A3C worker makes: the shared `core` functions, on flat vectors
(`jaxac.a3c.layout` describes every layout)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxac import core
from jaxac.a3c.layout import LOSSES, FlatLayout, Segments
from jaxac.envs import EnvSpec, reset_envs
from jaxac.normalization import ObsStats, init_obs_stats, update_obs_stats
from jaxac.results import nonfinite_flags


class Report(NamedTuple):
    """The host-side part of one rollout-and-gradient result, as plain Python values.

    Read with one `tolist`: right after an XLA call, when the CPU caches are cold, every numpy
    call costs several µs, and reading it field by field would make a dozen."""

    diagnostics: list[float]  # LOSSES: policy loss, value loss, entropy, gradient norm
    episodes: list[tuple[float, int]]  # (return, length) of each episode that ended


class A3CLearner:
    """The jitted pieces a worker calls. `init_state` fixes the layouts:

    - `state`: params | obs_stats | opt_state (a rollout reads `state.through("obs_stats")`);
    - `result`: gradient | observed | report, with `report`: losses | done | episode_return |
      episode_length (per environment step);
    - a worker's environments: one packed vector (`env_layout`).
    """

    def __init__(self, spec: EnvSpec, network, tx: optax.GradientTransformation,
                 loss: core.LossConfig, rollout_length: int, envs_per_worker: int):
        self.spec, self.tx, self.loss = spec, tx, loss
        self.rollout_length, self.envs_per_worker = rollout_length, envs_per_worker
        self.apply_fn = network.apply
        self._init_params = lambda key: network.init(key, jnp.zeros((1,) + spec.obs_shape))
        self.env_layout = FlatLayout(jax.eval_shape(self.init_envs, jax.random.PRNGKey(0)))
        self.steps_per_rollout = k = rollout_length * envs_per_worker
        self.n_observed = k * int(np.prod(spec.obs_shape))
        self.report = Segments(losses=len(LOSSES), done=k, episode_return=k, episode_length=k)
        self.rollout_and_gradient = jax.jit(self._rollout_and_gradient)
        # A worker's packed fresh environments from its key. Jitted: run op by op it took 5 ms
        # per worker, at the start of every run.
        self.fresh_env_vector = jax.jit(lambda key: self.pack_envs(self.init_envs(key)))
        # The optimizer step in two forms: hogwild adds one update's step into its live numpy
        # vector in place; locked mode applies a batch of updates to its state, an XLA buffer
        # that goes back in as is (see servers.py). jit compiles one per batch size.
        self.apply_update = jax.jit(functools.partial(self._optimizer_step, whole_state=False))
        self.optimizer_steps = jax.jit(self._optimizer_steps)

    def init_state(self, key: jax.Array) -> np.ndarray:
        """The initial shared state vector; also fixes the layouts."""
        params = jax.jit(self._init_params)(key)
        flat_params, self.unravel = ravel_pytree(params)
        stats = init_obs_stats(self.spec.obs_shape)
        opt_state = self.tx.init(flat_params)
        self.stats_layout, self.opt_layout = FlatLayout(stats), FlatLayout(opt_state)
        self.state = Segments(params=flat_params.size, obs_stats=self.stats_layout.size,
                              opt_state=self.opt_layout.size)
        self.result = Segments(gradient=flat_params.size, observed=self.n_observed,
                               report=self.report.size)
        self.applied = Segments(step=flat_params.size, obs_stats=self.stats_layout.size,
                                opt_state=self.opt_layout.size, flags=1)
        return np.asarray(jnp.concatenate([flat_params, self.stats_layout.pack(stats),
                                           self.opt_layout.pack(opt_state)]))

    @property
    def n_params(self) -> int:
        return self.state.params.stop

    @property
    def report_start(self) -> int:
        """Where a result vector's report begins."""
        return self.result.report.start

    def split_snapshot(self, snapshot: jax.Array) -> tuple[Any, ObsStats]:
        """(parameters, observation statistics) from a snapshot or a whole state vector."""
        return (self.unravel(snapshot[self.state.params]),
                self.stats_layout.unpack(snapshot[self.state.obs_stats]))

    def init_envs(self, key: jax.Array):
        """`envs_per_worker` fresh environments (a pytree; `pack_envs` makes the worker's vector)."""
        return reset_envs(self.spec, jax.random.split(key, self.envs_per_worker))

    def pack_envs(self, envs: Any) -> jax.Array:
        return self.env_layout.pack(envs)

    def unpack_envs(self, vector: Any) -> Any:
        return self.env_layout.unpack(jnp.asarray(vector))

    def stack_envs(self, vectors: list) -> Any:
        """Workers' packed environment vectors as one pytree on the host, stacked on a leading
        worker axis (what a checkpoint stores)."""
        envs = [jax.device_get(self.unpack_envs(v)) for v in vectors]
        return jax.tree.map(lambda *xs: np.stack(xs), *envs)

    def read_report(self, report: list[float]) -> Report:
        """Parse the report part of a result vector (`result[report_start:]`, as a list)."""
        r = self.report
        done, returns, lengths = report[r.done], report[r.episode_return], report[r.episode_length]
        return Report(report[r.losses], [(returns[j], int(lengths[j]))
                                         for j in range(len(done)) if done[j]])

    def add_update(self, state: np.ndarray, out: np.ndarray) -> None:
        """Apply an `apply_update` output to a state vector in place: add the parameter step,
        replace the statistics and the optimizer state."""
        params = self.state.params
        np.add(state[params], out[self.applied.step], out=state[params])
        np.copyto(state[self.state.after("params")],
                  out[self.applied.step.stop:self.applied.flags.start])

    def _rollout_and_gradient(self, snapshot, env_vector, entropy_coef):
        """Roll out on the snapshot and compute its gradient: (env vector, result vector)."""
        params, obs_stats = self.split_snapshot(snapshot)
        envs, traj = core.rollout(self.apply_fn, params, obs_stats,
                                  self.env_layout.unpack(env_vector), self.spec,
                                  self.rollout_length, self.loss.normalize_obs)
        grads, info = core.gradients(params, self.apply_fn, obs_stats, traj, self.loss,
                                     entropy_coef)
        flat_grads, _ = ravel_pytree(grads)
        result = jnp.concatenate([
            flat_grads, traj.obs_tm1.ravel(),
            jnp.stack([info.policy_loss, info.value_loss, info.entropy,
                       optax.tree.norm(flat_grads)]),
            traj.done_t.astype(jnp.float32).ravel(), traj.episode_return.ravel(),
            traj.episode_length.astype(jnp.float32).ravel()])
        return self.env_layout.pack(envs), result

    def _optimizer_step(self, state, result, scale, whole_state: bool):
        """From the shared state vector and a worker's result vector, the `applied` vector:
        [parameter step (or, with `whole_state`, the new parameters) | new observation
        statistics | new optimizer state | non-finite flags]. With `whole_state` all but the
        flags is the next state vector. The flags (`results.nonfinite_flags`) guard the report's
        losses and the parameter step; 0 when all are finite."""
        obs_stats = self.stats_layout.unpack(state[self.state.obs_stats])
        opt_state = self.opt_layout.unpack(state[self.state.opt_state])
        delta, opt_state = self.tx.update(result[self.result.gradient], opt_state)
        observed = result[self.result.observed].reshape((-1,) + self.spec.obs_shape)
        obs_stats = update_obs_stats(obs_stats, observed, self.loss.normalize_obs)
        delta = delta * scale
        losses = result[self.result.report][self.report.losses]
        flags = nonfinite_flags(**dict(zip(LOSSES, losses)), params=delta).astype(jnp.float32)
        return jnp.concatenate([state[self.state.params] + delta if whole_state else delta,
                                self.stats_layout.pack(obs_stats),
                                self.opt_layout.pack(opt_state), flags[None]])

    def _optimizer_steps(self, state, results: tuple, scales, count):
        """Apply the gradients in `results[:count]` to a state vector one after another, exactly
        as that many separate optimizer steps would.

        Returns (new state vector, info), where info row j is [non-finite flags of update j
        (see `_optimizer_step`; -1 past `count`) | report part of results[j]]: one small buffer
        for the host to read for the whole batch. The state includes every update up to
        `count`, non-finite ones too: the caller checks the flags (and re-applies the good
        prefix in the rare case one is set). `results` may be padded past `count`, so that a
        few batch sizes serve every count; each step past it is skipped by a conditional.
        (On the CPU a `while_loop` over stacked results costs twice as much per step.)
        """
        flags = []
        for j, result in enumerate(results):
            def apply(state, result=result, j=j):
                out = self._optimizer_step(state, result, scales[j], whole_state=True)
                return out[self.applied.through("opt_state")], out[self.applied.flags][0]

            if j == 0 and len(results) == 1:  # a batch of one has no conditional
                state, flag = apply(state)
                flag = jnp.where(count > 0, flag, -1.0)
            else:
                state, flag = jax.lax.cond(j < count, apply, lambda s: (s, jnp.float32(-1)),
                                           state)
            flags.append(flag)
        reports = jnp.stack([result[self.result.report] for result in results])
        return state, jnp.concatenate([jnp.stack(flags)[:, None], reports], axis=1)
