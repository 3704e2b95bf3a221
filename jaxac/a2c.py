"""Synchronous A2C: `workers` vmapped environments act in lockstep, one averaged update per rollout.

The whole update loop between two log points is one jitted call: a `lax.fori_loop` over updates,
each a `lax.scan` rollout plus a gradient step, `vmap`ped over independent seeds and split across
devices with `jax.shard_map` (the environment batch is sharded; the gradients are averaged and
the episode statistics gathered in one all-reduce per update, `combine_shards`). The host only
touches the state once per logging interval.
"""

from __future__ import annotations

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

from jaxac import core
from jaxac.checkpoint import Checkpointer, load_checkpoint
from jaxac.envs import EnvCarry, EnvSpec, reset_envs
from jaxac.episodes import EpisodeStats, RecentEpisodes, add_episodes
from jaxac.normalization import (ObsStats, batch_moments, init_obs_stats, merge_moments,
                                 pool_moments)
from jaxac.metrics import mean_or_none, resident_memory_mb
from jaxac.optim import current_lr
from jaxac.results import Divergence, TrainResult, first_nonfinite
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
    nonfinite_flags: jax.Array  # at that update, bit i set: GUARDED_METRICS[i] was not finite

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


def nonfinite_flags(info: core.LossInfo, grad_norm: jax.Array, params: Any) -> jax.Array:
    """Bit mask of the guarded metrics (GUARDED_METRICS order) that are NaN or infinite."""
    params_finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))
    checks = [info.policy_loss, info.value_loss, info.entropy, grad_norm]
    bad = [~jnp.isfinite(x) for x in checks] + [~params_finite]
    return sum(b.astype(jnp.int32) << i for i, b in enumerate(bad))


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

    XLA's CPU runtime executes an all-reduce of a tuple as one rendezvous of the devices per
    element, each a thread hand-off: with the gradients, the loss metrics and the episode arrays
    as separate arrays that was 18 per update, and 2 CPU devices trained 512 workers slower than
    one. Gathering is a sum of each shard placed at its own position (exact: every position has
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


class A2CTrainer:
    """Builds, shards and runs the jitted A2C update loop."""

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
        """Put a (host or device) state onto the mesh: environments split, the rest replicated."""
        return jax.device_put(state, self._shardings(state))

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
        # Differentiating replicated params inside shard_map would sum the per-device gradients
        # implicitly; marking them per-device first gives each device its own shard's gradient,
        # and averaging those equal-sized shards gives the full-batch mean.
        local_params = jax.lax.pcast(state.params, AXIS, to="varying")
        grads, info = core.gradients(local_params, s.apply_fn, state.obs_stats, traj, s.loss)
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
        flags = nonfinite_flags(info, grad_norm, params)
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
            return jax.shard_map(run, mesh=self.mesh, in_specs=(specs, P()),
                                 out_specs=(specs, metrics_specs))(state, num_updates)

        return sharded

    # ----- public ----------------------------------------------------------------------------
    def compile(self, state: TrainState) -> float:
        """Compile the update loop ahead of time; returns the seconds it took."""
        start = time.perf_counter()
        self._compiled = self._run.lower(state, jnp.int32(1)).compile()
        return time.perf_counter() - start

    def run_updates(self, state: TrainState, num_updates: int) -> tuple[TrainState, dict]:
        """Apply `num_updates` updates to every seed; returns the new state and per-seed metrics."""
        run = getattr(self, "_compiled", None) or self._run
        state, acc = run(state, jnp.int32(num_updates))
        # Fetch only the small pieces the metrics need, not the environment states.
        progress = jax.device_get((acc, state.recent, state.update, state.solved_update,
                                   current_lr(state.opt_state)))
        return state, interval_rows(*progress, steps_per_update=self.steps_per_update)

    def divergence(self, rows: list[dict]) -> Divergence | None:
        """The divergence an interval's rows report (the first seed's, if several), or None."""
        for row in rows:
            if row["nonfinite_update"] is not None:
                return Divergence(row["nonfinite_update"],
                                  row["nonfinite_update"] * self.steps_per_update,
                                  first_nonfinite(row["nonfinite_flags"]), row["seed_index"])
        return None


def interval_rows(acc: IntervalMetrics, recent: RecentEpisodes, update: np.ndarray,
                  solved_update: np.ndarray, lr: np.ndarray, steps_per_update: int) -> list[dict]:
    """Turn the summed interval metrics of every seed into one plain dict per seed."""
    rows = []
    for i in range(len(update)):
        n = max(int(acc.updates[i]), 1)
        eps = int(acc.episodes.count[i])
        in_window = int(recent.count[i])
        recent_mean = float(recent.returns[i][:in_window].mean()) if in_window else None
        solved = int(solved_update[i])
        rows.append({
            "seed_index": i,
            "updates": int(update[i]),
            "env_steps": int(update[i]) * steps_per_update,
            "episodes": eps,
            "episode_return_mean": float(acc.episodes.return_sum[i]) / eps if eps else None,
            "episode_return_min": float(acc.episodes.return_min[i]) if eps else None,
            "episode_return_max": float(acc.episodes.return_max[i]) if eps else None,
            "episode_length_mean": float(acc.episodes.length_sum[i]) / eps if eps else None,
            "return_last100": recent_mean,
            "episodes_in_last100": in_window,
            "policy_loss": float(acc.policy_loss[i]) / n,
            "value_loss": float(acc.value_loss[i]) / n,
            "entropy": float(acc.entropy[i]) / n,
            "grad_norm": float(acc.grad_norm[i]) / n,
            "learning_rate": float(lr[i]),
            "solved_env_steps": solved * steps_per_update if solved >= 0 else None,
            "nonfinite_update": int(acc.nonfinite_update[i]) if acc.nonfinite_update[i] >= 0
            else None,
            "nonfinite_flags": int(acc.nonfinite_flags[i]),
        })
    return rows


def total_updates(total_steps: int, steps_per_update: int) -> int:
    """Updates that fit in `total_steps` (never more environment steps than asked for)."""
    return max(1, total_steps // steps_per_update)


def updates_per_log(log_interval: int, steps_per_update: int) -> int:
    return max(1, math.ceil(log_interval / steps_per_update))


def build_trainer(cfg, spec: EnvSpec, network, devices: list[Any]) -> A2CTrainer:
    """An A2CTrainer for a validated Hydra config."""
    from jaxac.config import loss_config, optim_config, steps_per_update
    from jaxac.envs import solve_threshold
    from jaxac.optim import make_optimizer

    n_updates = total_updates(cfg.total_steps, steps_per_update(cfg))
    settings = A2CSettings(
        spec=spec,
        apply_fn=network.apply,
        init_params=lambda key: network.init(key, jnp.zeros((1,) + spec.obs_shape)),
        tx=make_optimizer(optim_config(cfg), n_updates),
        loss=loss_config(cfg),
        workers=int(cfg.workers),
        rollout_length=int(cfg.rollout_length),
        seeds=int(cfg.seeds),
        solve_threshold=solve_threshold(cfg.env.name, cfg.env.solve_threshold),
    )
    return A2CTrainer(settings, devices)


def train(cfg, spec: EnvSpec, network, devices: list[Any], writer, progress,
          stop: StopRequest, checkpointer: Checkpointer) -> TrainResult:
    """Train `cfg.seeds` A2C agents for `cfg.total_steps` env steps each, logging as it goes.

    Starts from `checkpointer.resume_from` when it names a checkpoint. Writes a checkpoint every
    `checkpoint_every` env steps (at the first log point past it) and at the end. When `stop` is
    requested (SIGINT/SIGTERM) the current logging interval finishes, a checkpoint is written and
    the result so far is returned, marked interrupted. When an update goes non-finite training
    stops there; the last good checkpoint stays the newest.
    """
    trainer = build_trainer(cfg, spec, network, devices)
    state = trainer.init_state(int(cfg.seed))
    seeds = int(cfg.seeds)
    host = {"updates_done": 0, "wall_seconds": 0.0, "rates": [],
            "solved_env_steps": [None] * seeds, "solved_wall_seconds": [None] * seeds}
    if checkpointer.resume_from is not None:
        state = trainer.place(load_checkpoint(checkpointer.resume_from, jax.device_get(state)))
        host.update({k: checkpointer.resume_from.meta[k] for k in host})
    # Wall time continues from the checkpoint's, so a resumed run's times line up with before.
    start = time.perf_counter() - host["wall_seconds"]
    compile_seconds = trainer.compile(state)
    n_total = total_updates(cfg.total_steps, trainer.steps_per_update)
    per_log = updates_per_log(cfg.log_interval, trainer.steps_per_update)
    rates, solved_steps, solved_wall = host["rates"], host["solved_env_steps"], \
        host["solved_wall_seconds"]
    done = host["updates_done"]
    divergence = None
    last_time, last_steps = time.perf_counter(), done * trainer.steps_per_update

    def save_checkpoint() -> None:
        checkpointer.save(state, {
            "algo": "a2c", "env_steps": last_steps, "updates_done": done,
            "wall_seconds": time.perf_counter() - start, "metrics_lines": writer.lines,
            "rates": rates, "solved_env_steps": solved_steps, "solved_wall_seconds": solved_wall})

    while done < n_total and not stop.requested:
        n = min(per_log, n_total - done)
        state, rows = trainer.run_updates(state, n)
        now = time.perf_counter()
        env_steps = rows[0]["env_steps"]
        done = rows[0]["updates"]
        rate = (env_steps - last_steps) * seeds / (now - last_time)
        rates.append(rate)
        for row in rows:
            i = row["seed_index"]
            if row["solved_env_steps"] is not None and solved_steps[i] is None:
                # Interpolate the solve time within this interval, linearly in env steps.
                frac = (row["solved_env_steps"] - last_steps) / max(env_steps - last_steps, 1)
                solved_steps[i] = row["solved_env_steps"]
                solved_wall[i] = (last_time - start) + frac * (now - last_time)
            writer.write({**row, "seed": int(cfg.seed), "wall_time": now - start,
                          "steps_per_second": rate, "rss_mb": resident_memory_mb()})
        progress.update(env_steps, rate, mean_or_none(r["episode_return_mean"] for r in rows),
                        mean_or_none(r["return_last100"] for r in rows), force=done == n_total)
        last_time, last_steps = now, env_steps
        divergence = trainer.divergence(rows)
        if divergence is not None:
            divergence.last_checkpoint_env_steps = checkpointer.last_env_steps
            break
        if checkpointer.due(env_steps):
            save_checkpoint()
        if cfg.stop_when_solved and all(steps is not None for steps in solved_steps):
            break
    if divergence is None:
        save_checkpoint()  # the final (or interrupted) state, to resume or extend from
    return TrainResult(state.params, state.obs_stats, last_steps, compile_seconds,
                       time.perf_counter() - start, rates, solved_steps, solved_wall,
                       interrupted=stop.requested and done < n_total and divergence is None,
                       diverged=divergence)
