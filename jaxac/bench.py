"""`python -m jaxac.bench`: how fast jaxac trains, and how far that is from the machine's limit.

Measures, in one process (time-to-solve runs are subprocesses, as a user would start them, and
so are the one-core and the CPU-device A2C runs, whose thread pools and devices must be set before
JAX starts):

- A2C env steps/s on CartPole-v1 at workers 8, 64, 512, 4096 and on Breakout-MinAtar at 64 and
  512 (`rollout_length` 5), compile seconds apart from steady state;
- the FLOP-bound limit for the same work: the floating-point operations of one training env step
  (XLA's count for the rollout's forward pass plus the loss's forward and backward pass), divided
  into the matrix-multiply rate measured here, between each row's training repeats; training
  throughput as a fraction of it, the inference-only rate (policy forward + env step, no
  learning) and the rate of the update's network passes alone (forward and backward, nothing
  else: how close the trainer could come if the rest were free) at each batch size;
- the CartPole-v1 A2C rows again with XLA's CPU thread pools sized to one thread (a child
  process with PJRT_NPROC=1): what the other cores add, and the FLOP-bound fraction on one core,
  of the training and of its network passes alone;
- the CartPole-v1 A2C rows again with the batch split over one CPU device per core (a child
  process started with that many CPU devices, `devices=<cores>`), and their FLOP-bound fraction;
- the ceiling of a data-parallel split over the cores: each CartPole-v1 batch as one independent
  trainer per core, in threads, with no gradient exchange;
- A3C env steps/s and updates/s at 1, 2, 4, 8 and 16 workers in both update modes, with the mean
  staleness, the CPU they used, the most the workers' jitted calls alone reach, and XLA's fixed
  cost per update (the two calls with their math removed);
- wall seconds and env steps to solve CartPole-v1 (mean of the last 100 training episodes >= 475)
  for A2C and A3C with their default presets, median over seeds, with a cold and a warm JAX
  compilation cache;
- with `--vs sb3`, Stable-Baselines3's A2C on CartPole-v1 with matching settings (see
  `jaxac.bench_sb3`), and the ratios.

Every figure is the median of `--repeats` measurements, reported with its min and max. Results go
to `--out` (default `bench/<date>_<time>/`): `bench.json`, `bench.png`, and the printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxac import a2c, a3c, core
from jaxac.checkpoint import network_from_config
from jaxac.config import compose_config
from jaxac.cpu_dispatch import (DEVICE_COUNT_FLAG, THREADS_VARIABLE, XLA_FLAGS,
                                 xla_cpu_threads)
from jaxac.envs import make_env
from jaxac.metrics import environment_info, write_json
from jaxac.normalization import init_obs_stats

A2C_SIZES = {"cartpole": (8, 64, 512, 4096), "breakout": (64, 512)}
A3C_WORKERS = (1, 2, 4, 8, 16)
UPDATE_MODES = ("locked", "hogwild")
ROLLOUT = 5


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements (and the measurements)."""
    return {"median": float(statistics.median(values)), "min": float(min(values)),
            "max": float(max(values)), "n": len(values), "values": [float(v) for v in values]}


def timed_repeats(run: Callable[[], int], repeats: int) -> list[float]:
    """Rates (units per second) of `repeats` calls of `run`, which returns the units it did."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        units = run()
        rates.append(units / (time.perf_counter() - start))
    return rates


def cpu_and_wall_seconds(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result of `run()`, process CPU seconds it took on all threads, wall seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def calibrate(run: Callable[[int], Any], target_seconds: float, start: int = 4) -> int:
    """How many iterations `run(n)` needs to take about `target_seconds` (after a warm-up)."""
    n = start
    run(n)
    while True:
        t0 = time.perf_counter()
        run(n)
        elapsed = time.perf_counter() - t0
        if elapsed >= target_seconds / 4 or n >= 1 << 20:
            return max(1, int(n * target_seconds / max(elapsed, 1e-9)))
        n *= 4


def step_rates(run: Callable[[int], int], repeats: int, seconds: float,
               before_each: Callable[[], float] | None = None
               ) -> tuple[list[float], list[float], list[float]]:
    """Time `run(n)`, which returns the env steps it did, `repeats` times, with `n` calibrated to
    about `seconds`: (env steps/s, CPU cores used (process CPU time / wall time), and what
    `before_each()` returned just before each repeat, such as the matrix-multiply rate)."""
    n = calibrate(run, seconds)
    rates, cores, before = [], [], []
    for _ in range(repeats):
        if before_each is not None:
            before.append(before_each())
        steps, cpu, wall = cpu_and_wall_seconds(lambda: run(n))
        rates.append(steps / wall)
        cores.append(cpu / wall)
    return rates, cores, before


def run_in_threads(target: Callable[[int], Any], count: int) -> None:
    """Run `target(0)` ... `target(count - 1)` in `count` threads at once; wait for them all."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ----- the machine's limit ------------------------------------------------------------------------

def default_matmul_size() -> int:
    """Side of the square matrices the matrix-multiply rate is measured with."""
    return 8192 if jax.default_backend() == "gpu" else 1024


def matmul_timer(size: int) -> Callable[[], float]:
    """A calibrated measurement of the default device's float32 matrix-multiply rate: each call
    returns one measurement in FLOP/s (about half a second of chained multiplies)."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (size, size), jnp.float32)
    b = jax.random.normal(key_b, (size, size), jnp.float32)
    step = jax.jit(lambda x, y: (x @ y) * (1.0 / size))  # scaled to stay finite when chained

    def run(n: int):
        x = a
        for _ in range(n):
            x = step(x, b)
        x.block_until_ready()

    n = calibrate(run, 0.5, start=1)
    return lambda: timed_repeats(lambda: (run(n), 2 * size ** 3 * n)[1], 1)[0]


def flop_bound_fraction(steps_per_second: float, flops_per_step: float,
                        matmul_flops_per_second: float) -> float:
    """Training throughput as a fraction of the FLOP-bound limit: the matrix-multiply rate
    divided by the FLOPs of one training env step."""
    return steps_per_second * flops_per_step / matmul_flops_per_second


def flops(fn: Callable, *args) -> float:
    """XLA's count of the floating-point operations of `fn(*args)`, compiled."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, list):  # older JAX returns one dict per computation
        analysis = analysis[0]
    return float(analysis["flops"])


