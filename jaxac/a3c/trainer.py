"""The A3C algorithm: what a worker does, and the trainer the shared driver runs
(`jaxac.loop.Trainer`)."""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxac import core
from jaxac.a3c.learner import A3CLearner
from jaxac.a3c.servers import SERVERS, NonFiniteUpdate, ParameterServer
from jaxac.a3c.workers import SharedCounters, ThreadLifetime
from jaxac.checkpoint import CheckpointInfo, load_checkpoint
from jaxac.envs import EnvSpec, solve_threshold
from jaxac.metrics import mean_or_none
from jaxac.optim import OptimConfig, current_lr, make_optimizer
from jaxac.results import Divergence, MetricRow, first_nonfinite
from jaxac.signals import StopRequest

# Upper edges of the staleness histogram bins: 0, 1, 2, 3-4, 5-8, 9-16, 17-32, 33+.
STALENESS_BIN_EDGES = (0, 1, 2, 4, 8, 16, 32)
POLL_SECONDS = 0.02  # how often the trainer looks at the workers' progress


def entropy_coefficients(spec: Any, workers: int, seed: int) -> list[float]:
    """One entropy coefficient per worker: a number for all, or a log-uniform draw per worker.

    `spec` is a number, or a mapping `{log_uniform: [low, high]}`; worker i draws from a generator
    seeded by (seed, i), so its coefficient does not depend on how many workers there are.
    """
    if isinstance(spec, (int, float)):
        return [float(spec)] * workers
    low, high = (float(x) for x in spec["log_uniform"])
    return [float(math.exp(np.random.default_rng([seed, i]).uniform(math.log(low), math.log(high))))
            for i in range(workers)]


def worker_keys(seed: int, workers: int) -> tuple[jax.Array, jax.Array]:
    """(parameter-init key, [workers] keys): worker i's key depends only on (seed, i)."""
    params_key, workers_key = jax.random.split(jax.random.PRNGKey(seed))
    return params_key, jax.vmap(lambda i: jax.random.fold_in(workers_key, i))(jnp.arange(workers))


def staleness_histogram(stalenesses: list[int]) -> dict[str, int]:
    """Counts per bin: "0", "1", "2", "3-4", "5-8", "9-16", "17-32", "33+"."""
    labels, counts = [], []
    lower = 0
    for edge in STALENESS_BIN_EDGES:
        labels.append(str(edge) if edge == lower else f"{lower}-{edge}")
        counts.append(sum(1 for s in stalenesses if lower <= s <= edge))
        lower = edge + 1
    labels.append(f"{lower}+")
    counts.append(sum(1 for s in stalenesses if s >= lower))
    return dict(zip(labels, counts))


