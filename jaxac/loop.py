"""The training driver both trainers share: resume, the clock, the log cadence, checkpoints,
stop requests, the solved check and divergence, ending in one `TrainResult`.

A trainer (`a2c.A2CTrainer`, `a3c.A3CTrainer`) supplies only its algorithm, through the `Trainer`
interface below; everything both need to do around it is here, once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, ContextManager, Protocol

from jaxac.checkpoint import Checkpointer, CheckpointInfo, FinalWriteFailed
from jaxac.evaluate import PeriodicEvaluation
from jaxac.metrics import MetricsWriter, Progress, mean_or_none, resident_memory_mb
from jaxac.results import Divergence, MetricRow, TrainResult
from jaxac.signals import StopRequest

log = logging.getLogger("jaxac")


class Trainer(Protocol):
    """What an algorithm gives the driver. Env steps are counted per seed."""

    seeds: int
    # Whether training goes on between the driver's calls (A3C's workers): the time the driver
    # spends evaluating then counts as training time; otherwise (A2C) it is left out.
    trains_in_background: bool

    def restore(self, checkpoint: CheckpointInfo) -> None:
        """Continue from a training checkpoint (its payload, and its metadata: the driver's
        fields and those the trainer's `checkpoint` gave)."""

    def compile(self) -> float:
        """Compile what training calls; returns the seconds it took."""

    def start(self) -> None:
        """Start training in the background, if the algorithm does (A3C's workers)."""

    def advance(self, env_steps: int, stop: StopRequest) -> None:
        """Train until `env_steps` are reached (or the budget is), or until training ended by
        itself (a failure, a divergence, solved with `stop_when_solved`) or `stop` is requested."""

    @property
    def env_steps(self) -> int:
        """Env steps trained so far."""

    @property
    def finished(self) -> bool:
        """Whether the step budget is used up, or training ended by itself."""

    def log_rows(self) -> list[MetricRow]:
        """One row per seed for what was trained since the last call ([] when nothing was)."""

    def paused(self) -> ContextManager[bool]:
        """Hold training at a consistent point; yields whether it is (for a checkpoint)."""

    def checkpoint(self) -> tuple[Any, dict]:
        """(the state to save, the trainer's metadata fields), taken while paused or stopped."""

    def divergence(self) -> Divergence | None:
        """Where training went non-finite, if it did."""

    def stop(self) -> None:
        """End background training and wait for it (nothing to do for A2C)."""

    def failure(self) -> BaseException | None:
        """An error that ended training (A3C: a worker's), raised by the driver once the metrics
        are written."""

    def policy(self) -> tuple[Any, Any]:
        """(parameters, observation statistics) of every seed, stacked on a leading seed axis."""

    def summary(self) -> dict:
        """Trainer-specific fields of summary.json."""


class Clock:
    """Wall time and throughput across a resume: time continues from the checkpoint's."""

    def __init__(self, seeds: int, saved: dict | None = None):
        saved = saved or {}
        self.rates: list[float] = list(saved.get("rates", []))
        self.solved_env_steps: list[int | None] = _per_seed(saved.get("solved_env_steps"), seeds)
        self.solved_wall_seconds: list[float | None] = _per_seed(
            saved.get("solved_wall_seconds"), seeds)
        self.start = time.perf_counter() - float(saved.get("wall_seconds", 0.0))

    def seconds(self, now: float | None = None) -> float:
        return (time.perf_counter() if now is None else now) - self.start

    def state(self, now: float | None = None) -> dict:
        return {"wall_seconds": self.seconds(now), "rates": self.rates,
                "solved_env_steps": self.solved_env_steps,
                "solved_wall_seconds": self.solved_wall_seconds}


def _per_seed(value: Any, seeds: int) -> list:
    if value is None:
        return [None] * seeds
    return list(value) if isinstance(value, list) else [value]  # one seed, as A3C once saved it


def train(trainer: Trainer, writer: MetricsWriter, progress: Progress, stop: StopRequest,
          checkpointer: Checkpointer, *, seed: int, log_interval: int,
          stop_when_solved: bool, agree: Callable[[bool], bool] = bool,
          evaluation: PeriodicEvaluation | None = None,
          to_host: Callable[[Any], Any] = lambda tree: tree,
          sink: Callable[[dict], None] | None = None) -> TrainResult:
    """Train with `trainer` to its step budget, logging every `log_interval` env steps.

    Starts from `checkpointer.resume_from` when it names a checkpoint. Writes a checkpoint every
    `checkpoint_every` env steps (at the first log point past it) and at the end. When `stop` is
    requested (SIGINT/SIGTERM) training stops at the next safe point, a checkpoint is written
    and the result so far is returned, marked interrupted. When training goes non-finite it
    stops there, and the last good checkpoint stays the newest. A trainer's failure is raised
    once the metrics so far are written. `agree` turns this process's stop request into the
    run's decision (a multi-process run: any process's, `distributed.StopVote`), taken after
    every interval so that all processes stop after the same one.

    With `evaluation`, training also stops at each of its points (a log point then), and the
    greedy returns of the policy there (`to_host(trainer.policy())`, taken while the A3C workers
    go on) are logged on that point's rows as `eval_return`. `sink` gets every metric record
    written (the experiment trackers).
    """
    resume = checkpointer.resume_from
    if resume is not None:
        trainer.restore(resume)
    clock = Clock(trainer.seeds, resume.meta if resume is not None else None)
    compile_seconds = trainer.compile()
    if evaluation is not None:
        compile_seconds += evaluation.evaluator.compile(*to_host(trainer.policy()))
    last = {"time": time.perf_counter(), "steps": trainer.env_steps}

    def record(rows: list[MetricRow]) -> None:
        now = time.perf_counter()
        steps = rows[0].env_steps
        rate = (steps - last["steps"]) * trainer.seeds / max(now - last["time"], 1e-9)
        clock.rates.append(rate)
        for row in rows:
            i = row.seed_index
            if row.solved_env_steps is not None and clock.solved_env_steps[i] is None:
                # Interpolate the solve time within this interval, linearly in env steps.
                frac = (row.solved_env_steps - last["steps"]) / max(steps - last["steps"], 1)
                clock.solved_env_steps[i] = row.solved_env_steps
                clock.solved_wall_seconds[i] = clock.seconds(last["time"]) + frac * (
                    now - last["time"])
            line = row.record(seed, clock.seconds(now), rate, resident_memory_mb())
            writer.write(line)
            if sink is not None:
                sink(line)
        progress.update(steps, rate, mean_or_none(r.episode_return_mean for r in rows),
                        mean_or_none(r.return_last100 for r in rows), force=trainer.finished)
        last.update(time=now, steps=steps)

    def save(final: bool = False) -> None:
        tree, meta = trainer.checkpoint()
        meta = {"env_steps": trainer.env_steps, "metrics_lines": writer.lines, **clock.state(),
                **meta}
        if evaluation is not None:
            meta["evaluations"] = evaluation.history
        try:
            checkpointer.save(tree, meta)
        except OSError as error:
            if not final:  # a periodic one: the next one, or the final, may still succeed
                log.error(f"periodic checkpoint not written ({error}); training goes on")
                return
            raise FinalWriteFailed(error, checkpointer.save_elsewhere(tree, meta),
                                   checkpointer.last_env_steps) from error

    def evaluate() -> Any:
        """The greedy returns of the policy now (before the log rows are taken, outside any
        pause: A3C's workers go on), if an evaluation point has been passed."""
        steps = trainer.env_steps
        if evaluation is None or not evaluation.due(steps) or trainer.divergence() is not None:
            return None
        began = time.perf_counter()
        returns = evaluation.run(*to_host(trainer.policy()), steps)
        if not trainer.trains_in_background:  # the interval's throughput is of training alone
            last["time"] += time.perf_counter() - began
        return steps, returns

    def attach(rows: list[MetricRow], evaluated: Any) -> None:
        """Put an evaluation on this log point's rows (A3C: of the policy as it was a moment
        before the rows, at `eval_env_steps`)."""
        if evaluated is None or not rows:
            return
        steps, returns = evaluated
        evaluation.record(steps, returns)
        for row in rows:
            r = returns[row.seed_index]
            row.extra.update(eval_return=float(r.mean()), eval_return_std=float(r.std()),
                             eval_episodes=int(r.size), eval_env_steps=steps)

    divergence = None
    stopping = agree(stop.requested)
    trainer.start()
    try:
        while not trainer.finished and not stopping:
            target = last["steps"] + log_interval
            if evaluation is not None:
                target = min(target, evaluation.next_at(trainer.env_steps))
            trainer.advance(target, stop)
            stopping = agree(stop.requested)
            due = checkpointer.due(trainer.env_steps)
            returns = evaluate()
            with trainer.paused() if due else contextlib.nullcontext(False) as consistent:
                rows = trainer.log_rows()
                divergence = trainer.divergence()
                if rows:
                    if divergence is None:
                        attach(rows, returns)
                    record(rows)
                if divergence is not None:
                    break
                if consistent:
                    save()
            if stop_when_solved and all(s is not None for s in clock.solved_env_steps):
                break
    finally:
        trainer.stop()
    returns = evaluate() if divergence is None else None
    rows = trainer.log_rows()  # what the last log point missed (A3C's final rollouts)
    if rows:
        attach(rows, returns)
        record(rows)
    failure = trainer.failure()
    if failure is not None:
        raise failure
    divergence = divergence or trainer.divergence()
    if divergence is not None:
        divergence.last_checkpoint_env_steps = checkpointer.last_env_steps
    else:
        save(final=True)  # the final (or interrupted) state, to resume or extend from
    params, obs_stats = trainer.policy()
    return TrainResult(params, obs_stats, trainer.env_steps, compile_seconds, clock.seconds(),
                       clock.rates, clock.solved_env_steps, clock.solved_wall_seconds,
                       interrupted=stopping and not trainer.finished and divergence is None,
                       diverged=divergence, extra=trainer.summary())
