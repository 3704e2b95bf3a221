"""What runs inside the Ray backend's actors: the parameter server and a worker, as plain classes
(`ray_trainer` wraps them with `ray.remote`; the tests can subclass them).

Each actor is its own process and builds its own jitted calls from the run's resolved config, with
the same `core` functions and flat layouts as the thread backend. The protocol:

    worker: join(i)                     -> (go on?, version, [snapshot ref])
            loop: snapshot = ray.get(ref)
                  roll out and compute the gradient on it (one jitted call)
                  push(i, version, gradient result, environments)
                                        -> (go on?, version, [snapshot ref])

The server actor runs one call at a time, so pushes are applied one at a time in arrival order
(the thread backend's `LockedServer`, with batches of one). Every reply carries the reference of
the newest snapshot: the server `ray.put`s each version once, the first time a worker asks for it,
and every worker that pulls that version reads the same object. The server also keeps each
worker's environments as of its last applied push, so its state alone is a consistent checkpoint.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxac.a3c.servers import LockedServer, NonFiniteUpdate
from jaxac.a3c.trainer import make_learner, total_rollouts, worker_keys
from jaxac.a3c.workers import SharedCounters


def learner_of(config: dict):
    """(config, learner with its layouts fixed, parameter-init key, worker keys) of a run's
    resolved config, built the same way in every actor."""
    from omegaconf import OmegaConf

    from jaxac.checkpoint import network_from_config
    from jaxac.envs import make_env
    from jaxac.platform import use_compilation_cache

    cfg = OmegaConf.create(config)
    use_compilation_cache(cfg.compilation_cache_dir)
    spec = make_env(cfg.env.name)
    learner = make_learner(cfg, spec, network_from_config(cfg, spec))
    params_key, keys = worker_keys(int(cfg.seed), int(cfg.workers))
    initial_state = learner.init_state(params_key)
    return cfg, learner, initial_state, keys


class ServerProcess:
    """The parameter server: the shared state vector (params | obs_stats | opt_state), the version,
    the rollout budget, the episode window and each worker's environments.

    An asyncio actor: every method runs on its one event-loop thread, so none interleaves with
    another except where `push` waits for its update. Pushes that arrive while a batch is being
    applied wait in arrival order and are applied together in one optimizer call (the thread
    backend's locked mode), and the batch's result is put into the object store once."""

    def __init__(self, config: dict, keep_history: bool = False):
        from jaxac.envs import solve_threshold

        cfg, self.learner, state, _ = learner_of(config)
        workers = int(cfg.workers)
        self.server = LockedServer(self.learner, state, bool(cfg.algo.staleness_lr),
                                   keep_history=keep_history, device=jax.devices()[0],
                                   workers=workers)
        self.counters = SharedCounters(total_rollouts(cfg), self.learner.steps_per_rollout,
                                       workers)
        self.threshold = solve_threshold(cfg.env.name, cfg.env.solve_threshold)
        self.stop_when_solved = bool(cfg.get("stop_when_solved", False))
        self.envs: list[np.ndarray | None] = [None] * workers
        self.holding = [False] * workers  # whether worker i has claimed a rollout not yet pushed
        # A worker's generation grows at each (re)start: a push of an earlier one (sent just
        # before its process died) is applied, but claims no rollout for the dead process.
        self.generation = [0] * workers
        # (worker, generation, snapshot version, result, environments, future of the reply)
        self._waiting: collections.deque = collections.deque()
        self._applying = False
        self.lost_rollouts = 0
        self.stopping = False
        self.diverged: NonFiniteUpdate | None = None
        self._snapshot = (-1, None)  # (version, object ref) of the newest put
        self.cost = {"updates": 0, "batches": 0, "server_seconds": 0.0, "bytes_in": 0,
                     "bytes_out": 0, "puts": 0}

    # ----- set-up, from the driver -----------------------------------------------------------
    async def compile(self) -> float:
        start = time.perf_counter()
        self.server.compile(jnp.zeros(self.learner.result.size, jnp.float32))
        return time.perf_counter() - start

    async def restore(self, state: np.ndarray, version: int, worker_steps: list[int],
                      recent: list[float], solved_env_steps: int | None) -> None:
        self.server.restore(state, version)
        self.counters.restore(worker_steps, recent, solved_env_steps)

    async def begin(self, envs: list[np.ndarray]) -> None:
        """Each worker's starting environments (what a checkpoint holds until it pushes)."""
        self.envs = list(envs)

    # ----- the workers' calls ----------------------------------------------------------------
    async def join(self, worker: int) -> tuple[bool, int, list]:
        """A worker (re)starts: a rollout it claimed before it died is given back, counted lost."""
        self.generation[worker] += 1
        await self.retire(worker)
        return self._reply(worker, self.generation[worker])

    async def push(self, worker: int, snapshot_version: int, result: np.ndarray,
                   envs: np.ndarray) -> tuple[bool, int, list]:
        """Apply a worker's gradient result (one flat float32 vector) to the shared state, in
        arrival order; keep its environments; reply with the next rollout's snapshot once the
        update is applied."""
        import asyncio

        self.holding[worker] = False  # its rollout is done; the reply may claim the next
        reply = asyncio.get_running_loop().create_future()
        self._waiting.append((worker, self.generation[worker], snapshot_version, result, envs,
                              reply))
        self.cost["bytes_in"] += result.nbytes + envs.nbytes
        if not self._applying:
            self._applying = True
            asyncio.get_running_loop().create_task(self._apply_waiting())
        return await reply

    async def _apply_waiting(self) -> None:
        """Apply what waits, a batch at a time, letting pushes that arrive meanwhile join."""
        import asyncio

        try:
            await asyncio.sleep(0)
            while self._waiting:
                batch = [self._waiting.popleft()
                         for _ in range(min(len(self._waiting), self.server.batch_sizes[-1]))]
                start = time.perf_counter()
                self._apply(batch)
                self.cost["server_seconds"] += time.perf_counter() - start
                await asyncio.sleep(0)
        finally:
            self._applying = False

    def _apply(self, batch: list) -> None:
        """Count each push's steps and keep its environments, apply `batch` in one optimizer
        call, answer every push of the batch. After a divergence nothing is applied."""
        shared, server = self.counters, self.server
        base = server.version
        if self.diverged is None:
            for worker, _, _, _, envs, _ in batch:  # counted first, as the threads count them
                shared.worker_steps[worker] += shared.steps_per_rollout
                self.envs[worker] = envs
            try:
                for report in server.apply_batch([(w, v, jnp.asarray(result))
                                                   for w, _, v, result, _, _ in batch]):
                    if report.episodes and shared.record_episodes(report.episodes,
                                                                  self.threshold):
                        self.stopping |= self.stop_when_solved
            except NonFiniteUpdate as diverged:  # the updates before it were applied
                self.diverged, self.stopping = diverged, True
        self.cost["updates"] += server.version - base
        self.cost["batches"] += 1
        for worker, generation, *_, reply in batch:
            if not reply.done():
                reply.set_result(self._reply(worker, generation))

    def _reply(self, worker: int, generation: int) -> tuple[bool, int, list]:
        go_on = (not self.stopping and generation == self.generation[worker]
                 and self.counters.reserve_rollout())
        self.holding[worker] = go_on
        return go_on, self.server.version, [self._snapshot_ref()]

    def _snapshot_ref(self):
        """The newest version's snapshot in the object store, put there once per version."""
        import ray

        version, ref = self._snapshot
        if version != self.server.version:
            part = np.asarray(self.server.snapshot().vector)[
                self.learner.state.through("obs_stats")]
            ref = ray.put(part)
            self._snapshot = (self.server.version, ref)
            self.cost["puts"] += 1
            self.cost["bytes_out"] += part.nbytes
        return ref

    async def retire(self, worker: int) -> None:
        """A worker that is gone for good: give back the rollout it claimed."""
        if self.holding[worker]:
            self.holding[worker] = False
            self.counters.return_rollout()
            self.lost_rollouts += 1

    # ----- the driver's view -----------------------------------------------------------------
    async def stop(self) -> None:
        """Every worker's next push is its last."""
        self.stopping = True

    async def progress(self) -> dict:
        return self._progress()

    def _progress(self) -> dict:
        shared = self.counters
        return {"env_steps": shared.env_steps, "budget_used": shared.budget_used,
                "solved_env_steps": shared.solved_env_steps, "stopping": self.stopping,
                "generation": list(self.generation),
                "diverged": None if self.diverged is None else (self.diverged.update,
                                                                 self.diverged.flags)}

    async def report(self, with_state: bool) -> dict:
        """What happened since the last report (records, episodes), the counters, the cost, and
        with `with_state` the state and every worker's environments, all of one instant."""
        shared = self.counters
        out = {**self._progress(), "records": self.server.drain_records(),
               "episodes": shared.drain_episodes(),
               "version": self.server.version, "worker_steps": list(shared.worker_steps),
               "recent": list(shared.recent), "lost_rollouts": self.lost_rollouts,
               "cost": dict(self.cost),
               "learning_rate": float(self._learning_rate())}
        if with_state:
            out["state"] = np.array(self.server.state)
            out["envs"] = [np.asarray(e) for e in self.envs]
        return out

    async def state_now(self) -> np.ndarray:
        """The state vector as it is now (an evaluation during training reads its policy)."""
        return np.array(self.server.state)

    def _learning_rate(self) -> float:
        from jaxac.optim import current_lr

        return current_lr(self.server.opt_state)

    async def history(self) -> list[tuple[Any, np.ndarray, float]]:
        """(record, result vector, scale) of every applied update, in order (keep_history)."""
        return [(record, np.asarray(result), scale)
                for record, result, scale in self.server.history or []]


class WorkerProcess:
    """One A3C worker: its environments, its RNG stream from (seed, index), its entropy
    coefficient, and the jitted rollout-and-gradient on the snapshots it pulls."""

    def __init__(self, config: dict, index: int, entropy_coef: float, server_name: str):
        import ray

        _, self.learner, state, keys = learner_of(config)
        # by name, not by handle: a restarted worker finds the server the same way
        self.index, self.server = index, ray.get_actor(server_name)
        self.key = keys[index]
        self.entropy_coef = jnp.float32(entropy_coef)
        self._template = state[self.learner.state.through("obs_stats")]

    def compile(self) -> float:
        start = time.perf_counter()
        jax.block_until_ready(self.learner.rollout_and_gradient(
            jnp.asarray(self._template), self.learner.fresh_env_vector(self.key),
            self.entropy_coef))
        return time.perf_counter() - start

    def run(self, attempt: int, envs: np.ndarray | None = None) -> int:
        """Roll out and push until the server says stop; returns the rollouts pushed. Attempt
        0 starts from `envs` (fresh ones from the worker's key if None); a restarted worker
        (attempt > 0) from fresh environments of a key of its own, and the newest snapshot."""
        import ray

        learner = self.learner
        if envs is None:
            key = self.key if attempt == 0 else jax.random.fold_in(self.key, attempt)
            envs = learner.fresh_env_vector(key)
        envs = jnp.asarray(envs)
        go_on, version, (ref,) = ray.get(self.server.join.remote(self.index))
        pushed = 0
        while go_on:
            snapshot = jnp.asarray(ray.get(ref))
            envs, result = learner.rollout_and_gradient(snapshot, envs, self.entropy_coef)
            go_on, version, (ref,) = ray.get(self.server.push.remote(
                self.index, version, np.asarray(result), np.asarray(envs)))
            pushed += 1
        return pushed