def sample_trajectory(spec, network, workers: int, normalize_obs: bool = False
                      ) -> tuple[Any, core.Trajectory]:
    """Freshly initialised parameters, and one `ROLLOUT`-step trajectory of `workers` fresh
    environments acted in with them: the inputs of a training step, to count or time it on."""
    from jaxac.envs import reset_envs

    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape))
    stats = init_obs_stats(spec.obs_shape)
    envs = reset_envs(spec, jax.random.split(jax.random.PRNGKey(1), workers))
    _, traj = jax.jit(lambda p, e: core.rollout(network.apply, p, stats, e, spec, ROLLOUT,
                                                normalize_obs))(params, envs)
    return params, traj


def training_flops_per_step(cfg, spec, network, workers: int) -> dict[str, float]:
    """FLOPs of one training env step: the rollout's policy forward pass per step, plus the
    loss's forward and backward pass over a [rollout, workers] trajectory, per env step.

    Acting needs only the policy: the rollout never evaluates the value head (XLA drops it), so
    its forward pass is counted without it, as compiled. With the MLP's separate critic stream
    that is about half the network's full forward pass."""
    from jaxac.config import loss_config

    loss = loss_config(cfg)
    stats = init_obs_stats(spec.obs_shape)
    params, traj = sample_trajectory(spec, network, workers, loss.normalize_obs)
    obs = jnp.zeros((workers,) + spec.obs_shape)
    forward = flops(lambda p, o: network.apply(p, o)[0], params, obs)  # the policy only
    backward = flops(lambda p, t: core.gradients(p, network.apply, stats, t, loss), params, traj)
    steps = ROLLOUT * workers
    return {"forward_per_step": forward / workers, "loss_and_grad_per_step": backward / steps,
            "total_per_step": forward / workers + backward / steps}


# ----- A2C ----------------------------------------------------------------------------------------

def a2c_training_rates(env: str, workers: int, repeats: int, seconds: float,
                       matmul_rate: Callable[[], float], devices: int = 1) -> tuple:
    """Train A2C at one batch size, its batch split over `devices` devices, and measure it:
    (cfg, spec, network, compile seconds, training env steps/s per repeat, the matrix-multiply
    rate measured before each repeat, CPU cores the training used per repeat: process CPU time /
    wall time)."""
    cfg = compose_config([f"env={env}", f"workers={workers}", f"rollout_length={ROLLOUT}",
                          f"devices={devices}", "compilation_cache_dir=null"])
    spec = make_env(cfg.env.name)
    network = network_from_config(cfg, spec)
    trainer = a2c.build_trainer(cfg, spec, network, jax.devices()[:devices])
    state = trainer.init_state(0)
    compile_seconds = trainer.compile(state)
    holder = {"state": state}

    def train(n: int) -> int:
        holder["state"], _ = trainer.run_updates(holder["state"], n)  # fetches metrics: synced
        return n * trainer.steps_per_update

    training, cores, matmul = step_rates(train, repeats, seconds, before_each=matmul_rate)
    return cfg, spec, network, compile_seconds, training, matmul, cores


def a2c_throughput(env: str, workers: int, repeats: int, seconds: float,
                   matmul_rate: Callable[[], float]) -> dict[str, Any]:
    """Steady-state training and inference env steps/s of A2C at one batch size, and the fraction
    of the FLOP-bound limit. `matmul_rate()` measures the machine's matrix-multiply rate once;
    it is measured between the training repeats, so that the limit and the training see the same
    machine (a shared VM's speed drifts by tens of percent within minutes)."""
    cfg, spec, network, compile_seconds, training, matmul, _ = a2c_training_rates(
        env, workers, repeats, seconds, matmul_rate)
    inference = inference_rates(cfg, spec, network, workers, repeats, seconds)
    network_passes, network_pass_flops = network_pass_rates(cfg, spec, network, workers,
                                                            repeats, seconds)
    flop = training_flops_per_step(cfg, spec, network, workers)
    flop["network_passes_per_step"] = network_pass_flops
    limit = statistics.median(matmul) / flop["total_per_step"]
    return {"env": cfg.env.name, "workers": workers, "compile_seconds": compile_seconds,
            "train_steps_per_second": spread(training),
            "inference_steps_per_second": spread(inference),
            "network_pass_steps_per_second": spread(network_passes),
            "matmul_flops_per_second": spread(matmul),
            "flops": flop, "flop_bound_steps_per_second": limit,
            "fraction_of_flop_bound": statistics.median(training) / limit,
            "network_pass_fraction_of_flop_bound": statistics.median(network_passes) / limit}


def inference_rates(cfg, spec, network, workers: int, repeats: int,
                    seconds: float) -> list[float]:
    """Env steps/s of acting only: the policy's forward pass, sampling, and the env step."""
    from jaxac.envs import reset_envs

    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape))
    stats = init_obs_stats(spec.obs_shape)

    @jax.jit
    def act(envs, n):
        def body(_, e):
            e, traj = core.rollout(network.apply, params, stats, e, spec, ROLLOUT, False)
            return e
        return jax.lax.fori_loop(0, n, body, envs)

    holder = {"envs": reset_envs(spec, jax.random.split(jax.random.PRNGKey(1), workers))}

    def run(n: int) -> int:
        holder["envs"] = act(holder["envs"], n)
        jax.block_until_ready(holder["envs"])
        return n * ROLLOUT * workers

    n = calibrate(run, seconds)
    return timed_repeats(lambda: run(n), repeats)


