"""The parameter server: the one shared state vector (params | obs_stats | opt_state), in the two
update modes of `algo.update`, behind one interface: workers call `snapshot()` and `submit()`.

- `LockedServer`: a submitted result waits in arrival order; whichever worker finds the lock free
  applies every waiting result (its own too), up to `MAX_BATCH`, in one jitted call, and
  publishes the result as the snapshot, which workers pull without the lock and without a copy.
  No update is lost or overlapped: the version equals the gradients applied, and the parameters
  equal the sequential application of the updates in arrival order.
- `HogwildServer`: no lock anywhere. The submitting worker computes its optax step from what it
  reads, adds the parameter step into the live numpy vector in place and writes the new
  statistics back; overlapping updates interleave (counted, exactly: `UpdateRecord.interleaved`).

Staleness of an update = version it was applied to - version of the snapshot its gradient was
computed on; with `staleness_lr` the update is scaled by 1 / (1 + staleness).
"""

from __future__ import annotations

import collections
import itertools
import threading
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxac.a3c.learner import A3CLearner, Report
from jaxac.normalization import ObsStats
from jaxac.results import first_nonfinite

# Locked mode applies at most this many waiting updates per call (more wait for the next one).
MAX_BATCH = 16


class Snapshot(NamedTuple):
    """The vector a worker computes on, and its version: in locked mode the server's whole state
    vector, an immutable XLA buffer; under hogwild a numpy copy of its snapshot part."""

    vector: jax.Array | np.ndarray
    version: int


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


class NonFiniteUpdate(RuntimeError):
    """An update's losses, gradient or parameter step were not finite; it was not applied."""

    def __init__(self, update: int, flags: int):
        self.update, self.flags = update, flags
        super().__init__(f"update {update}: {first_nonfinite(flags)} is not finite")


def batch_sizes(limit: int) -> list[int]:
    """The batch sizes locked mode compiles its optimizer call for: powers of two below `limit`,
    and `limit` (a batch is padded up to the next of them)."""
    return sorted({min(2 ** i, limit) for i in range(limit.bit_length() + 1)})


class ParameterServer:
    """What both servers share: the version, the records of applied updates, the state's parts.

    Workers `submit` their results; `snapshot()` is what they compute on. Subclasses keep the
    state (`state`, `_set_state`) and apply updates.
    """

    mode: str

    def __init__(self, learner: A3CLearner, state: np.ndarray, staleness_lr: bool,
                 keep_history: bool = False):
        self.learner, self.staleness_lr = learner, staleness_lr
        # Updates applied so far (hogwild: see HogwildServer)
        self.version = 0
        self._set_state(state)
        # Appended by workers, drained by the trainer (deque operations are atomic).
        self.records: collections.deque[UpdateRecord] = collections.deque()
        # For tests: (record, result vector, scale) in the order updates were applied.
        self.history: list | None = [] if keep_history else None

    def _set_state(self, state: np.ndarray) -> None:
        raise NotImplementedError

    @property
    def state(self) -> np.ndarray:
        """The state vector on the host."""
        raise NotImplementedError

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def submit(self, worker: int, snapshot_version: int, result: jax.Array) -> list[Report]:
        """Hand in a worker's result vector to be applied to the shared state; returns the
        reports of the updates this call applied. Raises NonFiniteUpdate, leaving that update
        out of the state and the version, if a loss in its report or its step is not finite."""
        raise NotImplementedError

    def compile(self, result: jax.Array) -> None:
        """Compile this mode's optimizer call(s) (nothing is applied); `result` is any result
        vector of the workers' rollout call, on the server's device."""
        raise NotImplementedError

    @property
    def params(self) -> np.ndarray:
        return self.state[self.learner.state.params]

    @property
    def obs_stats(self) -> ObsStats:
        return jax.device_get(self.learner.stats_layout.unpack(
            jnp.asarray(self.state[self.learner.state.obs_stats])))

    @property
    def opt_state(self) -> Any:
        return self.learner.opt_layout.unpack(
            jnp.asarray(self.state[self.learner.state.opt_state]))

    def _scale(self, staleness: int) -> float:
        return 1.0 / (1.0 + staleness) if self.staleness_lr else 1.0

    def _record(self, record: UpdateRecord, result: jax.Array, scale: float) -> None:
        self.records.append(record)
        if self.history is not None:
            self.history.append((record, result, scale))

    def drain_records(self) -> list[UpdateRecord]:
        """Take the records appended since the last drain."""
        return [self.records.popleft() for _ in range(len(self.records))]

    def restore(self, state: np.ndarray, version: int) -> None:
        """Continue from a checkpoint's shared state vector and version counter (before the
        workers run, or with them paused)."""
        self.version = version
        self._set_state(state)


