"""The A2C sections: training throughput against the FLOP-bound limit, and the same CartPole-v1
rows on one XLA thread, split over one CPU device per core, and as independent trainers per core
(the split ceiling).

`python -m jaxac.bench.a2c {one_core,devices} --workers 8,64 --repeats R --seconds S
[--devices D]` measures the first two in the process it starts, whose XLA settings (thread
pools, CPU devices) its parent chose; it prints the rows as JSON on its last line."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import jax

from jaxac import a2c
from jaxac.bench.roofline import (ROLLOUT, FlopCount, default_matmul_size, flop_bound_fraction,
                                  inference_rates, matmul_timer, network_pass_rates,
                                  training_flops_per_step)
from jaxac.bench.solve import SB3_SETTINGS
from jaxac.bench.timing import (Spread, in_child_process, run_in_threads, spread, step_rates,
                                to_json)
from jaxac.checkpoint import network_from_config
from jaxac.config import compose_config
from jaxac.envs import make_env
from jaxac.platform import (DEVICE_COUNT_FLAG, THREADS_VARIABLE, XLA_FLAGS, choose_layout,
                            xla_cpu_threads, xla_flags_without)

SIZES = {"cartpole": (8, 64, 512, 4096), "breakout": (64, 512)}


@dataclass
class A2CRow:
    """One A2C batch size: training, acting only and network passes only, against the limit."""

    env: str
    preset: str  # conf/env/<preset>.yaml
    workers: int
    compile_seconds: float
    train_steps_per_second: Spread
    inference_steps_per_second: Spread
    network_pass_steps_per_second: Spread
    matmul_flops_per_second: Spread  # measured between the training repeats
    flops: FlopCount
    flop_bound_steps_per_second: float
    fraction_of_flop_bound: float
    network_pass_fraction_of_flop_bound: float


@dataclass
class OneCoreRow:
    """An A2C row on one XLA thread (measured in a child process), and what it says about the
    all-core row (filled in by `one_core`)."""

    env: str
    workers: int
    train_steps_per_second: Spread
    matmul_flops_per_second: Spread
    cores_used: Spread
    network_pass_steps_per_second: Spread
    xla_cpu_threads: int | None
    fraction_of_one_core_flop_bound: float = 0.0
    all_cores_speedup: float = 0.0
    most_with_linear_scaling: float = 0.0
    network_pass_fraction_of_one_core_flop_bound: float = 0.0
    network_pass_all_cores_speedup: float = 0.0


@dataclass
class DeviceRow:
    """An A2C row split over `devices` CPU devices (a child process)."""

    env: str
    workers: int
    devices: int
    train_steps_per_second: Spread
    matmul_flops_per_second: Spread
    cores_used: Spread
    fraction_of_flop_bound: float = 0.0
    over_one_device: float = 0.0


@dataclass
class SplitRow:
    """`parts` independent trainers of workers / parts environments, one per thread."""

    env: str
    workers: int
    parts: int
    steps_per_second: Spread
    matmul_flops_per_second: Spread
    cores_used: Spread
    fraction_of_flop_bound: float
    over_training: float


@dataclass
class DefaultLayoutRow:
    """The layout `python -m jaxac.run` picks for an A2C row (`platform.choose_layout`) against
    the fastest of the layouts measured: one device (XLA's threads), one device on one thread,
    one CPU device per core."""

    env: str
    workers: int
    default: str
    default_steps_per_second: float
    best: str
    best_steps_per_second: float
    default_over_best: float


@dataclass
class Training:
    """What `training_rates` measured, with the config and network it built."""

    cfg: object
    spec: object
    network: object
    compile_seconds: float
    rates: list[float]
    matmul: list[float]
    cores: list[float] = field(default_factory=list)


def settings(env: str) -> list[str]:
    """The learner settings the bench trains `env` with: SB3's on CartPole (the comparison with
    SB3 needs them), the preset's elsewhere."""
    return SB3_SETTINGS if env == "cartpole" else []