def network_pass_rates(cfg, spec, network, workers: int, repeats: int,
                       seconds: float) -> tuple[list[float], float]:
    """Env steps/s of a training update's network passes alone: the rollout's `ROLLOUT` policy
    forward passes over `workers` observations, and the loss's forward pass (policy and value)
    and backward pass over the [ROLLOUT, workers] trajectory, with the value of the next
    observations; no environment, sampling, loss terms, optimizer or bookkeeping.

    This is the work the FLOP count counts, as XLA's CPU kernels run it: how close to the
    FLOP-bound limit the trainer could get if everything else were free. The passes are
    `vmap`ped over a seed axis of one, as the trainer compiles them. Returns the rates and XLA's
    FLOP count of the passes per env step (to compare with the training step's)."""
    params, traj = sample_trajectory(spec, network, workers)

    def policy_output(p, obs) -> jax.Array:  # logits or Gaussian means
        return jax.tree.leaves(network.apply(p, obs)[0])[0]

    # Fixed random weights on the outputs make the backward pass start from a cotangent that
    # varies per sample, as the loss's does (a plain sum lets XLA simplify the last layer).
    policy_shape = jax.eval_shape(policy_output, params, traj.obs_tm1).shape
    k_policy, k_value = jax.random.split(jax.random.PRNGKey(2))
    policy_weight = jax.random.normal(k_policy, policy_shape)
    value_weight = jax.random.normal(k_value, traj.reward_t.shape)

    def weighted_outputs(p, obs):  # one scalar to differentiate
        # One apply for both heads: two would give a shared torso two backward passes.
        dist, value = network.apply(p, obs)
        return (jnp.sum(jax.tree.leaves(dist)[0] * policy_weight)
                + jnp.sum(value * value_weight))

    def passes(p):
        acting = sum(jnp.sum(policy_output(p, traj.obs_tm1[t])) for t in range(ROLLOUT))
        next_value = jnp.sum(network.apply(p, traj.obs_t)[1])
        grads = jax.grad(weighted_outputs)(p, traj.obs_tm1)
        # A tiny step that depends on every pass, so that each iteration needs the one before.
        return jax.tree.map(lambda x, g: x - 1e-9 * g - 1e-12 * (acting + next_value), p, grads)

    @jax.jit
    def run_passes(p, n):
        return jax.lax.fori_loop(0, n, lambda _, q: jax.vmap(passes)(q), p)

    holder = {"params": jax.tree.map(lambda x: x[None], params)}

    def run(n: int) -> int:
        holder["params"] = jax.block_until_ready(run_passes(holder["params"], n))
        return n * ROLLOUT * workers

    n = calibrate(run, seconds)
    flops_per_step = flops(jax.vmap(passes), holder["params"]) / (ROLLOUT * workers)
    return timed_repeats(lambda: run(n), repeats), flops_per_step


# ----- A2C on one core ----------------------------------------------------------------------------

# XLA's CPU client sizes its thread pools when JAX starts, so the one-core run needs its own
# process, started with one thread (what `xla_cpu_threads=1` gives a run; jaxac/cpu_dispatch.py).
ONE_CORE_ENVIRONMENT = {THREADS_VARIABLE: "1"}


def a2c_one_core_rates(workers_list: Sequence[int], repeats: int, seconds: float
                       ) -> list[dict[str, Any]]:
    """CartPole-v1 A2C training env steps/s, the matrix-multiply rate (measured before each
    training repeat), the CPU cores the training used and the rate of the update's network
    passes alone, at each batch size, in this process as it is: `a2c_one_core` runs it in a
    process whose XLA thread pools have one thread."""
    matmul_rate = matmul_timer(default_matmul_size())
    rows = []
    for workers in workers_list:
        cfg, spec, network, _, training, matmul, cores = a2c_training_rates(
            "cartpole", workers, repeats, seconds, matmul_rate)
        network_passes, _ = network_pass_rates(cfg, spec, network, workers, repeats, seconds)
        rows.append({"workers": workers, "train_steps_per_second": spread(training),
                     "matmul_flops_per_second": spread(matmul), "cores_used": spread(cores),
                     "network_pass_steps_per_second": spread(network_passes),
                     "xla_cpu_threads": xla_cpu_threads()})
    return rows


