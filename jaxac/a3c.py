"""Asynchronous A3C: `workers` Python threads update one shared parameter tree, never waiting
for each other. All of jaxac's concurrency lives in this file.

Each worker owns `envs_per_worker` environments (vmapped), an RNG stream derived from
(seed, worker index) and its own exploration (entropy coefficient). Its loop:

    pull the latest global parameters (a snapshot, tagged with the global version)
    -> roll out `rollout_length` steps and compute the gradient on the snapshot   (one jitted call,
       the same `core.rollout` and `core.gradients` as A2C)
    -> apply it to the global parameters with the shared optax optimizer         (one jitted call)

The global parameters (raveled into one vector), the optimizer state and the observation
statistics are one state vector shared by all workers. An update computes the optax step from what
it reads of it (one jitted call, which releases the GIL). Under hogwild the vector is a numpy
array and the update writes back in place: it adds the parameter delta and writes the new
statistics. In locked mode the call returns the whole next state as a new, immutable XLA buffer,
which replaces the old one.

Update modes (`algo.update`):

- `locked`: a worker hands its gradient to the server and goes on with its next rollout. Whichever
  worker finds the server's lock free applies every gradient waiting at that moment, in the order
  they arrived, one optimizer step after another inside one jitted call, and publishes the result
  with its version as the snapshot, which workers pull without the lock (and without a copy). A
  worker waits for the lock only when a full batch is already waiting, which bounds the queue and
  the staleness. No update is ever lost or overlapped: the version equals the number of gradients
  applied, and the parameters equal the sequential application of the updates in arrival order.
  (Each worker applying its own gradient under a blocking lock cost 16 workers a third of their
  throughput: every waiting thread and every extra call is a hand-off of the GIL.)
- `hogwild`: no lock anywhere, as in the A3C paper. Parameter deltas are added in place, so every
  update lands (none is lost), but two updates whose read-compute-write windows overlap interleave:
  each was computed from optimizer statistics the other was about to change, the later write of
  the statistics replaces the earlier one, and a worker may pull parameters halfway through
  another's addition. `interleaved_updates` counts updates during whose window another update was
  written (exactly: the version advanced between its read and its write).

Staleness of an update = global version it was applied to - version of the snapshot its gradient
was computed on. `algo.staleness_lr=true` scales the update by 1 / (1 + staleness).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import math
import threading
import time
import traceback
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxac import core
from jaxac.envs import EnvSpec, reset_envs
from jaxac.episodes import WINDOW
from jaxac.normalization import ObsStats, init_obs_stats, update_obs_stats
from jaxac.checkpoint import Checkpointer, load_checkpoint
from jaxac.metrics import mean_or_none, resident_memory_mb
from jaxac.optim import current_lr
from jaxac.results import Divergence, TrainResult, first_nonfinite
from jaxac.signals import StopRequest

UPDATE_MODES = ("locked", "hogwild")
# Upper edges of the staleness histogram bins: 0, 1, 2, 3-4, 5-8, 9-16, 17-32, 33+.
STALENESS_BIN_EDGES = (0, 1, 2, 4, 8, 16, 32)


class Snapshot(NamedTuple):
    """The vector a worker computes on, and its version: in locked mode the server's whole state
    vector, an immutable XLA buffer; under hogwild a numpy copy of its first two parts,
    [parameters | observation statistics]. The rollout reads only those two parts."""

    vector: jax.Array | np.ndarray
    version: int


class WorkerFailed(RuntimeError):
    """A worker thread raised; carries that worker's traceback."""

    def __init__(self, worker: int, trace: str):
        self.worker, self.trace = worker, trace
        super().__init__(f"A3C worker {worker} failed:\n{trace}")


class NonFiniteUpdate(RuntimeError):
    """An update's losses, gradient or parameter step were not finite; it was not applied."""

    def __init__(self, update: int, flags: int):
        self.update, self.flags = update, flags
        super().__init__(f"update {update}: {first_nonfinite(flags)} is not finite")


class UpdateRecord(NamedTuple):
    """One applied update, as the metrics and the tests see it. (A NamedTuple: made once per
    update under the lock, and a frozen dataclass costs several times as much to build.)"""

    worker: int
    snapshot_version: int
    applied_version: int  # version of the global state the update was applied to
    interleaved: bool  # another update was written between this one's read and its write
    policy_loss: float
    value_loss: float
    entropy: float
    grad_norm: float

    @property
    def staleness(self) -> int:
        return self.applied_version - self.snapshot_version


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