class A3CTrainer:
    """`workers` threads, each looping: snapshot -> rollout and gradient -> submit to the server.
    For the driver it reports what the workers did since the last log point."""

    trains_in_background = True  # see jaxac.loop.Trainer

    seeds = 1  # A3C trains one agent per run (several seeds are a sweep)

    def __init__(self, learner: A3CLearner, server: ParameterServer, counters: SharedCounters,
                 worker_keys_: jax.Array, entropy_coefs: list[float], devices: list[Any],
                 solve_threshold: float | None, stop_when_solved: bool = False):
        self.learner, self.server, self.counters = learner, server, counters
        self.keys, self.entropy_coefs, self.devices = worker_keys_, entropy_coefs, devices
        self.threshold, self.stop_when_solved = solve_threshold, stop_when_solved
        workers = len(entropy_coefs)
        self.lifetime = ThreadLifetime(workers, self._worker_loop)
        self.threads = self.lifetime.threads
        # Each worker's environment state after its last update (what a checkpoint stores), and
        # the states to start from (None: fresh ones from the worker's key).
        self.worker_envs: list[Any] = [None] * workers
        self.initial_envs: list[Any] | None = None
        self.totals = {"updates": 0, "staleness": 0, "interleaved": 0}
        self._last = {"time": time.perf_counter(), "steps": 0}

    def device_of(self, worker: int):
        """Workers are placed round-robin on the devices."""
        return self.devices[worker % len(self.devices)]

    # ----- the workers -------------------------------------------------------------------------
    def initial_env_vector(self, worker: int) -> jax.Array:
        """The worker's packed starting environments (restored or fresh from its key), committed
        to its device: the jitted calls run where their inputs live."""
        vector = (self.learner.pack_envs(self.initial_envs[worker])
                  if self.initial_envs is not None
                  else self.learner.fresh_env_vector(self.keys[worker]))
        return jax.device_put(vector, self.device_of(worker))

    def _worker_loop(self, i: int) -> None:
        try:
            self._work(i)
        except NonFiniteUpdate as diverged:
            self.lifetime.end(diverged)

    def _work(self, i: int) -> None:
        learner, server, shared = self.learner, self.server, self.counters
        env_vector = self.worker_envs[i] = self.initial_env_vector(i)
        entropy_coef = jnp.float32(self.entropy_coefs[i])
        device = self.device_of(i)
        # A locked-mode server's state lives on one device: a worker elsewhere moves the
        # snapshot to its device and its result to the server's.
        remote = server.device is not None and device != server.device
        while self.lifetime.go_on() and shared.reserve_rollout():
            snap = server.snapshot()
            vector = jax.device_put(snap.vector, device) if remote else snap.vector
            env_vector, result = learner.rollout_and_gradient(vector, env_vector, entropy_coef)
            self.worker_envs[i] = env_vector
            shared.worker_steps[i] += shared.steps_per_rollout
            # The reports of whatever this call applied: its own, others', or none (left to the
            # worker holding the lock).
            for report in server.submit(i, snap.version, jax.device_put(result, server.device)
                                        if remote else result):
                if report.episodes:  # most rollouts end none
                    self._record_episodes(report.episodes)

    def _record_episodes(self, episodes: list[tuple[float, int]]) -> None:
        if self.counters.record_episodes(episodes, self.threshold) and self.stop_when_solved:
            self.lifetime.stop()

    def all_worker_envs(self) -> Any:
        """Every worker's environment state, stacked on a leading worker axis (on the host)."""
        return self.learner.stack_envs(self.worker_envs)

    def run_to_completion(self) -> None:
        """Start the workers, wait until the step budget is used up; re-raise a worker failure
        (for tests and the bench: no driver, no metrics)."""
        self.lifetime.start()
        self.lifetime.join()
        if self.lifetime.failures:
            raise self.lifetime.failures[0]

    # ----- the driver's interface (jaxac.loop.Trainer) ----------------------------------------

    def restore(self, checkpoint: CheckpointInfo) -> None:
        target = {"state": self.server.state.copy(),
                  "envs": jax.device_get(jax.vmap(self.learner.init_envs)(self.keys))}
        restored = load_checkpoint(checkpoint, target)
        meta = checkpoint.meta
        self.server.restore(restored["state"], int(meta["version"]))
        solved = meta["solved_env_steps"]
        solved = solved[0] if isinstance(solved, list) else solved  # one seed; older: a number
        self.counters.restore(meta["worker_env_steps"], meta["recent_returns"], solved)
        self.initial_envs = [jax.tree.map(lambda x, i=i: x[i], restored["envs"])
                             for i in range(len(self.threads))]
        self.totals = dict(meta["totals"])

    def compile(self) -> float:
        """Compile the jitted calls the workers make (the rollout, and the optimizer call for
        each batch size), with the inputs the workers will pass, before any worker starts."""
        start = time.perf_counter()
        _, result = self.learner.rollout_and_gradient(
            self.server.snapshot().vector, self.initial_env_vector(0), jnp.float32(0.0))
        self.server.compile(result)
        return time.perf_counter() - start

    def start(self) -> None:
        self._last = {"time": time.perf_counter(), "steps": self.env_steps}
        self.lifetime.start()

    def advance(self, env_steps: int, stop: StopRequest) -> None:
        """Watch the workers until they reach `env_steps`, end, or `stop` is requested."""
        lifetime = self.lifetime
        while self.counters.env_steps < env_steps and lifetime.running:
            if lifetime.stop_event.wait(timeout=POLL_SECONDS) or stop.requested:
                return

    @property
    def env_steps(self) -> int:
        return self.counters.env_steps

    @property
    def finished(self) -> bool:
        lifetime = self.lifetime
        return (self.counters.budget_used or bool(lifetime.failures)
                or lifetime.ended_by is not None
                or (self.stop_when_solved and self.counters.solved_env_steps is not None))

    def log_rows(self) -> list[MetricRow]:
        shared, server = self.counters, self.server
        steps, records = shared.env_steps, server.drain_records()
        if steps == self._last["steps"] and not records:
            return []
        now = time.perf_counter()
        row = interval_row(steps, server.version, records, shared.drain_episodes(), shared,
                           self.totals,
                           float(current_lr(server.opt_state)), now - self._last["time"])
        self._last = {"time": now, "steps": steps}
        return [row]

    def paused(self):
        return self.lifetime.paused()

    def checkpoint(self) -> tuple[Any, dict]:
        """Call with the workers paused or joined."""
        shared = self.counters
        return ({"state": self.server.state, "envs": self.all_worker_envs()},
                {"version": self.server.version, "worker_env_steps": list(shared.worker_steps),
                 "recent_returns": list(shared.recent), "totals": dict(self.totals)})

    def divergence(self) -> Divergence | None:
        diverged = self.lifetime.ended_by
        if not isinstance(diverged, NonFiniteUpdate):
            return None
        return Divergence(diverged.update, self.counters.env_steps,
                          first_nonfinite(diverged.flags), 0)

    def stop(self) -> None:
        self.lifetime.stop()
        self.lifetime.join()

    def failure(self) -> BaseException | None:
        return self.lifetime.failures[0] if self.lifetime.failures else None

    def policy(self) -> tuple[Any, Any]:
        return (jax.tree.map(lambda x: x[None], self.learner.unravel(self.server.params)),
                jax.tree.map(lambda x: x[None], self.server.obs_stats))

    def summary(self) -> dict:
        return {**summary_fields(self.server.mode, self.server.version, self.totals,
                                 self.entropy_coefs, self.counters.worker_steps),
                "backend": "threads",
                "worker_devices": [str(self.device_of(i)) for i in range(len(self.threads))]}