def in_child_process(call: str, environment: dict[str, str], what: str) -> Any:
    """The JSON value of `jaxac.bench.<call>` evaluated in a fresh Python process whose
    environment has `environment` added (settings XLA reads only when JAX starts)."""
    code = f"import json\nfrom jaxac import bench\nprint(json.dumps(bench.{call}))"
    child = subprocess.run([sys.executable, "-c", code], env=os.environ | environment,
                           capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def a2c_one_core(a2c_rows: list[dict[str, Any]], repeats: int, seconds: float
                 ) -> list[dict[str, Any]]:
    """The CartPole-v1 rows of the A2C table again, with XLA's CPU thread pools sized to one
    thread (a child process with PJRT_NPROC=1): what the machine's other cores add.

    Each row gets the one-core fraction of the one-core FLOP-bound limit (the same FLOPs per step
    as the A2C row, over the matrix-multiply rate on one thread) and the speedup of the A2C row
    (all cores) over one core. If more cores could at best multiply the one-core throughput by
    their number, the all-core fraction could not exceed the one-core fraction times
    `cores * one-core matmul rate / all-core matmul rate`: the `most_with_linear_scaling` bound.
    The update's network passes alone get the same two figures (`network_pass_*`): whether the
    other cores speed up even the matrix multiplies of this network.
    """
    rows = {r["workers"]: r for r in a2c_rows if r["env"] == "CartPole-v1"}
    if not rows:
        return []
    measured = in_child_process(f"a2c_one_core_rates({sorted(rows)}, {repeats}, {seconds})",
                                ONE_CORE_ENVIRONMENT, "the one-core A2C measurement")
    cores = os.cpu_count() or 1
    for one in measured:
        full = rows[one["workers"]]
        flops_per_step = full["flops"]["total_per_step"]
        one_matmul = one["matmul_flops_per_second"]["median"]
        one["fraction_of_one_core_flop_bound"] = flop_bound_fraction(
            one["train_steps_per_second"]["median"], flops_per_step, one_matmul)
        one["all_cores_speedup"] = (full["train_steps_per_second"]["median"]
                                    / one["train_steps_per_second"]["median"])
        one["most_with_linear_scaling"] = (
            one["fraction_of_one_core_flop_bound"] * cores * one_matmul
            / full["matmul_flops_per_second"]["median"])
        one_passes = one["network_pass_steps_per_second"]["median"]
        one["network_pass_fraction_of_one_core_flop_bound"] = flop_bound_fraction(
            one_passes, flops_per_step, one_matmul)
        one["network_pass_all_cores_speedup"] = (
            full["network_pass_steps_per_second"]["median"] / one_passes)
    return measured


# ----- A2C split over the cores -------------------------------------------------------------------

def a2c_device_rates(workers_list: Sequence[int], devices: int, repeats: int, seconds: float
                     ) -> list[dict[str, Any]]:
    """CartPole-v1 A2C training env steps/s with the batch split over `devices` devices, the
    matrix-multiply rate (measured before each training repeat) and the CPU cores the training
    used, at each batch size, in this process: `a2c_on_cpu_devices` runs it in a process with
    one CPU device per core."""
    matmul_rate = matmul_timer(default_matmul_size())
    rows = []
    for workers in workers_list:
        _, _, _, _, training, matmul, cores = a2c_training_rates(
            "cartpole", workers, repeats, seconds, matmul_rate, devices=devices)
        rows.append({"workers": workers, "devices": len(jax.devices()[:devices]),
                     "train_steps_per_second": spread(training),
                     "matmul_flops_per_second": spread(matmul), "cores_used": spread(cores)})
    return rows


def a2c_on_cpu_devices(a2c_rows: list[dict[str, Any]], repeats: int, seconds: float
                       ) -> list[dict[str, Any]]:
    """The CartPole-v1 rows of the A2C table again with the batch split over one CPU device per
    core (`devices=<cores>`, in a child process that XLA starts with that many CPU devices): the
    same trainer's data parallelism, one all-reduce per update.

    Each row gets the fraction of the row's FLOP-bound limit (the same FLOPs per step, over the
    matrix-multiply rate measured in the child between its repeats) and the ratio to the
    one-device row.
    """
    cores = os.cpu_count() or 1
    rows = {r["workers"]: r for r in a2c_rows
            if r["env"] == "CartPole-v1" and cores > 1 and r["workers"] % cores == 0}
    if not rows:
        return []
    flags = " ".join(f for f in os.environ.get(XLA_FLAGS, "").split()
                     if not f.startswith(DEVICE_COUNT_FLAG))
    measured = in_child_process(
        f"a2c_device_rates({sorted(rows)}, {cores}, {repeats}, {seconds})",
        {XLA_FLAGS: f"{flags} {DEVICE_COUNT_FLAG}={cores}".strip()},
        "the A2C measurement on CPU devices")
    for split in measured:
        one = rows[split["workers"]]
        rate = split["train_steps_per_second"]["median"]
        split["fraction_of_flop_bound"] = flop_bound_fraction(
            rate, one["flops"]["total_per_step"], split["matmul_flops_per_second"]["median"])
        split["over_one_device"] = rate / one["train_steps_per_second"]["median"]
    return measured


def a2c_split_ceiling(a2c_rows: list[dict[str, Any]], repeats: int, seconds: float,
                      matmul_rate: Callable[[], float]) -> list[dict[str, Any]]:
    """The most a data-parallel split of an A2C batch over this machine's cores could reach.

    For each CartPole-v1 row whose workers divide evenly, `cores` independent A2C trainers of
    workers / cores environments each train at once, one per Python thread (jaxac runs CPU
    computations in the thread that calls them), and never exchange gradients. A synchronous
    split (one gradient from the whole batch per update) does all of this work and more, so its
    env steps/s can be at most theirs together: this is its ceiling, as a fraction of the row's
    FLOP-bound limit (the matrix-multiply rate is measured between the repeats, as for the row).
    """
    cores = os.cpu_count() or 1
    rows = []
    for full in a2c_rows:
        workers = full["workers"]
        if full["env"] != "CartPole-v1" or cores < 2 or workers % cores:
            continue
        cfg = compose_config(["env=cartpole", f"workers={workers // cores}",
                              f"rollout_length={ROLLOUT}", "compilation_cache_dir=null"])
        spec = make_env(cfg.env.name)
        network = network_from_config(cfg, spec)
        trainers = [a2c.build_trainer(cfg, spec, network, jax.devices()[:1])
                    for _ in range(cores)]
        states = [trainer.init_state(i) for i, trainer in enumerate(trainers)]
        for trainer, state in zip(trainers, states):
            trainer.compile(state)

        def train_all(n: int) -> int:
            start = threading.Barrier(cores)

            def train_one(i: int) -> None:
                start.wait()
                states[i], _ = trainers[i].run_updates(states[i], n)  # fetches metrics: synced

            run_in_threads(train_one, cores)
            return n * cores * trainers[0].steps_per_update

        rates, cores_used, matmul = step_rates(train_all, repeats, seconds,
                                               before_each=matmul_rate)
        rows.append({"workers": workers, "parts": cores, "steps_per_second": spread(rates),
                     "matmul_flops_per_second": spread(matmul), "cores_used": spread(cores_used),
                     "fraction_of_flop_bound": flop_bound_fraction(
                         statistics.median(rates), full["flops"]["total_per_step"],
                         statistics.median(matmul)),
                     "over_training": (statistics.median(rates)
                                       / full["train_steps_per_second"]["median"])})
    return rows


# ----- A3C ----------------------------------------------------------------------------------------

def compiled_a3c_trainer(workers: int, *overrides: str) -> a3c.A3CTrainer:
    """An A3C trainer on CartPole-v1 (rollout_length 5, no compilation cache), compiled, its
    workers not yet started."""
    cfg = compose_config(["algo=a3c", f"workers={workers}", f"rollout_length={ROLLOUT}",
                          "compilation_cache_dir=null", *overrides])
    spec = make_env(cfg.env.name)
    trainer = a3c.build_trainer(cfg, spec, network_from_config(cfg, spec), jax.devices())
    a3c.compile_learner(trainer)
    return trainer


def a3c_throughput(worker_counts: Sequence[int], mode: str, repeats: int,
                   total_steps: int) -> list[dict[str, Any]]:
    """A3C env steps/s, updates/s and mean staleness at each worker count, over `repeats` runs
    of `total_steps` each, and the CPU the workers spent: cores used (process CPU time / wall
    time) and CPU µs per update.

    Each repeat runs every worker count once, in turn, so that the ratios between worker counts
    compare runs minutes apart at most: this VM's speed drifts by tens of percent over minutes.
    """
    runs: dict[int, list[dict[str, float]]] = {workers: [] for workers in worker_counts}
    for r in range(repeats):
        for workers in worker_counts:
            trainer = compiled_a3c_trainer(workers, f"algo.update={mode}",
                                           f"total_steps={total_steps}", f"seed={r}")
            _, cpu, elapsed = cpu_and_wall_seconds(trainer.run_to_completion)
            records = trainer.server.drain_records()
            runs[workers].append({
                "steps_per_second": trainer.progress.env_steps / elapsed,
                "updates_per_second": len(records) / elapsed,
                "staleness_mean": float(np.mean([rec.staleness for rec in records])),
                "cores_used": cpu / elapsed, "cpu_us_per_update": cpu / len(records) * 1e6})
    return [{"workers": workers, "update": mode,
             **{key: spread([run[key] for run in runs[workers]]) for key in runs[workers][0]}}
            for workers in worker_counts]


def a3c_compute_ceiling(workers: int, repeats: int, seconds: float) -> dict[str, Any]:
    """The most A3C env steps/s this machine gives `workers` threads that do an A3C worker's
    XLA work and nothing else: no parameter server, no lock, no bookkeeping.

    Two variants, each with the CPU the process used meanwhile (cores = process CPU time / wall
    time, and CPU µs per update):
    - "rollout_and_gradient": each thread only calls the workers' jitted rollout-and-gradient,
      back to back;
    - "with_optimizer_step": each thread also runs locked mode's optimizer call on the result
      (a batch of one), reads its info row and takes the output as its own next state, as
      `ParameterServer.submit` does with the shared one.
      This is everything an update must do, one update per call. Not a strict bound: locked
      mode applies the updates that wait in batches, fewer calls per update.
    """
    trainer = compiled_a3c_trainer(workers)
    learner, server = trainer.learner, trainer.server
    snapshot, entropy_coef = server.snapshot().vector, jnp.float32(0.0)

    def worker_work(i: int, updates: int, optimizer_step: bool) -> None:
        env_vector, state = trainer.initial_env_vector(i), snapshot
        for _ in range(updates):
            env_vector, result = learner.rollout_and_gradient(snapshot, env_vector, entropy_coef)
            if not optimizer_step:
                jax.block_until_ready(result)
                continue
            state, info = learner.optimizer_steps(
                *server.optimizer_arguments(state, [result], [1.0]))
            learner.read_report(np.asarray(info)[0, 1:].tolist())

    rows: dict[str, Any] = {"workers": workers}
    for variant, optimizer_step in (("rollout_and_gradient", False),
                                    ("with_optimizer_step", True)):
        def run(updates_per_thread: int, optimizer_step=optimizer_step) -> int:
            run_in_threads(lambda i: worker_work(i, updates_per_thread, optimizer_step), workers)
            return updates_per_thread * workers * ROLLOUT

        rates, cores, _ = step_rates(run, repeats, seconds)
        # CPU seconds per env step (cores / steps per second) times the steps of an update
        cpu_per_update = [c / r * ROLLOUT * 1e6 for c, r in zip(cores, rates)]
        rows[variant] = {"steps_per_second": spread(rates), "cores_used": spread(cores),
                         "cpu_us_per_update": spread(cpu_per_update)}
    return rows


def a3c_call_floor(repeats: int, seconds: float) -> dict[str, Any]:
    """XLA's fixed cost per A3C update on this machine, on one thread.

    Times the two jitted calls of an update (rollout+gradient, then locked mode's optimizer call
    on a batch of one) with the arguments the workers pass, and the same two calls with their
    math removed: same arguments (kept, so they are still handed over), same number and shapes
    of results (zeros). What the hollow calls cost is what XLA's CPU runtime charges per
    execution whatever the network: every update pays it for its rollout, and for an optimizer
    call unless it is applied in a batch with others. Returns CPU and wall µs per call for the
    four.
    """
    trainer = compiled_a3c_trainer(1)
    learner, server = trainer.learner, trainer.server
    env_vector = trainer.initial_env_vector(0)
    snapshot, entropy_coef = server.snapshot().vector, jnp.float32(0.0)
    _, result = learner.rollout_and_gradient(snapshot, env_vector, entropy_coef)

    def hollow(fn: Callable, *args) -> Callable:
        shapes = jax.eval_shape(fn, *args)
        return jax.jit(lambda *_: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                       keep_unused=True)

    calls = {
        "rollout_and_gradient": (learner.rollout_and_gradient,
                                 (snapshot, env_vector, entropy_coef)),
        "optimizer_step": (learner.optimizer_steps,
                           server.optimizer_arguments(snapshot, [result], [1.0]))}
    for name, (fn, args) in list(calls.items()):
        calls[f"{name}_hollow"] = (hollow(fn, *args), args)
    rows = {}
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
        rows[name] = {"cpu_us_per_call": spread(cpu_us), "wall_us_per_call": spread(wall_us)}
    return rows


# ----- time to solve ------------------------------------------------------------------------------

def time_to_solve(algo: str, seeds: int, workdir: Path) -> dict[str, Any]:
    """Wall seconds (process start to solved, compilation included) and env steps to solve
    CartPole-v1 with the default preset, per seed, with a cold then a warm compilation cache."""
    out: dict[str, Any] = {"algo": algo, "cold": [], "warm": []}
    for seed in range(seeds):
        cache = workdir / f"cache-{algo}-{seed}"  # empty: cold; the same again: warm
        for phase in ("cold", "warm"):
            run_dir = workdir / f"{algo}-{seed}-{phase}"
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "jaxac.run", f"algo={algo}", f"seed={seed}",
                 "stop_when_solved=true", "eval_episodes=0", f"compilation_cache_dir={cache}",
                 f"hydra.run.dir={run_dir}"], capture_output=True, text=True)
            process_seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"time-to-solve run failed:\n{done.stderr[-3000:]}")
            summary = json.loads((run_dir / "summary.json").read_text())
            solved = summary["solved"]
            out[phase].append({
                "seed": seed, "env_steps": solved["env_steps"][0],
                "train_seconds": solved["wall_seconds"][0],
                "compile_seconds": summary["compile_seconds"],
                "process_seconds": process_seconds})
    for phase in ("cold", "warm"):
        rows = out[phase]
        solved_rows = [r for r in rows if r["env_steps"] is not None]
        out[f"{phase}_solved"] = f"{len(solved_rows)}/{len(rows)}"
        if solved_rows:
            out[f"{phase}_env_steps"] = spread([r["env_steps"] for r in solved_rows])
            out[f"{phase}_train_seconds"] = spread([r["train_seconds"] for r in solved_rows])
            out[f"{phase}_compile_seconds"] = spread([r["compile_seconds"] for r in rows])
    return out


