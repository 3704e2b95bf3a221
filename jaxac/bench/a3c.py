"""The A3C sections: throughput and staleness by worker count in both update modes, the ceiling
of threads doing only a worker's XLA work, and XLA's fixed cost per call (the floor). They
measure through A3C's public entry points (`a3c.make_trainer`, `a3c.UpdateCalls`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxac import a3c
from jaxac.bench.roofline import ROLLOUT
from jaxac.bench.timing import Spread, calibrate, cpu_and_wall_seconds, run_in_threads, spread, \
    step_rates
from jaxac.checkpoint import network_from_config
from jaxac.config import compose_config
from jaxac.envs import make_env

WORKERS = (1, 2, 4, 8, 16)


@dataclass
class A3CRow:
    """One worker count in one update mode, over the repeats."""

    workers: int
    update: str
    steps_per_second: Spread
    updates_per_second: Spread
    staleness_mean: Spread
    cores_used: Spread
    cpu_us_per_update: Spread


@dataclass
class CeilingVariant:
    steps_per_second: Spread
    cores_used: Spread
    cpu_us_per_update: Spread


@dataclass
class CeilingRow:
    """Threads that only do a worker's XLA work: the rollout-and-gradient call alone, and with
    the optimizer step (whole updates, one optimizer call each)."""

    workers: int
    rollout_and_gradient: CeilingVariant
    with_optimizer_step: CeilingVariant


@dataclass
class CallCost:
    cpu_us_per_call: Spread
    wall_us_per_call: Spread


def compiled_trainer(workers: int, *overrides: str) -> a3c.A3CTrainer:
    """An A3C trainer on CartPole-v1 (rollout_length 5, no compilation cache), compiled, its
    workers not yet started."""
    cfg = compose_config(["algo=a3c", f"workers={workers}", f"rollout_length={ROLLOUT}",
                          "compilation_cache_dir=null", *overrides])
    spec = make_env(cfg.env.name)
    trainer = a3c.make_trainer(cfg, spec, network_from_config(cfg, spec), jax.devices())
    trainer.compile()
    return trainer


def throughput(worker_counts: Sequence[int], mode: str, repeats: int,
               total_steps: int) -> list[A3CRow]:
    """A3C env steps/s, updates/s and mean staleness at each worker count, over `repeats` runs
    of `total_steps` each, and the CPU the workers spent (cores used, CPU µs per update).

    Each repeat runs every worker count once, in turn, so that the ratios between worker counts
    compare runs minutes apart at most (this VM's speed drifts within minutes).
    """
    runs: dict[int, list[dict[str, float]]] = {workers: [] for workers in worker_counts}
    for r in range(repeats):
        for workers in worker_counts:
            trainer = compiled_trainer(workers, f"algo.update={mode}",
                                       f"total_steps={total_steps}", f"seed={r}")
            _, cpu, elapsed = cpu_and_wall_seconds(trainer.run_to_completion)
            records = trainer.server.drain_records()
            runs[workers].append({
                "steps_per_second": trainer.env_steps / elapsed,
                "updates_per_second": len(records) / elapsed,
                "staleness_mean": float(np.mean([rec.staleness for rec in records])),
                "cores_used": cpu / elapsed, "cpu_us_per_update": cpu / len(records) * 1e6})
    return [A3CRow(workers, mode, **{key: spread([run[key] for run in runs[workers]])
                                     for key in runs[workers][0]})
            for workers in worker_counts]


def compute_ceiling(workers: int, repeats: int, seconds: float) -> CeilingRow:
    """The most A3C env steps/s this machine gives `workers` threads that do an A3C worker's
    XLA work and nothing else: no parameter server, no lock, no bookkeeping. Not a strict bound
    for whole updates: locked mode applies the updates that wait in batches, fewer calls each."""
    calls = a3c.UpdateCalls(compiled_trainer(workers))
    def worker_work(i: int, updates: int, optimizer_step: bool) -> None:
        env_vector, state = calls.env_vectors[i], calls.snapshot
        for _ in range(updates):
            env_vector, result = calls.rollout(env_vector)
            if optimizer_step:
                state = calls.apply(state, result)
            else:
                jax.block_until_ready(result)

    variants = {}
    for variant, optimizer_step in (("rollout_and_gradient", False),
                                    ("with_optimizer_step", True)):
        def run(updates_per_thread: int, optimizer_step=optimizer_step) -> int:
            run_in_threads(lambda i: worker_work(i, updates_per_thread, optimizer_step), workers)
            return updates_per_thread * workers * ROLLOUT

        rates, cores, _ = step_rates(run, repeats, seconds)
        # CPU seconds per env step (cores / steps per second) times the steps of an update
        cpu_per_update = [c / r * ROLLOUT * 1e6 for c, r in zip(cores, rates)]
        variants[variant] = CeilingVariant(spread(rates), spread(cores), spread(cpu_per_update))
    return CeilingRow(workers, **variants)


def call_floor(repeats: int, seconds: float) -> dict[str, CallCost]:
    """XLA's fixed cost per A3C update on this machine, on one thread.

    Times the two jitted calls of an update (rollout and gradient, then locked mode's optimizer
    call on a batch of one) with the arguments the workers pass, and the same two calls with
    their math removed ("_hollow": same arguments, kept, and the same result shapes, zeros):
    what XLA's CPU runtime charges per execution whatever the network.
    """
    calls = a3c.UpdateCalls(compiled_trainer(1)).calls()

    def hollow(fn: Callable, *args) -> Callable:
        shapes = jax.eval_shape(fn, *args)
        return jax.jit(lambda *_: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                       keep_unused=True)

    for name, (fn, args) in list(calls.items()):
        calls[f"{name}_hollow"] = (hollow(fn, *args), args)
    costs = {}
    for name, (fn, args) in calls.items():
        def run(n: int, fn=fn, args=args) -> int:
            for _ in range(n):
                jax.block_until_ready(fn(*args))
            return n

        n = calibrate(run, seconds)
        cpu_us, wall_us = [], []
        for _ in range(repeats):
            _, cpu, wall = cpu_and_wall_seconds(lambda: run(n))
            cpu_us.append(cpu / n * 1e6)
            wall_us.append(wall / n * 1e6)
        costs[name] = CallCost(spread(cpu_us), spread(wall_us))
    return costs