def interval_row(steps: int, version: int, records: list, episodes: list[tuple[float, int]],
                 shared: SharedCounters, totals: dict, learning_rate: float,
                 interval_seconds: float, extra: dict | None = None) -> MetricRow:
    """The metric row of one log interval, in either backend: `records` (UpdateRecords) and
    `episodes` ((return, length)) are what the interval added; `totals` is updated in place."""
    returns = [r for r, _ in episodes]
    stale = [r.staleness for r in records]
    totals["updates"] += len(records)
    totals["staleness"] += sum(stale)
    totals["interleaved"] += sum(r.interleaved for r in records)
    return MetricRow(
        seed_index=0, env_steps=steps, updates=version, episodes=len(returns),
        episode_return_mean=mean_or_none(returns),
        episode_return_min=min(returns) if returns else None,
        episode_return_max=max(returns) if returns else None,
        episode_length_mean=mean_or_none([n for _, n in episodes]),
        return_last100=mean_or_none(list(shared.recent)),
        episodes_in_last100=len(shared.recent),
        policy_loss=mean_or_none([r.policy_loss for r in records]),
        value_loss=mean_or_none([r.value_loss for r in records]),
        entropy=mean_or_none([r.entropy for r in records]),
        grad_norm=mean_or_none([r.grad_norm for r in records]),
        learning_rate=learning_rate,
        solved_env_steps=shared.solved_env_steps,
        extra={"updates_per_second": len(records) / max(interval_seconds, 1e-9),
               "staleness_mean": mean_or_none(stale),
               "staleness_max": max(stale) if stale else None,
               "staleness_histogram": staleness_histogram(stale),
               "interleaved_updates": totals["interleaved"],
               "worker_env_steps": list(shared.worker_steps), **(extra or {})})


def summary_fields(mode: str, version: int, totals: dict, entropy_coefs: list[float],
                   worker_steps: list[int]) -> dict:
    """summary.json's A3C fields that both backends share."""
    return {"update_mode": mode, "updates_applied": totals["updates"], "version": version,
            "interleaved_updates": totals["interleaved"],
            "staleness_mean": totals["staleness"] / max(totals["updates"], 1),
            "entropy_coef_per_worker": entropy_coefs, "worker_env_steps": list(worker_steps)}


def make_learner(cfg, spec: EnvSpec, network) -> A3CLearner:
    """The jitted calls of a validated run config (the same in every process that builds it)."""
    envs_per_worker = int(cfg.algo.envs_per_worker)
    # one optimizer step per rollout
    tx = make_optimizer(OptimConfig.from_config(cfg), total_rollouts(cfg))
    return A3CLearner(spec, network, tx, core.LossConfig.from_config(cfg),
                      int(cfg.rollout_length), envs_per_worker)


def total_rollouts(cfg) -> int:
    """The run's rollout budget: the most whole rollouts within `total_steps`."""
    steps_per_rollout = int(cfg.rollout_length) * int(cfg.algo.envs_per_worker)
    return max(1, int(cfg.total_steps) // steps_per_rollout)


def entropy_coefficients_of(cfg) -> list[float]:
    """Every worker's entropy coefficient, from `algo.entropy_coef` (see entropy_coefficients)."""
    from omegaconf import OmegaConf

    entropy = cfg.algo.entropy_coef
    entropy = OmegaConf.to_container(entropy) if OmegaConf.is_config(entropy) else entropy
    return entropy_coefficients(entropy, int(cfg.workers), int(cfg.seed))


def make_thread_trainer(cfg, spec: EnvSpec, network, devices: list[Any],
                        keep_history: bool = False) -> A3CTrainer:
    """The thread backend's trainer (workers not yet started) of a validated run config.

    `keep_history` keeps every applied gradient in order (for tests: memory grows with the run).
    """
    algo, workers = cfg.algo, int(cfg.workers)
    learner = make_learner(cfg, spec, network)
    params_key, keys = worker_keys(int(cfg.seed), workers)
    # item access: `algo.update` would be DictConfig.update, the method
    server = SERVERS[str(algo["update"])](learner, learner.init_state(params_key),
                                          staleness_lr=bool(algo.staleness_lr),
                                          keep_history=keep_history, device=devices[0],
                                          workers=workers)
    shared = SharedCounters(total_rollouts(cfg), learner.steps_per_rollout, workers)
    return A3CTrainer(learner, server, shared, keys, entropy_coefficients_of(cfg), devices,
                      solve_threshold(cfg.env.name, cfg.env.solve_threshold),
                      bool(cfg.get("stop_when_solved", False)))