# ----- report -------------------------------------------------------------------------------------

def _fmt_spread(s: dict[str, Any], digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} [{s['min']:,.{digits}f}-{s['max']:,.{digits}f}]"


def report(results: dict[str, Any]) -> str:
    """The human-readable table."""
    cores = results.get("cpu_cores") or os.cpu_count() or 1  # of the measuring machine
    lines = [f"jaxac benchmark, {results['machine']}",
             f"median [min-max] of {results['repeats']} repeats", ""]
    if "matmul" in results:
        m = results["matmul"]
        lines.append(f"matrix multiply ({m['matrix_size']}x{m['matrix_size']} float32): "
                     f"{m['median'] / 1e9:,.1f} GFLOP/s [{m['min'] / 1e9:,.1f}-"
                     f"{m['max'] / 1e9:,.1f}] at the start; each A2C row's limit uses the "
                     f"rate measured between its own training repeats (matmul column)")
    if results.get("a2c"):
        lines += ["", "A2C (rollout_length 5)",
                  f"{'env':<16}{'workers':>8}{'compile s':>10}  {'train steps/s':<30}"
                  f"{'matmul GFLOP/s':>15}{'FLOP-bound':>12}{'fraction':>9}  "
                  f"{'inference steps/s':<32}{'network passes steps/s':<32}{'fraction':>8}"]
        for r in results["a2c"]:
            lines.append(f"{r['env']:<16}{r['workers']:>8}{r['compile_seconds']:>10.1f}  "
                         f"{_fmt_spread(r['train_steps_per_second']):<30}"
                         f"{r['matmul_flops_per_second']['median'] / 1e9:>15,.1f}"
                         f"{r['flop_bound_steps_per_second']:>12,.0f}"
                         f"{r['fraction_of_flop_bound']:>9.1%}  "
                         f"{_fmt_spread(r['inference_steps_per_second']):<32}"
                         f"{_fmt_spread(r['network_pass_steps_per_second']):<32}"
                         f"{r['network_pass_fraction_of_flop_bound']:>8.1%}")
        lines.append("network passes: the update's forward and backward passes alone (no env, "
                     "sampling, loss terms or optimizer), the most the trainer could reach with "
                     "everything else free")
    if results.get("a2c_one_core"):
        lines += ["", "A2C on one core: the CartPole-v1 rows with XLA's CPU thread pools sized to "
                      "one thread (PJRT_NPROC=1, a child process)",
                  f"{'workers':>7}  {'train steps/s':<30}{'CPU cores':>10}{'matmul GFLOP/s':>16}"
                  f"{'fraction':>10}{f'{cores} cores / 1':>14}{'bound':>8}  "
                  f"{'network passes steps/s':<32}{'fraction':>8}{f'{cores} cores / 1':>14}"]
        for r in results["a2c_one_core"]:
            lines.append(f"{r['workers']:>7}  {_fmt_spread(r['train_steps_per_second']):<30}"
                         f"{r['cores_used']['median']:>10.2f}"
                         f"{r['matmul_flops_per_second']['median'] / 1e9:>16,.1f}"
                         f"{r['fraction_of_one_core_flop_bound']:>10.1%}"
                         f"{r['all_cores_speedup']:>13.2f}x"
                         f"{r['most_with_linear_scaling']:>8.1%}  "
                         f"{_fmt_spread(r['network_pass_steps_per_second']):<32}"
                         f"{r['network_pass_fraction_of_one_core_flop_bound']:>8.1%}"
                         f"{r['network_pass_all_cores_speedup']:>13.2f}x")
        lines.append(f"fraction: of one core's FLOP-bound limit; {cores} cores / 1: the A2C row's "
                     f"speedup over one core; bound: the most the A2C row's fraction could be if "
                     f"{cores} cores multiplied the one-core rate by {cores}; network passes: as "
                     f"in the A2C table, on one core")
    if results.get("a2c_devices"):
        lines += ["", f"A2C on {cores} CPU devices: the CartPole-v1 rows with the batch split over "
                      f"one CPU device per core (devices={cores}, a child process), one "
                      f"all-reduce per update",
                  f"{'workers':>7}  {'train steps/s':<32}{'CPU cores':>10}{'matmul GFLOP/s':>16}"
                  f"{'FLOP-bound fraction':>21}{'/ 1 device':>12}"]
        for r in results["a2c_devices"]:
            lines.append(f"{r['workers']:>7}  {_fmt_spread(r['train_steps_per_second']):<32}"
                         f"{r['cores_used']['median']:>10.2f}"
                         f"{r['matmul_flops_per_second']['median'] / 1e9:>16,.1f}"
                         f"{r['fraction_of_flop_bound']:>21.1%}{r['over_one_device']:>11.2f}x")
    if results.get("a2c_split"):
        lines += ["", f"A2C split ceiling: each CartPole-v1 batch as {cores} independent trainers "
                      f"of workers/{cores}, one per thread, that never exchange gradients",
                  f"{'workers':>7}  {'env steps/s, together':<32}{'CPU cores':>10}"
                  f"{'matmul GFLOP/s':>16}{'FLOP-bound fraction':>21}{'/ training':>12}"]
        for r in results["a2c_split"]:
            lines.append(f"{r['workers']:>7}  {_fmt_spread(r['steps_per_second']):<32}"
                         f"{r['cores_used']['median']:>10.2f}"
                         f"{r['matmul_flops_per_second']['median'] / 1e9:>16,.1f}"
                         f"{r['fraction_of_flop_bound']:>21.1%}{r['over_training']:>11.2f}x")
        lines.append("a synchronous A2C split over the cores does this work and more (one "
                     "gradient from the whole batch per update): these rates are its ceiling")
    if results.get("a3c"):
        lines += ["", "A3C (CartPole-v1, 1 env per worker, rollout_length 5)",
                  f"{'update':<9}{'workers':>8}  {'env steps/s':<28}{'updates/s':<26}"
                  f"{'staleness':>9}  {'CPU cores used':<20}{'CPU µs/update':>13}"]
        for r in results["a3c"]:
            lines.append(f"{r['update']:<9}{r['workers']:>8}  "
                         f"{_fmt_spread(r['steps_per_second']):<28}"
                         f"{_fmt_spread(r['updates_per_second']):<26}"
                         f"{r['staleness_mean']['median']:>9.2f}  "
                         f"{_fmt_spread(r['cores_used'], 2):<20}"
                         f"{r['cpu_us_per_update']['median']:>13,.0f}")
        single = [r for r in results["a3c"] if r["workers"] == 1]
        if single:  # a second worker can only use the CPU the first one leaves idle
            used = single[0]["cores_used"]["median"]
            lines.append(f"one worker already uses {used:.2f} of {cores} cores: more workers can "
                         f"give at most {cores / used:.2f}x its steps/s at the same CPU cost "
                         f"per update")
    if results.get("a3c_ceiling"):
        ceiling = results["a3c_ceiling"]
        variants = {"rollout_and_gradient": "rollout+gradient calls only",
                    "with_optimizer_step": "+ optimizer step (whole updates)"}
        columns = f"{'env steps/s':<24}{'CPU cores':<18}{'CPU µs/update':>14}  "
        lines += ["", "A3C ceiling: threads that only do a worker's XLA work (no parameter "
                      "server, no lock, no bookkeeping)",
                  " " * 9 + "".join(f"{title:<58}" for title in variants.values()),
                  f"{'threads':>7}  " + columns * len(variants)]
        for r in ceiling:
            lines.append(f"{r['workers']:>7}  " + "".join(
                f"{_fmt_spread(r[v]['steps_per_second']):<24}"
                f"{_fmt_spread(r[v]['cores_used'], 2):<18}"
                f"{r[v]['cpu_us_per_update']['median']:>14,.0f}  " for v in variants))
        cheapest = min(r["rollout_and_gradient"]["cpu_us_per_update"]["median"] for r in ceiling)
        lines.append(f"at its cheapest ({cheapest:,.0f} CPU µs per {ROLLOUT}-step call) the "
                     f"rollout+gradient alone caps this machine's {cores} cores at "
                     f"{cores / cheapest * 1e6 * ROLLOUT:,.0f} env steps/s")
        full = {r["workers"]: r["with_optimizer_step"]["steps_per_second"]["median"]
                for r in ceiling}
        best, most = max(full, key=full.get), max(full)
        line = f"whole updates top out at {full[best]:,.0f} env steps/s ({best} threads"
        line += ")" if best == most else f"; {most} threads: {full[most]:,.0f})"
        if 1 in full and 2 in full:
            line += f"; 2 threads give {full[2] / full[1]:.2f}x 1 thread"
        lines.append(line + " (one optimizer call per update: locked mode, which applies the "
                     "updates that wait in batches, can do better)")
    if results.get("a3c_floor"):
        floor = results["a3c_floor"]
        lines += ["", "A3C call floor: a worker's two calls, one thread, with and without their "
                      "math (hollow: same arguments and result shapes, zeros out)",
                  f"{'call':<29}{'CPU µs/call':<26}{'wall µs/call':<26}"]
        for name, r in floor.items():
            lines.append(f"{name:<29}{_fmt_spread(r['cpu_us_per_call']):<26}"
                         f"{_fmt_spread(r['wall_us_per_call']):<26}")
        calls = ("rollout_and_gradient", "optimizer_step")
        total = sum(floor[c]["cpu_us_per_call"]["median"] for c in calls)
        fixed = sum(floor[f"{c}_hollow"]["cpu_us_per_call"]["median"] for c in calls)
        lines.append(f"an update's two calls cost {total:,.0f} CPU µs: XLA's fixed cost is "
                     f"{fixed:,.0f} of it, the math (a few hundred small kernels) the other "
                     f"{total - fixed:,.0f}")
    if results.get("solve"):
        lines += ["", "Time to solve CartPole-v1 (last-100 mean >= 475), default presets",
                  f"{'algo':<6}{'cache':<7}{'solved':>7}  {'env steps':<30}"
                  f"{'wall s (compile incl.)':<26}{'compile s':<20}"]
        for r in results["solve"]:
            for phase in ("cold", "warm"):
                if f"{phase}_env_steps" not in r:
                    lines.append(f"{r['algo']:<6}{phase:<7}{r[f'{phase}_solved']:>7}")
                    continue
                lines.append(f"{r['algo']:<6}{phase:<7}{r[f'{phase}_solved']:>7}  "
                             f"{_fmt_spread(r[f'{phase}_env_steps']):<30}"
                             f"{_fmt_spread(r[f'{phase}_train_seconds'], 1):<26}"
                             f"{_fmt_spread(r[f'{phase}_compile_seconds'], 1):<20}")
    if results.get("sb3"):
        s = results["sb3"]
        lines += ["", f"Stable-Baselines3 {s['version']} A2C (torch {s['torch']}), "
                      "CartPole-v1, 8 envs x 5 steps, RMSprop 7e-4",
                  f"steps/s {_fmt_spread(s['steps_per_second'])}; solved "
                  f"{s['solved']}; wall s to solve {_fmt_spread(s['train_seconds'], 1)}"
                  if "train_seconds" in s else f"steps/s {_fmt_spread(s['steps_per_second'])}"]
        for name, value in results.get("ratios", {}).items():
            lines.append(f"  {name}: {value:,.1f}x")
    return "\n".join(lines)