def training_rates(env: str, workers: int, repeats: int, seconds: float,
                   matmul_rate: Callable[[], float], devices: int = 1) -> Training:
    """Train A2C at one batch size, its batch split over `devices` devices, and measure it:
    training env steps/s per repeat, the matrix-multiply rate measured before each repeat, and
    the CPU cores the training used (process CPU time / wall time)."""
    cfg = compose_config([f"env={env}", *settings(env), f"workers={workers}",
                          f"rollout_length={ROLLOUT}", f"devices={devices}",
                          "compilation_cache_dir=null"])
    spec = make_env(cfg.env.name)
    network = network_from_config(cfg, spec)
    learner = a2c.build_learner(cfg, spec, network, jax.devices()[:devices])
    state = learner.init_state(0)
    compile_seconds = learner.compile(state)
    holder = {"state": state}

    def train(n: int) -> int:
        holder["state"], _ = learner.run_updates(holder["state"], n)  # fetches metrics: synced
        return n * learner.steps_per_update

    rates, cores, matmul = step_rates(train, repeats, seconds, before_each=matmul_rate)
    return Training(cfg, spec, network, compile_seconds, rates, matmul, cores)


def throughput(env: str, workers: int, repeats: int, seconds: float,
               matmul_rate: Callable[[], float]) -> A2CRow:
    """Steady-state training and inference env steps/s of A2C at one batch size, and the fraction
    of the FLOP-bound limit. `matmul_rate()` is measured between the training repeats, so that
    the limit and the training see the same machine (a shared VM's speed drifts within minutes)."""
    t = training_rates(env, workers, repeats, seconds, matmul_rate)
    inference = inference_rates(t.cfg, t.spec, t.network, workers, repeats, seconds)
    passes, pass_flops = network_pass_rates(t.cfg, t.spec, t.network, workers, repeats, seconds)
    flop = training_flops_per_step(t.cfg, t.spec, t.network, workers)
    flop.network_passes_per_step = pass_flops
    limit = statistics.median(t.matmul) / flop.total_per_step
    return A2CRow(t.cfg.env.name, env, workers, t.compile_seconds, spread(t.rates), spread(inference),
                  spread(passes), spread(t.matmul), flop, limit,
                  statistics.median(t.rates) / limit, statistics.median(passes) / limit)


def _rows_by_env(rows: list[A2CRow], divisible_by: int = 1) -> dict[str, list[int]]:
    """preset -> the batch sizes of its rows whose workers divide by `divisible_by`."""
    out: dict[str, list[int]] = {}
    for r in rows:
        if r.workers % divisible_by == 0:
            out.setdefault(r.preset, []).append(r.workers)
    return out


def _row(rows: list[A2CRow], env: str, workers: int) -> A2CRow:
    return next(r for r in rows if r.env == env and r.workers == workers)


# ----- on one core --------------------------------------------------------------------------------

def one_core_rates(preset: str, workers_list: Sequence[int], repeats: int, seconds: float
                   ) -> list[OneCoreRow]:
    """Rows (training, matmul rate, cores used, network passes) in this process as it is:
    `one_core` runs it in a process whose XLA thread pools have one thread."""
    matmul_rate = matmul_timer(default_matmul_size())
    rows = []
    for workers in workers_list:
        t = training_rates(preset, workers, repeats, seconds, matmul_rate)
        passes, _ = network_pass_rates(t.cfg, t.spec, t.network, workers, repeats, seconds)
        rows.append(OneCoreRow(t.cfg.env.name, workers, spread(t.rates), spread(t.matmul),
                               spread(t.cores), spread(passes), xla_cpu_threads()))
    return rows


