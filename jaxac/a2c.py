"""Synchronous A2C: `workers` vmapped environments act in lockstep, one averaged update per rollout.

The whole update loop between two log points is one jitted call: a `lax.while_loop` over updates
(stopping at the first non-finite one), each a `lax.scan` rollout plus a gradient step, `vmap`ped
over independent seeds and split across devices with `jax.shard_map` (the environment batch is
sharded; the gradients are averaged and the episode statistics gathered in one all-reduce per
update, `combine_shards`). The host only touches the state once per logging interval, when
`A2CTrainer` hands the shared driver (`jaxac.loop`) its metric rows.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxac import core, distributed
from jaxac.checkpoint import CheckpointInfo, load_checkpoint
from jaxac.config import steps_per_update
from jaxac.envs import EnvCarry, EnvSpec, reset_envs, solve_threshold
from jaxac.episodes import EpisodeStats, RecentEpisodes, add_episodes
from jaxac.normalization import (ObsStats, batch_moments, init_obs_stats, merge_moments,
                                 pool_moments)
from jaxac.optim import OptimConfig, current_lr, make_optimizer
from jaxac.results import Divergence, MetricRow, first_nonfinite, nonfinite_flags
from jaxac.signals import StopRequest

AXIS = "devices"  # mesh axis the environment batch is split over


@struct.dataclass
class TrainState:
    """Everything one A2C agent needs to continue training (one per seed; leading axis = seed)."""

    params: Any
    opt_state: Any
    obs_stats: ObsStats
    envs: EnvCarry  # leading axis: environments, sharded across devices
    recent: RecentEpisodes
    update: jax.Array  # updates applied so far
    solved_update: jax.Array  # first update after which the last-100 mean reached the threshold


@struct.dataclass
class IntervalMetrics:
    """Sums over the updates of one logging interval (per seed)."""

    updates: jax.Array
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    grad_norm: jax.Array
    episodes: EpisodeStats
    nonfinite_update: jax.Array  # first update whose results were not all finite; -1: none
    nonfinite_flags: jax.Array  # at that update (results.nonfinite_flags)

    @classmethod
    def empty(cls) -> "IntervalMetrics":
        z = jnp.float32(0)
        return cls(jnp.int32(0), z, z, z, z, EpisodeStats.empty(), jnp.int32(-1), jnp.int32(0))

    def add(self, m: "IntervalMetrics") -> "IntervalMetrics":
        """These sums plus one more update's metrics `m`."""
        first = self.nonfinite_update >= 0
        return IntervalMetrics(
            self.updates + m.updates, self.policy_loss + m.policy_loss,
            self.value_loss + m.value_loss, self.entropy + m.entropy,
            self.grad_norm + m.grad_norm, self.episodes.merge(m.episodes),
            jnp.where(first, self.nonfinite_update, m.nonfinite_update),
            jnp.where(first, self.nonfinite_flags, m.nonfinite_flags))


@dataclass
class A2CSettings:
    """The static (trace-time) settings of an A2C trainer."""

    spec: EnvSpec
    apply_fn: Callable
    init_params: Callable[[jax.Array], Any]
    tx: optax.GradientTransformation
    loss: core.LossConfig
    workers: int
    rollout_length: int
    seeds: int
    solve_threshold: float | None


def seed_keys(seed: int, seeds: int) -> jax.Array:
    """One key per independent agent; agent i's key depends only on (seed, i)."""
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(seeds))