def _errorbar(ax, x: list, spreads: list[dict[str, Any]], **style) -> None:
    """Medians with min-max error bars."""
    med = [s["median"] for s in spreads]
    err = [[m - s["min"] for m, s in zip(med, spreads)],
           [s["max"] - m for m, s in zip(med, spreads)]]
    ax.errorbar(x, med, yerr=err, capsize=3, **style)


def plot(results: dict[str, Any], path: Path) -> None:
    """Training, inference and FLOP-bound steps/s against batch size (A2C), and A3C scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=100)
    ax = axes[0]
    for i, env in enumerate(sorted({r["env"] for r in results.get("a2c", [])})):
        rows = [r for r in results["a2c"] if r["env"] == env]
        w = [r["workers"] for r in rows]
        for key, style, label in (("train_steps_per_second", "-o", "training"),
                                  ("inference_steps_per_second", "--s", "inference only"),
                                  ("network_pass_steps_per_second", "-.d", "network passes only")):
            _errorbar(ax, w, [r[key] for r in rows], fmt=style, color=f"C{i}",
                      label=f"{env}: {label}")
        ax.plot(w, [r["flop_bound_steps_per_second"] for r in rows], ":", color=f"C{i}",
                label=f"{env}: FLOP-bound limit")
    one_core = results.get("a2c_one_core", [])
    if one_core:
        w = [r["workers"] for r in one_core]
        _errorbar(ax, w, [r["train_steps_per_second"] for r in one_core], fmt=":o",
                  color="grey", label="CartPole-v1: training on one core")
        _errorbar(ax, w, [r["network_pass_steps_per_second"] for r in one_core], fmt=":d",
                  color="grey", label="CartPole-v1: network passes on one core")
    on_devices = results.get("a2c_devices", [])
    if on_devices:
        _errorbar(ax, [r["workers"] for r in on_devices],
                  [r["train_steps_per_second"] for r in on_devices], fmt="-^", color="C3",
                  label=f"CartPole-v1: training on {on_devices[0]['devices']} CPU devices")
    split = results.get("a2c_split", [])
    if split:
        _errorbar(ax, [r["workers"] for r in split], [r["steps_per_second"] for r in split],
                  fmt="-x", color="black",
                  label=f"CartPole-v1: split ceiling ({split[0]['parts']} independent trainers)")
    ax.set(xscale="log", yscale="log", xlabel="workers (environments)", ylabel="env steps / s",
           title="A2C")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[1]
    for i, mode in enumerate(UPDATE_MODES):
        rows = [r for r in results.get("a3c", []) if r["update"] == mode]
        if rows:
            _errorbar(ax, [r["workers"] for r in rows], [r["steps_per_second"] for r in rows],
                      fmt="-o", color=f"C{i}", label=mode)
    ceiling = results.get("a3c_ceiling", [])
    if ceiling:
        workers = [r["workers"] for r in ceiling]
        _errorbar(ax, workers, [r["rollout_and_gradient"]["steps_per_second"] for r in ceiling],
                  fmt=":^", color="grey", label="ceiling: rollout+gradient calls only")
        _errorbar(ax, workers, [r["with_optimizer_step"]["steps_per_second"] for r in ceiling],
                  fmt=":v", color="black", label="ceiling: whole updates (+ optimizer step)")
    ax.set(xlabel="workers (threads)", ylabel="env steps / s", title="A3C on CartPole-v1")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    if results.get("a3c"):
        ax.legend(fontsize=8)
    fig.suptitle(results["machine"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def machine_name() -> str:
    info = environment_info()
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    return (f"{info['processor']} ({info['cpu_count']} cores), JAX {info['versions']['jax']} "
            f"on {jax.default_backend()} ({kind}), {info['cpu_dispatch']} CPU dispatch")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m jaxac.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default bench/<date>_<time>)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per figure")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="duration of one throughput measurement")
    parser.add_argument("--only", default="a2c,a3c,solve",
                        help="comma-separated sections: a2c, a3c, solve")
    parser.add_argument("--a2c-workers", default=None,
                        help="CartPole-v1 batch sizes instead of 8,64,512,4096 "
                             "(e.g. up to 65536 on a GPU)")
    parser.add_argument("--breakout-workers", default=None,
                        help="Breakout-MinAtar batch sizes instead of 64,512")
    parser.add_argument("--a3c-workers", default=None,
                        help="A3C worker counts instead of 1,2,4,8,16")
    parser.add_argument("--a3c-steps", type=int, default=20_000,
                        help="env steps per A3C measurement")
    parser.add_argument("--solve-seeds", type=int, default=5)
    parser.add_argument("--vs", choices=["sb3"], default=None,
                        help="also train Stable-Baselines3's A2C (needs the sb3 extra)")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    unknown = sections - {"a2c", "a3c", "solve"}
    if unknown:
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; allowed: a2c, a3c, solve")
    if args.vs == "sb3":
        from jaxac import bench_sb3

        bench_sb3.check_installed()  # fail before measuring anything
    out = args.out or Path("bench") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(A2C_SIZES)
    if args.a2c_workers:
        sizes["cartpole"] = tuple(int(w) for w in args.a2c_workers.split(","))
    if args.breakout_workers:
        sizes["breakout"] = tuple(int(w) for w in args.breakout_workers.split(","))

    results: dict[str, Any] = {"machine": machine_name(), "cpu_cores": os.cpu_count() or 1,
                               "repeats": args.repeats,
                               "environment": environment_info(), "args": vars(args) | {
                                   "out": str(out)}}
    jax.config.update("jax_enable_compilation_cache", False)  # compile times are cold here
    if "a2c" in sections:
        size = default_matmul_size()
        matmul_rate = matmul_timer(size)
        results["matmul"] = {"matrix_size": size,
                             **spread([matmul_rate() for _ in range(args.repeats)])}
        results["a2c"] = []
        for env, workers_list in sizes.items():
            for workers in workers_list:
                row = a2c_throughput(env, workers, args.repeats, args.seconds, matmul_rate)
                results["a2c"].append(row)
                print(f"A2C {row['env']} workers={workers}: "
                      f"{row['train_steps_per_second']['median']:,.0f} steps/s", flush=True)
        if jax.default_backend() == "cpu":  # both are about the CPU's cores
            results["a2c_devices"] = a2c_on_cpu_devices(results["a2c"], args.repeats,
                                                        args.seconds)
            results["a2c_split"] = a2c_split_ceiling(results["a2c"], args.repeats,
                                                     args.seconds, matmul_rate)
            # PJRT_NPROC sizes the CPU client's pools only
            results["a2c_one_core"] = a2c_one_core(results["a2c"], args.repeats, args.seconds)
    if "a3c" in sections:
        results["a3c"] = []
        a3c_workers = (tuple(int(w) for w in args.a3c_workers.split(",")) if args.a3c_workers
                       else A3C_WORKERS)
        for mode in UPDATE_MODES:
            for row in a3c_throughput(a3c_workers, mode, args.repeats, args.a3c_steps):
                results["a3c"].append(row)
                print(f"A3C {mode} workers={row['workers']}: "
                      f"{row['steps_per_second']['median']:,.0f} steps/s", flush=True)
        results["a3c_ceiling"] = [a3c_compute_ceiling(w, args.repeats, args.seconds)
                                  for w in a3c_workers]
        results["a3c_floor"] = a3c_call_floor(args.repeats, args.seconds)
    if "solve" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            results["solve"] = [time_to_solve(algo, args.solve_seeds, Path(tmp))
                                for algo in ("a2c", "a3c")]
    if args.vs == "sb3":
        from jaxac import bench_sb3

        results["sb3"] = bench_sb3.measure(args.repeats, args.solve_seeds, args.seconds)
        results["ratios"] = bench_sb3.ratios(results)
    write_json(out / "bench.json", results)
    table = report(results)
    (out / "bench.txt").write_text(table + "\n")
    if results.get("a2c") or results.get("a3c"):
        plot(results, out / "bench.png")
    print(table)
    print(f"\nwritten to {out}/ (bench.json, bench.txt, bench.png)")
    return results


if __name__ == "__main__":
    main()