def one_core(a2c_rows: list[A2CRow], repeats: int, seconds: float) -> list[OneCoreRow]:
    """The A2C rows again on one XLA thread (a child process per preset with PJRT_NPROC=1): what
    the machine's other cores add.

    Each row gets the one-core fraction of the one-core FLOP-bound limit and the speedup of the
    all-core row over it. If more cores could at best multiply the one-core throughput by their
    number, the all-core fraction could not exceed the one-core fraction times
    `cores * one-core matmul rate / all-core matmul rate` (`most_with_linear_scaling`). The
    network passes alone get the same two figures.
    """
    measured = []
    for preset, workers in _rows_by_env(a2c_rows).items():
        measured += in_child_process(__name__, _child_args("one_core", preset, workers, repeats,
                                                           seconds),
                                     {THREADS_VARIABLE: "1"}, "the one-core A2C measurement",
                                     list[OneCoreRow])
    cores = os.cpu_count() or 1
    for one in measured:
        full = _row(a2c_rows, one.env, one.workers)
        flops_per_step = full.flops.total_per_step
        one_matmul = one.matmul_flops_per_second.median
        one.fraction_of_one_core_flop_bound = flop_bound_fraction(
            one.train_steps_per_second.median, flops_per_step, one_matmul)
        one.all_cores_speedup = (full.train_steps_per_second.median
                                 / one.train_steps_per_second.median)
        one.most_with_linear_scaling = (one.fraction_of_one_core_flop_bound * cores * one_matmul
                                        / full.matmul_flops_per_second.median)
        one_passes = one.network_pass_steps_per_second.median
        one.network_pass_fraction_of_one_core_flop_bound = flop_bound_fraction(
            one_passes, flops_per_step, one_matmul)
        one.network_pass_all_cores_speedup = (full.network_pass_steps_per_second.median
                                              / one_passes)
    return measured


# ----- split over the cores -----------------------------------------------------------------------

def device_rates(preset: str, workers_list: Sequence[int], devices: int, repeats: int,
                 seconds: float) -> list[DeviceRow]:
    """Rows with the batch split over `devices` devices, in this process: `on_cpu_devices` runs
    it in a process with one CPU device per core."""
    matmul_rate = matmul_timer(default_matmul_size())
    rows = []
    for workers in workers_list:
        t = training_rates(preset, workers, repeats, seconds, matmul_rate, devices=devices)
        rows.append(DeviceRow(t.cfg.env.name, workers, len(jax.devices()[:devices]),
                              spread(t.rates), spread(t.matmul), spread(t.cores)))
    return rows