class FlatLayout:
    """Packs a pytree of arrays into one float32 vector and back, exactly.

    32-bit leaves that are not float32 (step counts, RNG keys) are bit-cast, and narrower ones
    (booleans, bytes) are converted, so every value round-trips unchanged. One vector is one
    buffer per call instead of one per leaf, and buffers are what XLA's CPU runtime charges for:
    past a handful it runs their work as tasks on its thread pool. A worker's call with its math
    removed cost 164 CPU µs with the environment state as 9 leaves, 13 µs with it as one vector.
    """

    def __init__(self, template: Any):
        leaves, self.treedef = jax.tree.flatten(template)
        self.shapes = [tuple(np.shape(x)) for x in leaves]
        self.dtypes = [np.dtype(x.dtype) if hasattr(x, "dtype") else jnp.asarray(x).dtype
                       for x in leaves]  # a template may hold jax.ShapeDtypeStructs
        self.sizes = [int(np.prod(shape)) for shape in self.shapes]
        self.size = sum(self.sizes)

    @staticmethod
    def _bitcast(dtype) -> bool:
        return dtype != jnp.float32 and dtype.itemsize == 4

    def pack(self, tree: Any) -> jax.Array:
        parts = []
        for x, dtype in zip(jax.tree.leaves(tree), self.dtypes):
            x = jnp.asarray(x, dtype)
            x = (jax.lax.bitcast_convert_type(x, jnp.float32) if self._bitcast(dtype)
                 else x.astype(jnp.float32))
            parts.append(x.ravel())
        return jnp.concatenate(parts) if parts else jnp.zeros(0, jnp.float32)

    def unpack(self, vector: jax.Array) -> Any:
        leaves, offset = [], 0
        for shape, size, dtype in zip(self.shapes, self.sizes, self.dtypes):
            part = vector[offset:offset + size].reshape(shape)
            leaves.append(jax.lax.bitcast_convert_type(part, dtype) if self._bitcast(dtype)
                          else part.astype(dtype))
            offset += size
        return jax.tree.unflatten(self.treedef, leaves)


class Report(NamedTuple):
    """The host-side part of one rollout-and-gradient result, as plain Python values.

    Read with one `tolist`: right after an XLA call, when the CPU caches are cold, every numpy
    call costs several µs, and reading it field by field would make a dozen."""

    diagnostics: list[float]  # [policy loss, value loss, entropy, gradient norm]
    episodes: list[tuple[float, int]]  # (return, length) of each episode that ended


