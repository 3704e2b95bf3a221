"""The benchmark's results as one typed record (`bench.json`), the printed table and the plot."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from jaxac.bench.a2c import A2CRow, DefaultLayoutRow, DeviceRow, OneCoreRow, SplitRow
from jaxac.bench.a3c import A3CRow, CallCost, CeilingRow
from jaxac.bench.distributed import DistributedRow
from jaxac.bench.ray_a3c import RayFloor, RayRow, server_capacity
from jaxac.bench.trackers import TrackerRow
from jaxac.bench.roofline import ROLLOUT
from jaxac.bench.sb3 import SB3Result
from jaxac.bench.solve import SolveResult
from jaxac.bench.timing import Spread
from jaxac.config import UPDATE_MODES


@dataclass
class Matmul:
    matrix_size: int
    median: float
    min: float
    max: float
    n: int
    values: list[float]


@dataclass
class BenchResults:
    """Everything one `python -m jaxac.bench` run measured (the sections it ran; others empty)."""

    machine: str
    cpu_cores: int
    repeats: int
    environment: dict
    args: dict
    matmul: Matmul | None = None
    a2c: list[A2CRow] = field(default_factory=list)
    a2c_devices: list[DeviceRow] = field(default_factory=list)
    a2c_split: list[SplitRow] = field(default_factory=list)
    a2c_one_core: list[OneCoreRow] = field(default_factory=list)
    a2c_default: list[DefaultLayoutRow] = field(default_factory=list)
    a3c: list[A3CRow] = field(default_factory=list)
    a3c_ceiling: list[CeilingRow] = field(default_factory=list)
    a3c_floor: dict[str, CallCost] = field(default_factory=dict)
    solve: list[SolveResult] = field(default_factory=list)
    distributed: list[DistributedRow] = field(default_factory=list)
    ray: list[RayRow] = field(default_factory=list)
    ray_floor: RayFloor | None = None
    trackers: list[TrackerRow] = field(default_factory=list)
    sb3: SB3Result | None = None


def _fmt_spread(s: Spread, digits: int = 0) -> str:
    return f"{s.median:,.{digits}f} [{s.min:,.{digits}f}-{s.max:,.{digits}f}]"


def _split_table(rate_title: str, ratio_title: str, rows: list) -> list[str]:
    """The header and rows of a table of A2C splits: (row, its env steps/s, its ratio) each."""
    lines = [f"{'env':<18}{'workers':>7}  {rate_title:<32}{'CPU cores':>10}{'matmul GFLOP/s':>16}"
             f"{'FLOP-bound fraction':>21}{ratio_title:>12}"]
    for r, rate, ratio in rows:
        lines.append(f"{r.env:<18}{r.workers:>7}  "
                     f"{_fmt_spread(rate):<32}{r.cores_used.median:>10.2f}"
                     f"{r.matmul_flops_per_second.median / 1e9:>16,.1f}"
                     f"{r.fraction_of_flop_bound:>21.1%}{ratio:>11.2f}x")
    return lines


def report(results: BenchResults) -> str:
    """The human-readable table."""
    cores = results.cpu_cores or os.cpu_count() or 1  # of the measuring machine
    lines = [f"jaxac benchmark, {results.machine}",
             f"median [min-max] of {results.repeats} repeats", ""]
    if results.matmul is not None:
        m = results.matmul
        lines.append(f"matrix multiply ({m.matrix_size}x{m.matrix_size} float32): "
                     f"{m.median / 1e9:,.1f} GFLOP/s [{m.min / 1e9:,.1f}-"
                     f"{m.max / 1e9:,.1f}] at the start; each A2C row's limit uses the "
                     f"rate measured between its own training repeats (matmul column)")
    if results.a2c:
        lines += ["", "A2C (rollout_length 5)",
                  f"{'env':<16}{'workers':>8}{'compile s':>10}  {'train steps/s':<30}"
                  f"{'matmul GFLOP/s':>15}{'FLOP-bound':>12}{'fraction':>9}  "
                  f"{'inference steps/s':<32}{'network passes steps/s':<32}{'fraction':>8}"]
        for r in results.a2c:
            lines.append(f"{r.env:<16}{r.workers:>8}{r.compile_seconds:>10.1f}  "
                         f"{_fmt_spread(r.train_steps_per_second):<30}"
                         f"{r.matmul_flops_per_second.median / 1e9:>15,.1f}"
                         f"{r.flop_bound_steps_per_second:>12,.0f}"
                         f"{r.fraction_of_flop_bound:>9.1%}  "
                         f"{_fmt_spread(r.inference_steps_per_second):<32}"
                         f"{_fmt_spread(r.network_pass_steps_per_second):<32}"
                         f"{r.network_pass_fraction_of_flop_bound:>8.1%}")
        lines.append("network passes: the update's forward and backward passes alone (no env, "
                     "sampling, loss terms or optimizer), the most the trainer could reach with "
                     "everything else free")
    if results.a2c_one_core:
        lines += ["", "A2C on one core: the A2C rows with XLA's CPU thread pools sized to "
                      "one thread (PJRT_NPROC=1, a child process)",
                  f"{'env':<18}{'workers':>7}  {'train steps/s':<30}{'CPU cores':>10}{'matmul GFLOP/s':>16}"
                  f"{'fraction':>10}{f'{cores} cores / 1':>14}{'bound':>8}  "
                  f"{'network passes steps/s':<32}{'fraction':>8}{f'{cores} cores / 1':>14}"]
        for r in results.a2c_one_core:
            lines.append(f"{r.env:<18}{r.workers:>7}  "
                         f"{_fmt_spread(r.train_steps_per_second):<30}"
                         f"{r.cores_used.median:>10.2f}"
                         f"{r.matmul_flops_per_second.median / 1e9:>16,.1f}"
                         f"{r.fraction_of_one_core_flop_bound:>10.1%}"
                         f"{r.all_cores_speedup:>13.2f}x"
                         f"{r.most_with_linear_scaling:>8.1%}  "
                         f"{_fmt_spread(r.network_pass_steps_per_second):<32}"
                         f"{r.network_pass_fraction_of_one_core_flop_bound:>8.1%}"
                         f"{r.network_pass_all_cores_speedup:>13.2f}x")
        lines.append(f"fraction: of one core's FLOP-bound limit; {cores} cores / 1: the A2C row's "
                     f"speedup over one core; bound: the most the A2C row's fraction could be if "
                     f"{cores} cores multiplied the one-core rate by {cores}; network passes: as "
                     f"in the A2C table, on one core")
    if results.a2c_devices:
        lines += ["", f"A2C on {cores} CPU devices: the A2C rows with the batch split over "
                      f"one CPU device per core (devices={cores}, a child process), one "
                      f"all-reduce per update"]
        lines += _split_table("train steps/s", "/ 1 device", [
            (r, r.train_steps_per_second, r.over_one_device) for r in results.a2c_devices])
    if results.a2c_split:
        lines += ["", f"A2C split ceiling: each CartPole-v1 batch as {cores} independent trainers "
                      f"of workers/{cores}, one per thread, that never exchange gradients"]
        lines += _split_table("env steps/s, together", "/ training", [
            (r, r.steps_per_second, r.over_training) for r in results.a2c_split])
        lines.append("a synchronous A2C split over the cores does this work and more (one "
                     "gradient from the whole batch per update): these rates are its ceiling")
    if results.a2c_default:
        lines += ["", "A2C default layout: what python -m jaxac.run picks for each row (devices and "
                      "xla_cpu_threads unset) against the fastest layout measured",
                  f"{'env':<18}{'workers':>8}  {'default':<20}{'steps/s':>12}  {'best':<20}"
                  f"{'steps/s':>12}{'default / best':>16}"]
        for r in results.a2c_default:
            lines.append(f"{r.env:<18}{r.workers:>8}  {r.default:<20}"
                         f"{r.default_steps_per_second:>12,.0f}  {r.best:<20}"
                         f"{r.best_steps_per_second:>12,.0f}{r.default_over_best:>15.2f}x")
    if results.a3c:
        lines += ["", "A3C (CartPole-v1, 1 env per worker, rollout_length 5)",
                  f"{'update':<9}{'workers':>8}  {'env steps/s':<28}{'updates/s':<26}"
                  f"{'staleness':>9}  {'CPU cores used':<20}{'CPU µs/update':>13}"]
        for r in results.a3c:
            lines.append(f"{r.update:<9}{r.workers:>8}  "
                         f"{_fmt_spread(r.steps_per_second):<28}"
                         f"{_fmt_spread(r.updates_per_second):<26}"
                         f"{r.staleness_mean.median:>9.2f}  "
                         f"{_fmt_spread(r.cores_used, 2):<20}"
                         f"{r.cpu_us_per_update.median:>13,.0f}")
        single = [r for r in results.a3c if r.workers == 1]
        if single:  # a second worker can only use the CPU the first one leaves idle
            used = single[0].cores_used.median
            lines.append(f"one worker already uses {used:.2f} of {cores} cores: more workers can "
                         f"give at most {cores / used:.2f}x its steps/s at the same CPU cost "
                         f"per update")
    if results.a3c_ceiling:
        ceiling = results.a3c_ceiling
        variants = {"rollout_and_gradient": "rollout+gradient calls only",
                    "with_optimizer_step": "+ optimizer step (whole updates)"}
        columns = f"{'env steps/s':<24}{'CPU cores':<18}{'CPU µs/update':>14}  "
        lines += ["", "A3C ceiling: threads that only do a worker's XLA work (no parameter "
                      "server, no lock, no bookkeeping)",
                  " " * 9 + "".join(f"{title:<58}" for title in variants.values()),
                  f"{'threads':>7}  " + columns * len(variants)]
        for r in ceiling:
            lines.append(f"{r.workers:>7}  " + "".join(
                f"{_fmt_spread(getattr(r, v).steps_per_second):<24}"
                f"{_fmt_spread(getattr(r, v).cores_used, 2):<18}"
                f"{getattr(r, v).cpu_us_per_update.median:>14,.0f}  " for v in variants))
        cheapest = min(r.rollout_and_gradient.cpu_us_per_update.median for r in ceiling)
        lines.append(f"at its cheapest ({cheapest:,.0f} CPU µs per {ROLLOUT}-step call) the "
                     f"rollout+gradient alone caps this machine's {cores} cores at "
                     f"{cores / cheapest * 1e6 * ROLLOUT:,.0f} env steps/s")
        full = {r.workers: r.with_optimizer_step.steps_per_second.median
                for r in ceiling}
        best, most = max(full, key=full.get), max(full)
        line = f"whole updates top out at {full[best]:,.0f} env steps/s ({best} threads"
        line += ")" if best == most else f"; {most} threads: {full[most]:,.0f})"
        if 1 in full and 2 in full:
            line += f"; 2 threads give {full[2] / full[1]:.2f}x 1 thread"
        lines.append(line + " (one optimizer call per update: locked mode, which applies the "
                     "updates that wait in batches, can do better)")
    if results.a3c_floor:
        floor = results.a3c_floor
        lines += ["", "A3C call floor: a worker's two calls, one thread, with and without their "
                      "math (hollow: same arguments and result shapes, zeros out)",
                  f"{'call':<29}{'CPU µs/call':<26}{'wall µs/call':<26}"]
        for name, r in floor.items():
            lines.append(f"{name:<29}{_fmt_spread(r.cpu_us_per_call):<26}"
                         f"{_fmt_spread(r.wall_us_per_call):<26}")
        calls = ("rollout_and_gradient", "optimizer_step")
        total = sum(floor[c].cpu_us_per_call.median for c in calls)
        fixed = sum(floor[f"{c}_hollow"].cpu_us_per_call.median for c in calls)
        lines.append(f"an update's two calls cost {total:,.0f} CPU µs: XLA's fixed cost is "
                     f"{fixed:,.0f} of it, the math (a few hundred small kernels) the other "
                     f"{total - fixed:,.0f}")
    if results.solve:
        lines += ["", "Time to solve CartPole-v1 (last-100 mean >= 475), default presets",
                  f"{'algo':<6}{'cache':<7}{'solved':>7}  {'env steps':<30}"
                  f"{'wall s (compile incl.)':<26}{'compile s':<20}"]
        for r in results.solve:
            for phase in ("cold", "warm"):
                p = getattr(r, phase)
                if p.env_steps is None:
                    lines.append(f"{r.algo:<6}{phase:<7}{p.solved:>7}")
                    continue
                lines.append(f"{r.algo:<6}{phase:<7}{p.solved:>7}  "
                             f"{_fmt_spread(p.env_steps):<30}"
                             f"{_fmt_spread(p.train_seconds, 1):<26}"
                             f"{_fmt_spread(p.compile_seconds, 1):<20}")
    if results.distributed:
        lines += ["", "A2C on CartPole-v1 beyond one process: 2 processes x 1 CPU device "
                      "(jax.distributed on loopback, gloo) against 1 process x 2 CPU devices",
                  f"{'workers':<9}{'1 process steps/s':<30}{'2 processes steps/s':<30}"
                  f"{'2 / 1':>6}"]
        for r in results.distributed:
            lines.append(f"{r.workers:<9}{_fmt_spread(r.one_process):<30}"
                         f"{_fmt_spread(r.two_processes):<30}{r.ratio:>6.2f}")
    if results.trackers:
        lines += ["", "A2C on CartPole-v1 at 8 workers, whole runs, with each experiment tracker "
                      "(median interval steps/s; the trackers write from their own thread)",
                  f"{'logger':<13}{'steps/s':<30}{'/ none':>7}"]
        for r in results.trackers:
            lines.append(f"{r.logger:<13}{_fmt_spread(r.steps_per_second):<30}{r.ratio:>7.3f}")
    if results.ray:
        lines += ["", "A3C on CartPole-v1 on Ray (algo.backend=ray, a local instance) against the "
                      "thread backend, same runs alternated",
                  f"{'workers':<9}{'threads steps/s':<26}{'Ray steps/s':<24}{'Ray / threads':>14}"
                  f"  {'updates/s threads | Ray':<26}{'staleness threads | Ray':<25}"
                  f"{'server us/update':<24}{'per batch':>10}"]
        for r in results.ray:
            ratio = r.ray_steps_per_second.median / r.threads_steps_per_second.median
            lines.append(f"{r.workers:<9}{_fmt_spread(r.threads_steps_per_second):<26}"
                         f"{_fmt_spread(r.ray_steps_per_second):<24}{ratio:>14.3f}  "
                         f"{r.threads_updates_per_second.median:>9,.0f} | "
                         f"{r.ray_updates_per_second.median:<14,.0f}"
                         f"{r.threads_staleness_mean.median:>9.2f} | "
                         f"{r.ray_staleness_mean.median:<13.2f}"
                         f"{_fmt_spread(r.server_us_per_update):<24}"
                         f"{r.updates_per_batch.median:>10.2f}")
        r = results.ray[-1]
        lines.append(f"bytes per update: {r.bytes_in_per_update.median:,.0f} in (gradient "
                     f"result and environments), {r.bytes_out_per_update.median:,.0f} out "
                     "(snapshot puts, one per applied batch)")
        if results.ray_floor:
            f = results.ray_floor
            lines.append(f"Ray's fixed costs: an empty actor call {_fmt_spread(f.call_us)} us "
                         f"round trip; a {f.snapshot_bytes:,}-byte snapshot: put "
                         f"{_fmt_spread(f.put_us)} us, get in another process "
                         f"{_fmt_spread(f.get_us)} us")
        capacity = server_capacity(results.ray)
        if capacity:
            lines.append(f"one server at {capacity[0]:,.0f} us per update (the least measured) "
                         f"applies at most {capacity[1]:,.0f} updates/s: about "
                         f"{capacity[2]:,.0f} workers at the 1-worker rate")
    if results.sb3:
        s = results.sb3
        lines += ["", f"Stable-Baselines3 {s.version} A2C (torch {s.torch}), "
                      "CartPole-v1, 8 envs x 5 steps, RMSprop 7e-4",
                  f"steps/s {_fmt_spread(s.steps_per_second)}; solved "
                  f"{s.solve.solved}; wall s to solve {_fmt_spread(s.solve.train_seconds, 1)}"
                  if s.solve.train_seconds else f"steps/s {_fmt_spread(s.steps_per_second)}"]
        for name, value in s.ratios.items():
            lines.append(f"  {name}: {value:,.1f}x")
    return "\n".join(lines)


def _errorbar(ax, x: list, spreads: list[Spread], **style) -> None:
    """Medians with min-max error bars."""
    med = [s.median for s in spreads]
    err = [[m - s.min for m, s in zip(med, spreads)],
           [s.max - m for m, s in zip(med, spreads)]]
    ax.errorbar(x, med, yerr=err, capsize=3, **style)


def plot(results: BenchResults, path: Path) -> None:
    """Training, inference and FLOP-bound steps/s against batch size (A2C), and A3C scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=100)
    ax = axes[0]
    for i, env in enumerate(sorted({r.env for r in results.a2c})):
        rows = [r for r in results.a2c if r.env == env]
        w = [r.workers for r in rows]
        for key, style, label in (("train_steps_per_second", "-o", "training"),
                                  ("inference_steps_per_second", "--s", "inference only"),
                                  ("network_pass_steps_per_second", "-.d", "network passes only")):
            _errorbar(ax, w, [getattr(r, key) for r in rows], fmt=style, color=f"C{i}",
                      label=f"{env}: {label}")
        ax.plot(w, [r.flop_bound_steps_per_second for r in rows], ":", color=f"C{i}",
                label=f"{env}: FLOP-bound limit")
    envs = sorted({r.env for r in results.a2c})
    for i, env in enumerate(envs):
        one_core = [r for r in results.a2c_one_core if r.env == env]
        if one_core:
            _errorbar(ax, [r.workers for r in one_core],
                      [r.train_steps_per_second for r in one_core], fmt=":o", color=f"C{i}",
                      alpha=0.6, label=f"{env}: training on one core")
        on_devices = [r for r in results.a2c_devices if r.env == env]
        if on_devices:
            _errorbar(ax, [r.workers for r in on_devices],
                      [r.train_steps_per_second for r in on_devices], fmt="-^", color=f"C{i}",
                      alpha=0.6, label=f"{env}: training on {on_devices[0].devices} CPU devices")
    split = results.a2c_split
    if split:
        _errorbar(ax, [r.workers for r in split], [r.steps_per_second for r in split],
                  fmt="-x", color="black",
                  label=f"CartPole-v1: split ceiling ({split[0].parts} independent trainers)")
    ax.set(xscale="log", yscale="log", xlabel="workers (environments)", ylabel="env steps / s",
           title="A2C")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[1]
    for i, mode in enumerate(UPDATE_MODES):
        rows = [r for r in results.a3c if r.update == mode]
        if rows:
            _errorbar(ax, [r.workers for r in rows], [r.steps_per_second for r in rows],
                      fmt="-o", color=f"C{i}", label=mode)
    ceiling = results.a3c_ceiling
    if ceiling:
        workers = [r.workers for r in ceiling]
        _errorbar(ax, workers, [r.rollout_and_gradient.steps_per_second for r in ceiling],
                  fmt=":^", color="grey", label="ceiling: rollout+gradient calls only")
        _errorbar(ax, workers, [r.with_optimizer_step.steps_per_second for r in ceiling],
                  fmt=":v", color="black", label="ceiling: whole updates (+ optimizer step)")
    ax.set(xlabel="workers (threads)", ylabel="env steps / s", title="A3C on CartPole-v1")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    if results.a3c:
        ax.legend(fontsize=8)
    fig.suptitle(results.machine, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