class LockedServer(ParameterServer):
    """Locked mode. The state is the last optimizer call's output, an immutable XLA buffer on
    `device`: the next call and every worker's rollout take that buffer as it is (a numpy state
    would be copied into XLA twice per update, each copy a hand-off of the GIL).

    A submitting worker that finds the lock free applies every waiting result in one call; one
    that finds it taken returns at once, its result left for the holder, who looks for waiting
    results again after each batch. Once a full batch waits, submitters wait for the lock too,
    which bounds the queue and the staleness.
    """

    mode = "locked"

    def __init__(self, learner: A3CLearner, state: np.ndarray, staleness_lr: bool,
                 keep_history: bool = False, device: Any = None, workers: int = 1):
        self.device = device or jax.devices()[0]
        self._lock = threading.Lock()
        # (worker, snapshot version, result) in arrival order, waiting to be applied
        self._waiting: collections.deque[tuple[int, int, jax.Array]] = collections.deque()
        self.batch_sizes = batch_sizes(min(max(workers, 1), MAX_BATCH))
        super().__init__(learner, state, staleness_lr, keep_history)
        # The optimizer call's small arguments as device arrays, made once: a numpy argument is
        # copied into XLA at every call. (Committed to the state's device, as all the call's
        # arguments are: jit compiles separately for uncommitted ones.)
        self._counts = [jax.device_put(np.int32(k), self.device) for k in range(MAX_BATCH + 1)]
        self._unit_scales = {size: jax.device_put(np.ones(size, np.float32), self.device)
                             for size in self.batch_sizes}

    def _set_state(self, state: np.ndarray) -> None:
        self._published = Snapshot(jax.device_put(np.asarray(state, np.float32), self.device),
                                   self.version)

    @property
    def state(self) -> np.ndarray:
        """A read-only view of the current XLA buffer."""
        return np.asarray(self._published.vector)

    def snapshot(self) -> Snapshot:
        """The current state buffer: one consistent version, immutable, no copy."""
        return self._published

    def compile(self, result: jax.Array) -> None:
        for size in self.batch_sizes:
            jax.block_until_ready(self.learner.optimizer_steps(*self.optimizer_arguments(
                self._published.vector, [result] * size, [1.0] * size)))

    def submit(self, worker: int, snapshot_version: int, result: jax.Array) -> list[Report]:
        """`result` must be on the server's `device`."""
        waiting, lock, most = self._waiting, self._lock, self.batch_sizes[-1]
        waiting.append((worker, snapshot_version, result))
        reports: list[Report] = []
        # A result appended after the holder's last look is applied by the next submitter.
        while waiting and lock.acquire(blocking=len(waiting) >= most):
            try:
                batch = [waiting.popleft() for _ in range(min(len(waiting), most))]
                if batch:  # another holder may have applied them since the check above
                    reports += self.apply_batch(batch)
            finally:
                lock.release()
        return reports

    def apply_batch(self, batch: list[tuple[int, int, jax.Array]]) -> list[Report]:
        """Apply `batch` ((worker, snapshot version, result) each) in order with one optimizer
        call: under the lock, or from the one thread that owns the server (the Ray backend's
        server actor)."""
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
        `state`: padded to the next batch size and committed to the server's device, as every
        call of the run passes them, so that one compilation per size serves."""
        k = len(results)
        size = next(s for s in self.batch_sizes if s >= k)
        if scales == [1.0] * k:
            scale_vector = self._unit_scales[size]
        else:
            scale_vector = jax.device_put(np.float32(scales + [1.0] * (size - k)), self.device)
        return (state, tuple(results) + (results[-1],) * (size - k), scale_vector,
                self._counts[k])


class HogwildServer(ParameterServer):
    """Hogwild: a numpy state vector that every worker adds its parameter step into, in place and
    without a lock. The version comes from an atomic counter; a thread switch between taking the
    number and storing it can make `version` lag by a write or two."""

    mode = "hogwild"
    device = None  # the numpy state goes wherever a call runs

    def __init__(self, learner: A3CLearner, state: np.ndarray, staleness_lr: bool,
                 keep_history: bool = False, device: Any = None, workers: int = 1):
        self._versions = itertools.count(1)  # next() is atomic in CPython
        super().__init__(learner, state, staleness_lr, keep_history)

    def _set_state(self, state: np.ndarray) -> None:
        self._live = np.asarray(state, np.float32).copy()

    @property
    def state(self) -> np.ndarray:
        """The live vector itself."""
        return self._live

    def snapshot(self) -> Snapshot:
        """A copy of the live vector's snapshot part."""
        return Snapshot(self._live[self.learner.state.through("obs_stats")].copy(), self.version)

    def compile(self, result: jax.Array) -> None:
        jax.block_until_ready(self.learner.apply_update(self._live, result, np.float32(1)))

    def submit(self, worker: int, snapshot_version: int, result: jax.Array) -> list[Report]:
        """Apply this one update now, in place, without a lock."""
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
        return [report]

    def restore(self, state: np.ndarray, version: int) -> None:
        self._versions = itertools.count(version + 1)
        super().restore(state, version)


SERVERS = {server.mode: server for server in (LockedServer, HogwildServer)}