class A3CLearner:
    """The jitted pieces a worker calls: the shared core functions, on packed vectors.

    Layout of the shared state vector: [parameters | observation statistics | optimizer state].
    A rollout reads the first two parts of whatever vector it is given. A worker's environment
    state is one packed vector too, and a rollout-and-gradient call returns one result vector:
    [raveled gradient | observations seen (T*E*obs) | report: policy loss, value loss, entropy,
    gradient norm, done (T*E), episode return (T*E), episode length (T*E)].
    Few, flat buffers keep XLA's fixed cost per call low (see FlatLayout).
    """

    def __init__(self, spec: EnvSpec, network, tx: optax.GradientTransformation,
                 loss: core.LossConfig, rollout_length: int, envs_per_worker: int):
        self.spec, self.tx, self.loss = spec, tx, loss
        self.rollout_length, self.envs_per_worker = rollout_length, envs_per_worker
        self.apply_fn = network.apply
        self._init_params = lambda key: network.init(key, jnp.zeros((1,) + spec.obs_shape))
        self.env_layout = FlatLayout(jax.eval_shape(self.init_envs, jax.random.PRNGKey(0)))
        self.steps_per_rollout = rollout_length * envs_per_worker
        self.n_observed = self.steps_per_rollout * int(np.prod(spec.obs_shape))
        self.rollout_and_gradient = jax.jit(self._rollout_and_gradient)
        # A worker's packed fresh environments from its key. Jitted: run op by op it took 5 ms
        # per worker, at the start of every run.
        self.fresh_env_vector = jax.jit(lambda key: self.pack_envs(self.init_envs(key)))
        # The optimizer step in two forms. Hogwild adds one update's parameter delta into the
        # live numpy vector in place; locked mode applies a batch of updates to its state, an XLA
        # buffer that goes back in as is and also serves as the workers' snapshot (see
        # ParameterServer). jit compiles `optimizer_steps` once per batch size.
        self.apply_update = jax.jit(functools.partial(self._optimizer_step, whole_state=False))
        self.optimizer_steps = jax.jit(self._optimizer_steps)

    def init_state(self, key: jax.Array) -> np.ndarray:
        """The initial shared state vector; also fixes the layouts."""
        params = jax.jit(self._init_params)(key)
        flat_params, self.unravel = ravel_pytree(params)
        stats = init_obs_stats(self.spec.obs_shape)
        opt_state = self.tx.init(flat_params)
        self.n_params = flat_params.size
        self.stats_layout, self.opt_layout = FlatLayout(stats), FlatLayout(opt_state)
        self.n_snapshot = self.n_params + self.stats_layout.size
        self.n_state = self.n_snapshot + self.opt_layout.size
        self.report_start = self.n_params + self.n_observed  # where a result's report begins
        return np.asarray(jnp.concatenate([flat_params, self.stats_layout.pack(stats),
                                           self.opt_layout.pack(opt_state)]))

    def split_snapshot(self, snapshot: jax.Array) -> tuple[Any, ObsStats]:
        return (self.unravel(snapshot[:self.n_params]),
                self.stats_layout.unpack(snapshot[self.n_params:self.n_snapshot]))

    def init_envs(self, key: jax.Array):
        """`envs_per_worker` fresh environments (a pytree; `pack_envs` makes the worker's vector)."""
        return reset_envs(self.spec, jax.random.split(key, self.envs_per_worker))

    def pack_envs(self, envs: Any) -> jax.Array:
        return self.env_layout.pack(envs)

    def unpack_envs(self, vector: Any) -> Any:
        return self.env_layout.unpack(jnp.asarray(vector))

    def read_report(self, report: list[float]) -> Report:
        """Parse the report part of a result vector (`result[report_start:]`, as a list)."""
        k = self.steps_per_rollout
        done, returns, lengths = report[4:4 + k], report[4 + k:4 + 2 * k], report[4 + 2 * k:]
        return Report(report[:4], [(returns[j], int(lengths[j])) for j in range(k) if done[j]])

    def add_update(self, state: np.ndarray, out: np.ndarray) -> None:
        """Apply an `apply_update` output to a state vector in place: add the parameter delta,
        replace the statistics and the optimizer state."""
        n = self.n_params
        np.add(state[:n], out[:n], out=state[:n])
        np.copyto(state[n:], out[n:-1])

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
        """From the shared state vector and a worker's result vector, compute [parameter delta,
        or the new parameters if `whole_state` | new observation statistics | new optimizer
        state | non-finite flags]. With `whole_state` all but the last element is the next
        state vector. The flags are a bit mask in GUARDED_METRICS order: bits 0-3 for the four
        losses in the result's report, bit 4 for the parameter delta; 0 when all are finite."""
        n, n_snapshot = self.n_params, self.n_snapshot
        obs_stats = self.stats_layout.unpack(state[n:n_snapshot])
        opt_state = self.opt_layout.unpack(state[n_snapshot:self.n_state])
        delta, opt_state = self.tx.update(result[:n], opt_state)
        observed = result[n:n + self.n_observed].reshape((-1,) + self.spec.obs_shape)
        obs_stats = update_obs_stats(obs_stats, observed, self.loss.normalize_obs)
        delta = delta * scale
        losses = result[self.report_start:self.report_start + 4]
        not_finite = jnp.concatenate([~jnp.isfinite(losses), ~jnp.isfinite(delta).all()[None]])
        flags = (not_finite * 2 ** jnp.arange(5)).sum().astype(jnp.float32)
        return jnp.concatenate([state[:n] + delta if whole_state else delta,
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
                return out[:-1], out[-1]

            if j == 0 and len(results) == 1:  # a batch of one has no conditional
                state, flag = apply(state)
                flag = jnp.where(count > 0, flag, -1.0)
            else:
                state, flag = jax.lax.cond(j < count, apply, lambda s: (s, jnp.float32(-1)),
                                           state)
            flags.append(flag)
        reports = jnp.stack([result[self.report_start:] for result in results])
        return state, jnp.concatenate([jnp.stack(flags)[:, None], reports], axis=1)


# Locked mode applies at most this many waiting updates per call (more wait for the next one).
MAX_BATCH = 16


def batch_sizes(limit: int) -> list[int]:
    """The batch sizes locked mode compiles its optimizer call for: powers of two below `limit`,
    and `limit` (a batch is padded up to the next of them)."""
    return sorted({min(2 ** i, limit) for i in range(limit.bit_length() + 1)})


class ParameterServer:
    """The one shared state vector [parameters | observation statistics | optimizer state].

    Hogwild keeps it as a numpy vector that every worker adds its parameter step into, in place
    and without a lock. Locked mode keeps it as the last optimizer call's output, an immutable XLA
    buffer on `device`: the next optimizer call and every worker's rollout take that buffer as it
    is. A numpy state would be copied into XLA twice per update, and on this CPU runtime each copy
    releases and retakes the GIL: with 16 workers those hand-offs cost more than the copies.

    Workers `submit` their results. Under hogwild the submitting worker applies its own at once.
    In locked mode results wait in arrival order, and a submitting worker that finds the lock
    free applies all that are waiting (its own too) in one call, up to the largest of
    `batch_sizes` at a time; one that finds it taken returns at once, its result left for the
    lock's holder, who looks for waiting results again after each batch.
    """

    def __init__(self, learner: A3CLearner, state: np.ndarray, mode: str, staleness_lr: bool,
                 keep_history: bool = False, device: Any = None, workers: int = 1):
        if mode not in UPDATE_MODES:
            raise ValueError(f"algo.update={mode!r}; allowed: {', '.join(UPDATE_MODES)}")
        self.learner, self.mode, self.staleness_lr = learner, mode, staleness_lr
        self._n_params, self._n_snapshot = learner.n_params, learner.n_snapshot
        self._lock = threading.Lock()  # locked mode's; never taken under hogwild
        # (worker, snapshot version, result) in arrival order, waiting to be applied (locked)
        self._waiting: collections.deque[tuple[int, int, jax.Array]] = collections.deque()
        self.batch_sizes = batch_sizes(min(max(workers, 1), MAX_BATCH))
        # Where locked mode's state lives (workers on other devices move their inputs); None
        # under hogwild, whose numpy state goes wherever a call runs.
        self.device = (device or jax.devices()[0]) if mode == "locked" else None
        self._versions = itertools.count(1)  # next() is atomic in CPython
        # Updates applied so far. Under hogwild it is taken from the atomic counter, and a thread
        # switch between taking the number and storing it can make it lag by a write or two.
        self.version = 0
        self._set_state(state)
        # The optimizer call's small arguments as device arrays, made once: a numpy argument
        # is copied into XLA at every call, and each copy is a hand-off of the GIL.
        # (Committed to the state's device, as all the call's arguments are: jit compiles
        # separately for uncommitted ones.)
        self._counts = [jax.device_put(np.int32(k), self.device) for k in range(MAX_BATCH + 1)]
        self._unit_scales = {size: jax.device_put(np.ones(size, np.float32), self.device)
                             for size in self.batch_sizes}
        # Appended by workers, drained by the monitor (deque operations are atomic).
        self.records: collections.deque[UpdateRecord] = collections.deque()
        # For tests: (record, result vector, scale) in the order updates were applied.
        self.history: list | None = [] if keep_history else None

    def _set_state(self, state: np.ndarray) -> None:
        """Start from `state` (before the workers run, or with them paused)."""
        state = np.asarray(state, np.float32)
        if self.mode == "locked":
            self._published = Snapshot(jax.device_put(state, self.device), self.version)
        else:
            self._live = state.copy()

    @property
    def state(self) -> np.ndarray:
        """The state vector on the host: locked mode's is a read-only view of the current XLA
        buffer, hogwild's the live vector itself."""
        if self.mode == "locked":
            return np.asarray(self._published.vector)
        return self._live

    @property
    def params(self) -> np.ndarray:
        return self.state[:self._n_params]

    @property
    def obs_stats(self) -> ObsStats:
        return jax.device_get(self.learner.stats_layout.unpack(
            jnp.asarray(self.state[self._n_params:self._n_snapshot])))

    @property
    def opt_state(self) -> Any:
        return self.learner.opt_layout.unpack(jnp.asarray(self.state[self._n_snapshot:]))

    def snapshot(self) -> Snapshot:
        """The current parameters and statistics: in locked mode the current state buffer (one
        consistent version, immutable, no copy), under hogwild a copy of the live vector."""
        if self.mode == "locked":
            return self._published
        return Snapshot(self._live[:self._n_snapshot].copy(), self.version)

    def compile(self, result: jax.Array) -> None:
        """Compile this mode's optimizer call for every batch size it uses (nothing is applied);
        `result` is any result vector of the workers' rollout call, on the server's device."""
        if self.mode == "locked":
            for size in self.batch_sizes:
                jax.block_until_ready(self.learner.optimizer_steps(*self.optimizer_arguments(
                    self._published.vector, [result] * size, [1.0] * size)))
        else:
            jax.block_until_ready(self.learner.apply_update(self._live, result, np.float32(1)))

    def submit(self, worker: int, snapshot_version: int, result: jax.Array) -> list[Report]:
        """Hand in a worker's result vector (in locked mode on the server's `device`) to be
        applied to the shared state; returns the reports of the updates this call applied (its
        own among them, or none if another worker holds the lock and will apply it).

        Raises NonFiniteUpdate, leaving that update out of the state and the version, if any
        loss in its report or its parameter step is not finite.
        """
        if self.mode == "hogwild":
            return [self._apply_now(worker, snapshot_version, result)]
        waiting, lock, most = self._waiting, self._lock, self.batch_sizes[-1]
        waiting.append((worker, snapshot_version, result))
        reports: list[Report] = []
        # A result appended after the holder's last look is applied by the next submitter. Once
        # a full batch waits, submitters wait for the lock too (and apply): otherwise workers
        # outpace the one applying, and the queue and the staleness grow without bound.
        while waiting and lock.acquire(blocking=len(waiting) >= most):
            try:
                batch = [waiting.popleft() for _ in range(min(len(waiting), most))]
                if batch:  # another holder may have applied them since the check above
                    reports += self._apply_batch(batch)
            finally:
                lock.release()
        return reports

    def _scale(self, staleness: int) -> float:
        return 1.0 / (1.0 + staleness) if self.staleness_lr else 1.0

    def _apply_batch(self, batch: list[tuple[int, int, jax.Array]]) -> list[Report]:
        """Locked mode, under the lock: apply `batch` in order with one optimizer call."""
        base, k = self.version, len(batch)
        scales = [self._scale(base + j - version) for j, (_, version, _) in enumerate(batch)]
        state, info = self.learner.optimizer_steps(*self.optimizer_arguments(
            self._published.vector, [result for *_, result in batch], scales))
        rows = np.asarray(info)[:k].tolist()
        refused = next((j for j, row in enumerate(rows) if row[0]), None)
        if refused is not None:  # the call applied it and what followed: redo the good ones
            state = (self.learner.optimizer_steps(*self.optimizer_arguments(
                self._published.vector, [r for *_, r in batch[:refused]], scales[:refused]))[0]
                     if refused else self._published.vector)
        reports = []
        for j, row in enumerate(rows[:refused]):
            worker, snapshot_version, result = batch[j]
            reports.append(self.learner.read_report(row[1:]))
            self._record(UpdateRecord(worker, snapshot_version, base + j, False,
                                      *reports[-1].diagnostics), result, scales[j])
        self.version = base + len(reports)
        self._published = Snapshot(state, self.version)  # replacing the reference is atomic
        if refused is not None:
            raise NonFiniteUpdate(self.version + 1, int(rows[refused][0]))
        return reports

    def optimizer_arguments(self, state: jax.Array, results: list[jax.Array],
                            scales: list[float]) -> tuple:
        """The arguments of `A3CLearner.optimizer_steps` that apply `results` with `scales` to
        `state` (locked mode): padded to the next batch size and committed to the server's
        device, as every call of the run passes them, so that one compilation per size serves."""
        k = len(results)
        size = next(s for s in self.batch_sizes if s >= k)
        if scales == [1.0] * k:
            scale_vector = self._unit_scales[size]
        else:
            scale_vector = jax.device_put(np.float32(scales + [1.0] * (size - k)), self.device)
        return (state, tuple(results) + (results[-1],) * (size - k), scale_vector,
                self._counts[k])

    def _apply_now(self, worker: int, snapshot_version: int, result: jax.Array) -> Report:
        """Hogwild: apply one update in place, without a lock."""
        base_version = self.version
        scale = np.float32(self._scale(base_version - snapshot_version))
        report = self.learner.read_report(np.asarray(result)[self.learner.report_start:].tolist())
        out = np.asarray(self.learner.apply_update(self._live, result, scale))
        if out[-1]:
            raise NonFiniteUpdate(base_version + 1, int(out[-1]))
        self.learner.add_update(self._live, out)
        self.version = version = next(self._versions)
        self._record(UpdateRecord(worker, snapshot_version, base_version,
                                  version - 1 != base_version, *report.diagnostics),
                     result, scale)
        return report

    def _record(self, record: UpdateRecord, result: jax.Array, scale: float) -> None:
        self.records.append(record)
        if self.history is not None:
            self.history.append((record, result, scale))

    def drain_records(self) -> list[UpdateRecord]:
        """Take the records appended since the last drain."""
        return [self.records.popleft() for _ in range(len(self.records))]

    def restore(self, state: np.ndarray, version: int) -> None:
        """Continue from a checkpoint's shared state vector and version counter."""
        self.version = version
        self._versions = itertools.count(version + 1)
        self._set_state(state)


class SharedProgress:
    """Counters and the recent-episodes window shared by the workers and the monitor."""

    def __init__(self, total_rollouts: int, steps_per_rollout: int, workers: int):
        self.total_rollouts, self.steps_per_rollout = total_rollouts, steps_per_rollout
        self._rollout_tickets = itertools.count()
        self.worker_steps = [0] * workers  # each slot written only by its own worker
        self.recent = collections.deque(maxlen=WINDOW)  # returns of finished episodes
        # (return, length) of episodes finished since the last log point; drained by the monitor
        self.interval_episodes: collections.deque[tuple[float, int]] = collections.deque()
        self.solved_env_steps: int | None = None
        self.solved_time: float | None = None

    def reserve_rollout(self) -> bool:
        """Claim one rollout of the budget; False once `total_steps` is used up."""
        return next(self._rollout_tickets) < self.total_rollouts

    def restore(self, worker_steps: list[int], recent: list[float],
                solved_env_steps: int | None) -> None:
        """Continue from a checkpoint's counters (the rollouts already done are used up)."""
        self.worker_steps = list(worker_steps)
        self._rollout_tickets = itertools.count(self.env_steps // self.steps_per_rollout)
        self.recent.extend(recent)
        self.solved_env_steps = solved_env_steps

    @property
    def env_steps(self) -> int:
        return sum(self.worker_steps)


class A3CTrainer:
    """Runs the workers and the monitor loop that logs while they train."""

    def __init__(self, learner: A3CLearner, server: ParameterServer, progress: SharedProgress,
                 worker_keys_: jax.Array, entropy_coefs: list[float], devices: list[Any],
                 solve_threshold: float | None):
        self.learner, self.server, self.progress = learner, server, progress
        self.keys, self.entropy_coefs, self.devices = worker_keys_, entropy_coefs, devices
        self.threshold = solve_threshold
        self.stop_event = threading.Event()
        self.failures: list[WorkerFailed] = []
        self.divergence: NonFiniteUpdate | None = None
        workers = len(entropy_coefs)
        # Each worker's environment state after its last update (what a checkpoint stores), and
        # the states to start from (None: fresh ones from the worker's key).
        self.worker_envs: list[Any] = [None] * workers
        self.initial_envs: list[Any] | None = None
        # Pausing for a consistent checkpoint: workers park between updates until released.
        self._pause = threading.Event()
        self._parked = 0
        self._cond = threading.Condition()
        self.threads = [threading.Thread(target=self._worker, args=(i,), name=f"a3c-worker-{i}",
                                         daemon=True) for i in range(workers)]

    def device_of(self, worker: int):
        """Workers are placed round-robin on the devices."""
        return self.devices[worker % len(self.devices)]

    def _worker(self, i: int) -> None:
        try:
            self._worker_loop(i)
        except NonFiniteUpdate as diverged:
            if self.divergence is None:
                self.divergence = diverged
            self.stop()
        except BaseException:  # noqa: BLE001 - any failure must end the run with its traceback
            self.failures.append(WorkerFailed(i, traceback.format_exc()))
            self.stop()

    def initial_env_vector(self, worker: int) -> jax.Array:
        """The worker's packed starting environments (restored or fresh from its key), committed
        to its device: the jitted calls run where their inputs live."""
        vector = (self.learner.pack_envs(self.initial_envs[worker])
                  if self.initial_envs is not None
                  else self.learner.fresh_env_vector(self.keys[worker]))
        return jax.device_put(vector, self.device_of(worker))

    def _worker_loop(self, i: int) -> None:
        learner, server, shared = self.learner, self.server, self.progress
        env_vector = self.worker_envs[i] = self.initial_env_vector(i)
        entropy_coef = jnp.float32(self.entropy_coefs[i])
        device = self.device_of(i)
        # A locked-mode server's state lives on one device: a worker elsewhere moves the
        # snapshot to its device and its result to the server's.
        remote = server.device is not None and device != server.device
        while not self.stop_event.is_set():
            if self._pause.is_set():
                self._park()
                continue
            if not shared.reserve_rollout():
                break
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
        shared = self.progress
        for episode in episodes:
            shared.recent.append(episode[0])
            shared.interval_episodes.append(episode)
        if (self.threshold is not None and shared.solved_env_steps is None
                and len(shared.recent) == WINDOW
                and sum(shared.recent) / WINDOW >= self.threshold):  # np.mean: 15x as long
            shared.solved_env_steps = shared.env_steps
            shared.solved_time = time.perf_counter()

    def _park(self) -> None:
        with self._cond:
            self._parked += 1
            self._cond.notify_all()
            while self._pause.is_set() and not self.stop_event.is_set():
                self._cond.wait()
            self._parked -= 1

    @contextlib.contextmanager
    def paused(self):
        """Hold every worker between two updates; yields True once all running ones are parked
        (the shared state, environment states and counters are then consistent), False if the
        run is stopping instead."""
        with self._cond:
            self._pause.set()
            while (not self.stop_event.is_set()
                   and self._parked < sum(t.is_alive() for t in self.threads)):
                self._cond.wait(timeout=0.05)  # also notices a worker that ended on its own
            all_parked = not self.stop_event.is_set()
        try:
            yield all_parked
        finally:
            with self._cond:
                self._pause.clear()
                self._cond.notify_all()

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        """Ask every worker to finish its current update and end (parked ones too)."""
        with self._cond:
            self.stop_event.set()
            self._cond.notify_all()

    def stop_and_join(self) -> None:
        self.stop()
        for t in self.threads:
            t.join()

    def all_worker_envs(self) -> Any:
        """Every worker's environment state, stacked on a leading worker axis (on the host)."""
        envs = [jax.device_get(self.learner.unpack_envs(v)) for v in self.worker_envs]
        return jax.tree.map(lambda *xs: np.stack(xs), *envs)

    def run_to_completion(self) -> None:
        """Start the workers, wait until the step budget is used up; re-raise a worker failure."""
        self.start()
        for t in self.threads:
            t.join()
        if self.failures:
            raise self.failures[0]

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)


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


def build_trainer(cfg, spec: EnvSpec, network, devices: list[Any],
                  keep_history: bool = False) -> A3CTrainer:
    """An A3CTrainer (workers not yet started) for a validated Hydra config.

    `keep_history` keeps every applied gradient in order (for tests: memory grows with the run).
    """
    from jaxac.config import loss_config, optim_config
    from jaxac.envs import solve_threshold
    from jaxac.optim import make_optimizer

    algo = cfg.algo
    workers, envs_per_worker = int(cfg.workers), int(algo.envs_per_worker)
    steps_per_rollout = int(cfg.rollout_length) * envs_per_worker
    total_rollouts = max(1, int(cfg.total_steps) // steps_per_rollout)
    tx = make_optimizer(optim_config(cfg), total_rollouts)  # one optimizer step per rollout
    learner = A3CLearner(spec, network, tx, loss_config(cfg), int(cfg.rollout_length),
                         envs_per_worker)
    params_key, keys = worker_keys(int(cfg.seed), workers)
    # item access: `algo.update` would be DictConfig.update, the method
    server = ParameterServer(learner, learner.init_state(params_key), mode=str(algo["update"]),
                             staleness_lr=bool(algo.staleness_lr), keep_history=keep_history,
                             device=devices[0], workers=workers)
    shared = SharedProgress(total_rollouts, steps_per_rollout, workers)
    coefs = entropy_coefficients(_plain(algo.entropy_coef), workers, int(cfg.seed))
    return A3CTrainer(learner, server, shared, keys, coefs, devices,
                      solve_threshold(cfg.env.name, cfg.env.solve_threshold))


def _plain(value):
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(value) if isinstance(value, DictConfig) else value


def compile_learner(trainer: A3CTrainer) -> float:
    """Compile the jitted functions the workers call (the rollout, and the optimizer call for
    each batch size), with the inputs the workers will pass (committed environment state, the
    server's snapshot and state), before any worker starts; returns the seconds."""
    start = time.perf_counter()
    learner, server = trainer.learner, trainer.server
    _, result = learner.rollout_and_gradient(server.snapshot().vector,
                                             trainer.initial_env_vector(0), jnp.float32(0.0))
    server.compile(result)
    return time.perf_counter() - start


def train(cfg, spec: EnvSpec, network, devices: list[Any], writer, progress,
          stop: StopRequest, checkpointer: Checkpointer) -> TrainResult:
    """Run A3C until `total_steps`, a stop request, a non-finite update or a worker failure.

    Starts from `checkpointer.resume_from` when it names a checkpoint; logs as it goes; writes a
    checkpoint (workers paused between updates for a consistent one) every `checkpoint_every` env
    steps and at the end, but not after a non-finite update, so the last good one stays newest.
    Raises WorkerFailed (after the workers are joined and the metrics written) if a worker raised.
    """
    trainer = build_trainer(cfg, spec, network, devices)
    server, shared = trainer.server, trainer.progress
    host = {"wall_seconds": 0.0, "rates": [], "totals": {"updates": 0, "staleness": 0,
                                                          "interleaved": 0}}
    resume = checkpointer.resume_from
    if resume is not None:
        target = {"state": server.state.copy(),
                  "envs": jax.device_get(jax.vmap(trainer.learner.init_envs)(trainer.keys))}
        restored = load_checkpoint(resume, target)
        meta = resume.meta
        server.restore(restored["state"], int(meta["version"]))
        shared.restore(meta["worker_env_steps"], meta["recent_returns"], meta["solved_env_steps"])
        trainer.initial_envs = [jax.tree.map(lambda x, i=i: x[i], restored["envs"])
                                for i in range(len(trainer.threads))]
        host.update({k: meta[k] for k in host})
    start = time.perf_counter() - host["wall_seconds"]
    if resume is not None and resume.meta["solved_wall_seconds"] is not None:
        shared.solved_time = start + resume.meta["solved_wall_seconds"]
    compile_seconds = compile_learner(trainer)
    log_every = max(int(cfg.log_interval), shared.steps_per_rollout)
    rates, totals = host["rates"], host["totals"]
    last = {"time": time.perf_counter(), "steps": shared.env_steps}
    next_log = (shared.env_steps // log_every + 1) * log_every

    def log_point(now: float) -> None:
        steps, records = shared.env_steps, server.drain_records()
        interval = max(now - last["time"], 1e-9)
        rate = (steps - last["steps"]) / interval
        rates.append(rate)
        episodes = [shared.interval_episodes.popleft()
                    for _ in range(len(shared.interval_episodes))]
        returns = [r for r, _ in episodes]
        stale = [r.staleness for r in records]
        totals["updates"] += len(records)
        totals["staleness"] += sum(stale)
        totals["interleaved"] += sum(r.interleaved for r in records)
        solved = shared.solved_env_steps
        writer.write({
            "seed_index": 0, "seed": int(cfg.seed), "env_steps": steps,
            "updates": server.version, "wall_time": now - start,
            "steps_per_second": rate, "updates_per_second": len(records) / interval,
            "episodes": len(returns), "episode_return_mean": mean_or_none(returns),
            "episode_return_min": min(returns) if returns else None,
            "episode_return_max": max(returns) if returns else None,
            "episode_length_mean": mean_or_none([n for _, n in episodes]),
            "return_last100": mean_or_none(list(shared.recent)),
            "episodes_in_last100": len(shared.recent),
            "policy_loss": mean_or_none([r.policy_loss for r in records]),
            "value_loss": mean_or_none([r.value_loss for r in records]),
            "entropy": mean_or_none([r.entropy for r in records]),
            "grad_norm": mean_or_none([r.grad_norm for r in records]),
            "learning_rate": float(current_lr(server.opt_state)),
            "solved_env_steps": solved,
            "staleness_mean": mean_or_none(stale), "staleness_max": max(stale) if stale else None,
            "staleness_histogram": staleness_histogram(stale),
            "interleaved_updates": totals["interleaved"],
            "worker_env_steps": list(shared.worker_steps),
            "rss_mb": resident_memory_mb(),
        })
        progress.update(steps, rate, mean_or_none(returns), mean_or_none(list(shared.recent)))
        last.update(time=now, steps=steps)

    def save_checkpoint() -> None:
        """Call with the workers paused or joined."""
        checkpointer.save({"state": server.state, "envs": trainer.all_worker_envs()}, {
            "algo": "a3c", "env_steps": shared.env_steps, "version": server.version,
            "worker_env_steps": list(shared.worker_steps), "recent_returns": list(shared.recent),
            "solved_env_steps": shared.solved_env_steps,
            "solved_wall_seconds": None if shared.solved_time is None
            else shared.solved_time - start,
            "wall_seconds": time.perf_counter() - start, "metrics_lines": writer.lines,
            "rates": rates, "totals": totals})

    trainer.start()
    try:
        while trainer.running:
            if trainer.stop_event.wait(timeout=0.02) or stop.requested:
                break
            if cfg.stop_when_solved and shared.solved_env_steps is not None:
                break
            if shared.env_steps >= next_log:
                if checkpointer.due(shared.env_steps):
                    with trainer.paused() as consistent:
                        log_point(time.perf_counter())
                        if consistent:
                            save_checkpoint()
                else:
                    log_point(time.perf_counter())
                next_log = (shared.env_steps // log_every + 1) * log_every
    finally:
        trainer.stop_and_join()
    if shared.env_steps > last["steps"] or server.records:  # what the last log point missed
        log_point(time.perf_counter())
    if trainer.failures:
        raise trainer.failures[0]
    divergence = None
    if trainer.divergence is not None:
        divergence = Divergence(trainer.divergence.update, shared.env_steps,
                                first_nonfinite(trainer.divergence.flags), 0,
                                checkpointer.last_env_steps)
    else:
        save_checkpoint()  # the final (or interrupted) state, to resume or extend from
    solved_wall = None if shared.solved_time is None else shared.solved_time - start
    return TrainResult(
        params=jax.tree.map(lambda x: x[None], trainer.learner.unravel(server.params)),
        obs_stats=jax.tree.map(lambda x: x[None], server.obs_stats),
        env_steps=shared.env_steps, compile_seconds=compile_seconds,
        train_seconds=time.perf_counter() - start, steps_per_second=rates,
        solved_env_steps=[shared.solved_env_steps], solved_wall_seconds=[solved_wall],
        interrupted=stop.requested and divergence is None, diverged=divergence,
        extra={"update_mode": server.mode, "updates_applied": totals["updates"],
               "version": server.version,
               "interleaved_updates": totals["interleaved"],
               "staleness_mean": totals["staleness"] / max(totals["updates"], 1),
               "entropy_coef_per_worker": trainer.entropy_coefs,
               "worker_env_steps": list(shared.worker_steps),
               "worker_devices": [str(trainer.device_of(i)) for i in range(len(trainer.threads))]})
