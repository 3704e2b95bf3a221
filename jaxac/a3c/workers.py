"""The lifetime of A3C's worker threads (start, pause, stop, join, failures), and the counters
they share. Nothing here knows what a worker computes."""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import traceback
from typing import Callable

from jaxac.episodes import WINDOW


class WorkerFailed(RuntimeError):
    """A worker thread raised; carries that worker's traceback."""

    def __init__(self, worker: int, trace: str):
        self.worker, self.trace = worker, trace
        super().__init__(f"A3C worker {worker} failed:\n{trace}")


class ServerLost(RuntimeError):
    """The Ray backend's parameter-server actor died: the run's shared state went with it."""


class ThreadLifetime:
    """`count` daemon threads, thread i running `body(i)`; a body loops `while lifetime.go_on()`,
    so that between two of its updates it parks (for a pause) or ends (for a stop).

    An exception that escapes a body stops every thread and is kept in `failures`, with its
    traceback; `ended_by` is the first reason a body ended the run with `end` (a divergence).
    """

    def __init__(self, count: int, body: Callable[[int], None], name: str = "a3c-worker"):
        self.stop_event = threading.Event()
        self.failures: list[WorkerFailed] = []
        self.ended_by: BaseException | None = None
        self._pause = threading.Event()
        self._parked = 0
        self._cond = threading.Condition()
        self._body = body
        self.threads = [threading.Thread(target=self._run, args=(i,), name=f"{name}-{i}",
                                         daemon=True) for i in range(count)]

    def _run(self, i: int) -> None:
        try:
            self._body(i)
        except BaseException:  # noqa: BLE001 - any failure must end the run with its traceback
            self.failures.append(WorkerFailed(i, traceback.format_exc()))
            self.stop()

    def end(self, reason: BaseException) -> None:
        """End the run for a reason that is not a failure (the first reason is kept)."""
        if self.ended_by is None:
            self.ended_by = reason
        self.stop()

    def go_on(self) -> bool:
        """Called by a worker between two updates: parks it while a pause is asked for, then
        True to go on, False once the run is stopping."""
        while self._pause.is_set() and not self.stop_event.is_set():
            with self._cond:
                self._parked += 1
                self._cond.notify_all()
                while self._pause.is_set() and not self.stop_event.is_set():
                    self._cond.wait()
                self._parked -= 1
        return not self.stop_event.is_set()

    @contextlib.contextmanager
    def paused(self):
        """Hold every worker between two updates; yields True once all running ones are parked,
        False if the run is stopping instead."""
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

    def join(self) -> None:
        for t in self.threads:
            if t.is_alive() or t.ident is not None:
                t.join()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)


class SharedCounters:
    """The step budget, per-worker step counts and the recent-episodes window, shared by the
    workers and the trainer."""

    def __init__(self, total_rollouts: int, steps_per_rollout: int, workers: int):
        self.total_rollouts, self.steps_per_rollout = total_rollouts, steps_per_rollout
        self._rollout_tickets = itertools.count()
        self._returned = 0
        self.worker_steps = [0] * workers  # each slot written only by its own worker
        self.recent = collections.deque(maxlen=WINDOW)  # returns of finished episodes
        # (return, length) of episodes finished since the last log point; drained by the trainer
        self.interval_episodes: collections.deque[tuple[float, int]] = collections.deque()
        self.solved_env_steps: int | None = None

    def reserve_rollout(self) -> bool:
        """Claim one rollout of the budget; False once `total_steps` is used up."""
        if self._returned:  # only the Ray backend's server returns any, from its one thread
            self._returned -= 1
            return True
        return next(self._rollout_tickets) < self.total_rollouts

    def return_rollout(self) -> None:
        """Give back a claimed rollout that was never done (its worker died): the next claim
        gets it, so that the run still ends exactly at its budget."""
        self._returned += 1

    def record_episodes(self, episodes: list[tuple[float, int]], threshold: float | None) -> bool:
        """Add finished episodes ((return, length)); True if they first reach `threshold` (the
        mean return of the last WINDOW episodes), which records the env step in
        `solved_env_steps`."""
        for episode in episodes:
            self.recent.append(episode[0])
            self.interval_episodes.append(episode)
        if (threshold is not None and self.solved_env_steps is None
                and len(self.recent) == WINDOW
                and sum(self.recent) / WINDOW >= threshold):  # np.mean: 15x as long
            self.solved_env_steps = self.env_steps
            return True
        return False

    def drain_episodes(self) -> list[tuple[float, int]]:
        """Take the (return, length) of the episodes finished since the last drain."""
        return [self.interval_episodes.popleft() for _ in range(len(self.interval_episodes))]

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

    @property
    def budget_used(self) -> bool:
        return self.env_steps >= self.total_rollouts * self.steps_per_rollout