def on_cpu_devices(a2c_rows: list[A2CRow], repeats: int, seconds: float) -> list[DeviceRow]:
    """The A2C rows again with the batch split over one CPU device per core (`devices=<cores>`,
    in a child process per preset that XLA starts with that many CPU devices), with the
    fraction of the row's FLOP-bound limit and the ratio to the one-device row."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return []
    flags = f"{xla_flags_without(DEVICE_COUNT_FLAG)} {DEVICE_COUNT_FLAG}={cores}".strip()
    measured = []
    for preset, workers in _rows_by_env(a2c_rows, divisible_by=cores).items():
        measured += in_child_process(__name__, _child_args("devices", preset, workers, repeats,
                                                           seconds, cores),
                                     {XLA_FLAGS: flags}, "the A2C measurement on CPU devices",
                                     list[DeviceRow])
    for split in measured:
        one = _row(a2c_rows, split.env, split.workers)
        rate = split.train_steps_per_second.median
        split.fraction_of_flop_bound = flop_bound_fraction(
            rate, one.flops.total_per_step, split.matmul_flops_per_second.median)
        split.over_one_device = rate / one.train_steps_per_second.median
    return measured


def default_layouts(a2c_rows: list[A2CRow], one_core_rows: list[OneCoreRow],
                    device_rows: list[DeviceRow]) -> list[DefaultLayoutRow]:
    """For each A2C row: the layout `python -m jaxac.run` picks on this machine for it (no
    `devices` or `xla_cpu_threads` given, one seed) and the fastest layout measured, with their
    ratio."""
    cores = os.cpu_count() or 1
    rows = []
    for row in a2c_rows:
        measured = {"1 device": row.train_steps_per_second.median}
        for one in one_core_rows:
            if (one.env, one.workers) == (row.env, row.workers):
                measured["1 device, 1 thread"] = one.train_steps_per_second.median
        for split in device_rows:
            if (split.env, split.workers) == (row.env, row.workers):
                measured[f"{split.devices} CPU devices"] = split.train_steps_per_second.median
        layout = choose_layout("a2c", row.workers, 1, None, None, cores)
        default = (f"{layout.cpu_devices} CPU devices" if (layout.cpu_devices or 1) > 1
                   else "1 device, 1 thread" if layout.xla_cpu_threads == 1 else "1 device")
        if not layout.automatic or default not in measured:  # nothing to compare it with
            continue
        best = max(measured, key=measured.get)
        rows.append(DefaultLayoutRow(row.env, row.workers, default, measured[default], best,
                                     measured[best], measured[default] / measured[best]))
    return rows


def split_ceiling(a2c_rows: list[A2CRow], repeats: int, seconds: float,
                  matmul_rate: Callable[[], float]) -> list[SplitRow]:
    """The most a data-parallel split of an A2C batch over this machine's cores could reach.

    For each CartPole-v1 row whose workers divide evenly, `cores` independent A2C trainers of
    workers / cores environments each train at once, one per Python thread (jaxac runs CPU
    computations in the thread that calls them), and never exchange gradients. A synchronous
    split does all of this work and more, so its env steps/s can be at most theirs together.
    """
    cores = os.cpu_count() or 1
    rows = []
    cartpole = [r for r in a2c_rows if r.env == "CartPole-v1" and r.workers % cores == 0]
    for full in cartpole if cores > 1 else []:
        workers = full.workers
        cfg = compose_config(["env=cartpole", *settings("cartpole"), f"workers={workers // cores}",
                              f"rollout_length={ROLLOUT}", "compilation_cache_dir=null"])
        spec = make_env(cfg.env.name)
        network = network_from_config(cfg, spec)
        learners = [a2c.build_learner(cfg, spec, network, jax.devices()[:1])
                    for _ in range(cores)]
        states = [learner.init_state(i) for i, learner in enumerate(learners)]
        for learner, state in zip(learners, states):
            learner.compile(state)

        def train_all(n: int) -> int:
            start = threading.Barrier(cores)

            def train_one(i: int) -> None:
                start.wait()
                states[i], _ = learners[i].run_updates(states[i], n)  # fetches metrics: synced

            run_in_threads(train_one, cores)
            return n * cores * learners[0].steps_per_update

        rates, cores_used, matmul = step_rates(train_all, repeats, seconds,
                                               before_each=matmul_rate)
        rate = statistics.median(rates)
        rows.append(SplitRow(full.env, workers, cores, spread(rates), spread(matmul),
                             spread(cores_used),
                             flop_bound_fraction(rate, full.flops.total_per_step,
                                                 statistics.median(matmul)),
                             rate / full.train_steps_per_second.median))
    return rows


# ----- the child processes ------------------------------------------------------------------------

def _child_args(section: str, preset: str, workers: list[int], repeats: int, seconds: float,
                devices: int = 1) -> list[str]:
    return [section, "--env", preset, "--workers", ",".join(map(str, workers)),
            "--repeats", str(repeats), "--seconds", str(seconds), "--devices", str(devices)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jaxac.bench.a2c")
    parser.add_argument("section", choices=("one_core", "devices"))
    parser.add_argument("--env", default="cartpole", help="an env preset (conf/env/)")
    parser.add_argument("--workers", required=True, help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args(argv)
    from jaxac import platform

    platform.set_up()  # with the thread and device counts the parent put in the environment
    workers = [int(w) for w in args.workers.split(",")]
    rows = (one_core_rates(args.env, workers, args.repeats, args.seconds)
            if args.section == "one_core"
            else device_rates(args.env, workers, args.devices, args.repeats, args.seconds))
    print(json.dumps(to_json(rows)))


if __name__ == "__main__":
    main()