def combine_shards(mean_tree: Any, gather_tree: Any) -> tuple[Any, Any]:
    """What the device shards exchange each update, as ONE all-reduce of one float32 vector:
    (`mean_tree` averaged over the shards, `gather_tree` with every leaf stacked over the shards
    along a new leading axis, in device order, on every device).

    One vector because XLA's CPU runtime runs an all-reduce of a tuple as one rendezvous of the
    devices per element (docs/performance.md). Gathering is a sum of each shard placed at its own position (exact: every position has
    one non-zero term), so that the result is the same on every device. Integers and booleans
    travel as float32, exact below 2**24.
    """
    n = jax.lax.axis_size(AXIS)
    shard = jax.lax.axis_index(AXIS)
    mean_leaves, mean_def = jax.tree.flatten(mean_tree)
    gather_leaves, gather_def = jax.tree.flatten(gather_tree)
    parts = [x.astype(jnp.float32).reshape(-1) / n for x in mean_leaves]
    for x in gather_leaves:
        placed = jnp.zeros((n, x.size), jnp.float32).at[shard].set(
            x.astype(jnp.float32).reshape(-1))
        parts.append(placed.reshape(-1))
    total = jax.lax.psum(jnp.concatenate(parts), AXIS)
    sizes = [x.size for x in mean_leaves] + [n * x.size for x in gather_leaves]
    pieces = jnp.split(total, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [total]
    means = [p.reshape(x.shape).astype(x.dtype) for p, x in zip(pieces, mean_leaves)]
    gathered = [p.reshape((n,) + x.shape).astype(x.dtype)
                for p, x in zip(pieces[len(mean_leaves):], gather_leaves)]
    return jax.tree.unflatten(mean_def, means), jax.tree.unflatten(gather_def, gathered)


def shards_along_batch(x: jax.Array) -> jax.Array:
    """`[shards, T, B_local]` gathered from `combine_shards` as `[T, shards * B_local]`: the
    whole batch in global order (device 0's environments first)."""
    return jnp.moveaxis(x, 0, 1).reshape(x.shape[1], -1)


class A2CLearner:
    """Builds, shards and runs the jitted A2C update loop: pure functions of a TrainState."""

    def __init__(self, settings: A2CSettings, devices: list[Any]):
        self.s = settings
        self.devices = devices
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self.steps_per_update = settings.workers * settings.rollout_length
        self._run = jax.jit(self._sharded_run(), donate_argnums=0)

    # ----- state -----------------------------------------------------------------------------
    def init_state(self, seed: int) -> TrainState:
        """Fresh agents for seeds (seed, 0..seeds-1), placed on the mesh."""
        s = self.s

        def init_one(key):
            k_params, k_envs = jax.random.split(key)
            params = s.init_params(k_params)
            return TrainState(
                params=params,
                opt_state=s.tx.init(params),
                obs_stats=init_obs_stats(s.spec.obs_shape),
                envs=reset_envs(s.spec, jax.random.split(k_envs, s.workers)),
                recent=RecentEpisodes.empty(),
                update=jnp.int32(0),
                solved_update=jnp.int32(-1),
            )

        # One unbatched init per seed, then stack: vmapping the orthogonal initialiser makes a
        # batched QR, whose CPU LAPACK kernel can deadlock its own thread pool on small machines.
        init = jax.jit(init_one)
        agents = [init(key) for key in seed_keys(seed, s.seeds)]
        return self.place(jax.tree.map(lambda *xs: jnp.stack(xs), *agents))

    def place(self, state: TrainState) -> TrainState:
        """Put a (host or device) state onto the mesh: environments split, the rest replicated.
        In a multi-process run every process passes the same whole state and keeps its shards."""
        return distributed.place(state, self._shardings(state))

    def _specs(self, state: TrainState) -> TrainState:
        """PartitionSpecs: environments split over devices along their batch axis, rest replicated."""
        replicated = jax.tree.map(lambda _: P(), state)
        return replicated.replace(envs=jax.tree.map(lambda _: P(None, AXIS), state.envs))

    def _shardings(self, state: TrainState) -> TrainState:
        return jax.tree.map(lambda spec: NamedSharding(self.mesh, spec), self._specs(state),
                            is_leaf=lambda x: isinstance(x, P))

    # ----- one update (per seed, per device shard) -------------------------------------------
    def _update(self, state: TrainState) -> tuple[TrainState, IntervalMetrics]:
        s = self.s
        envs, traj = core.rollout(s.apply_fn, state.params, state.obs_stats, state.envs, s.spec,
                                  s.rollout_length, s.loss.normalize_obs)
        # Each device differentiates its own shard's loss (the map runs without varying-axis
        # types, see `_sharded_run`); averaging those equal-sized shards gives the batch mean.
        grads, info = core.gradients(state.params, s.apply_fn, state.obs_stats, traj, s.loss)
        obs_flat = traj.obs_tm1.reshape((-1,) + s.spec.obs_shape)
        moments = batch_moments(obs_flat) if s.loss.normalize_obs else ()
        # Episode bookkeeping sees the whole batch, in global order, on every device.
        episodes = (traj.done_t, traj.episode_return, traj.episode_length)
        (grads, info), (episodes, moments) = combine_shards((grads, info), (episodes, moments))
        done, ep_return, ep_length = map(shards_along_batch, episodes)
        updates, opt_state = s.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        obs_stats = state.obs_stats
        if s.loss.normalize_obs:
            n_shards = jax.lax.axis_size(AXIS)
            obs_stats = merge_moments(obs_stats, *pool_moments(*moments),
                                      n_shards * obs_flat.shape[0])

        recent = add_episodes(state.recent, ep_return, done)
        update = state.update + 1
        threshold = jnp.inf if s.solve_threshold is None else s.solve_threshold
        newly_solved = (state.solved_update < 0) & (recent.full_mean() >= threshold)
        state = TrainState(params, opt_state, obs_stats, envs, recent, update,
                           jnp.where(newly_solved, update, state.solved_update))
        grad_norm = optax.tree.norm(grads)
        flags = nonfinite_flags(policy_loss=info.policy_loss, value_loss=info.value_loss,
                                entropy=info.entropy, grad_norm=grad_norm, params=params)
        metrics = IntervalMetrics(jnp.int32(1), info.policy_loss, info.value_loss, info.entropy,
                                  grad_norm, EpisodeStats.of(ep_return, ep_length, done),
                                  jnp.where(flags != 0, update, -1), flags)
        return state, metrics

    def _sharded_run(self) -> Callable:
        def run(state: TrainState, num_updates: jax.Array):
            def keep_going(carry):
                i, _, acc = carry
                # The divergence guard: stop at the first update of any seed that went non-finite.
                return (i < num_updates) & jnp.all(acc.nonfinite_update < 0)

            def body(carry):
                i, st, acc = carry
                st, m = jax.vmap(self._update)(st)
                return i + 1, st, acc.add(m)

            acc0 = jax.vmap(lambda _: IntervalMetrics.empty())(jnp.arange(self.s.seeds))
            _, state, acc = jax.lax.while_loop(keep_going, body, (jnp.int32(0), state, acc0))
            return state, acc

        def sharded(state: TrainState, num_updates: jax.Array):
            specs = self._specs(state)
            metrics_specs = jax.tree.map(lambda _: P(), jax.eval_shape(
                lambda: jax.vmap(lambda _: IntervalMetrics.empty())(jnp.arange(self.s.seeds))))
            # check_vma=False: shard_map's varying-axis types are for code written against
            # them. gymnax's environments are not (Asterix's spawn loop starts a while_loop from
            # a constant carry and its body reads the device's own environment state, which the
            # check refuses). Everything this map exchanges goes through explicit collectives
            # (`combine_shards`), so the types would add nothing here.
            return jax.shard_map(run, mesh=self.mesh, in_specs=(specs, P()),
                                 out_specs=(specs, metrics_specs),
                                 check_vma=False)(state, num_updates)

        return sharded

    # ----- public ----------------------------------------------------------------------------
    def compile(self, state: TrainState) -> float:
        """Compile the update loop ahead of time; returns the seconds it took."""
        start = time.perf_counter()
        self._compiled = self._run.lower(state, jnp.int32(1)).compile()
        return time.perf_counter() - start

    def run_updates(self, state: TrainState, num_updates: int
                    ) -> tuple[TrainState, list[MetricRow]]:
        """Apply `num_updates` updates to every seed; returns the new state and per-seed metrics."""
        run = getattr(self, "_compiled", None) or self._run
        state, acc = run(state, jnp.int32(num_updates))
        # Fetch only the small pieces the metrics need, not the environment states.
        progress = jax.device_get((acc, state.recent, state.update, state.solved_update,
                                   current_lr(state.opt_state)))
        return state, interval_rows(*progress, steps_per_update=self.steps_per_update)


def interval_rows(acc: IntervalMetrics, recent: RecentEpisodes, update: np.ndarray,
                  solved_update: np.ndarray, lr: np.ndarray, steps_per_update: int
                  ) -> list[MetricRow]:
    """Turn the summed interval metrics of every seed into one MetricRow per seed."""
    rows = []
    for i in range(len(update)):
        n = max(int(acc.updates[i]), 1)
        eps = int(acc.episodes.count[i])
        in_window = int(recent.count[i])
        solved = int(solved_update[i])
        rows.append(MetricRow(
            seed_index=i,
            env_steps=int(update[i]) * steps_per_update,
            updates=int(update[i]),
            episodes=eps,
            episode_return_mean=float(acc.episodes.return_sum[i]) / eps if eps else None,
            episode_return_min=float(acc.episodes.return_min[i]) if eps else None,
            episode_return_max=float(acc.episodes.return_max[i]) if eps else None,
            episode_length_mean=float(acc.episodes.length_sum[i]) / eps if eps else None,
            return_last100=float(recent.returns[i][:in_window].mean()) if in_window else None,
            episodes_in_last100=in_window,
            policy_loss=float(acc.policy_loss[i]) / n,
            value_loss=float(acc.value_loss[i]) / n,
            entropy=float(acc.entropy[i]) / n,
            grad_norm=float(acc.grad_norm[i]) / n,
            learning_rate=float(lr[i]),
            solved_env_steps=solved * steps_per_update if solved >= 0 else None,
            nonfinite_update=int(acc.nonfinite_update[i]) if acc.nonfinite_update[i] >= 0
            else None,
            nonfinite_flags=int(acc.nonfinite_flags[i])))
    return rows


def total_updates(total_steps: int, steps_per_update: int) -> int:
    """Updates that fit in `total_steps` (never more environment steps than asked for)."""
    return max(1, total_steps // steps_per_update)


def build_learner(cfg, spec: EnvSpec, network, devices: list[Any]) -> A2CLearner:
    """An A2CLearner for a validated run config."""
    settings = A2CSettings(
        spec=spec,
        apply_fn=network.apply,
        init_params=lambda key: network.init(key, jnp.zeros((1,) + spec.obs_shape)),
        tx=make_optimizer(OptimConfig.from_config(cfg),
                          total_updates(cfg.total_steps, steps_per_update(cfg))),
        loss=core.LossConfig.from_config(cfg),
        workers=int(cfg.workers),
        rollout_length=int(cfg.rollout_length),
        seeds=int(cfg.seeds),
        solve_threshold=solve_threshold(cfg.env.name, cfg.env.solve_threshold),
    )
    return A2CLearner(settings, devices)


class A2CTrainer:
    """A2C for the shared training driver (`jaxac.loop.Trainer`): the learner's jitted
    intervals, one per log point, on a state that stays on the devices between them."""

    trains_in_background = False  # see jaxac.loop.Trainer

    def __init__(self, learner: A2CLearner, seed: int, total_steps: int):
        self.learner, self.seeds = learner, learner.s.seeds
        self.total_updates = total_updates(total_steps, learner.steps_per_update)
        self.state = learner.init_state(seed)
        self.updates_done = 0
        self._rows: list[MetricRow] = []  # the last interval's, until the driver logs them
        self._last_rows: list[MetricRow] = []


    def restore(self, checkpoint: CheckpointInfo) -> None:
        self.state = self.learner.place(load_checkpoint(checkpoint,
                                                        distributed.to_host(self.state)))
        self.updates_done = int(checkpoint.meta["updates_done"])

    def compile(self) -> float:
        return self.learner.compile(self.state)

    def start(self) -> None:
        pass  # nothing runs between the driver's calls

    def advance(self, env_steps: int, stop: StopRequest) -> None:
        """Run the updates up to `env_steps` in one jitted call (a stop request is seen after
        it returns: the call's donated state cannot be abandoned halfway)."""
        per_update = self.learner.steps_per_update
        wanted = math.ceil(max(env_steps - self.env_steps, 1) / per_update)
        n = min(wanted, self.total_updates - self.updates_done)
        self.state, self._rows = self.learner.run_updates(self.state, n)
        self._last_rows = self._rows
        self.updates_done = self._rows[0].updates

    @property
    def env_steps(self) -> int:
        return self.updates_done * self.learner.steps_per_update

    @property
    def finished(self) -> bool:
        return self.updates_done >= self.total_updates

    def log_rows(self) -> list[MetricRow]:
        rows, self._rows = self._rows, []
        return rows

    def paused(self):
        return contextlib.nullcontext(True)  # between calls the state is always consistent

    def checkpoint(self) -> tuple[Any, dict]:
        # The whole state, on every process (a multi-process run gathers the environments).
        return distributed.to_host(self.state), {"updates_done": self.updates_done}

    def divergence(self) -> Divergence | None:
        """The first seed's divergence in the last interval, if any seed went non-finite."""
        for row in self._last_rows:
            if row.nonfinite_update is not None:
                return Divergence(row.nonfinite_update,
                                  row.nonfinite_update * self.learner.steps_per_update,
                                  first_nonfinite(row.nonfinite_flags), row.seed_index)
        return None

    def stop(self) -> None:
        pass

    def failure(self) -> None:
        return None

    def policy(self) -> tuple[Any, Any]:
        return self.state.params, self.state.obs_stats

    def summary(self) -> dict:
        return {}


def make_trainer(cfg, spec: EnvSpec, network, devices: list[Any]) -> A2CTrainer:
    """The A2C trainer of a validated run config, for `jaxac.loop.train`."""
    return A2CTrainer(build_learner(cfg, spec, network, devices), int(cfg.seed),
                      int(cfg.total_steps))
