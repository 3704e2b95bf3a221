"""How JAX's CPU runtime runs jaxac, set up by one call from each entry point: `set_up`.

Importing jaxac changes nothing about JAX. `python -m jaxac.run`, `python -m jaxac.bench`,
`python -m jaxac.evaluate` and the test suite call `set_up` before JAX starts; a script that
builds trainers itself should do the same. It applies, each only where the process has not
already decided:

- **inline CPU dispatch**: CPU computations run in the calling thread instead of being handed to
  a runtime thread; an A3C worker's two short calls per update otherwise pay for the hand-offs
  (`JAX_CPU_ENABLE_ASYNC_DISPATCH=true` in the environment keeps JAX's default);
- **thread pools**: XLA's CPU thread count (`PJRT_NPROC`, the `xla_cpu_threads` key);
- **CPU devices**: `--xla_force_host_platform_device_count` (the `devices` key), so that
  `devices=2` splits an A2C batch over two cores;
- **vector width**: 512-bit vectors on AMD processors with AVX-512, which run them at full clock;
- **RNG lowering**: JAX's unrolled threefry hash on the CPU, the same bits as its default in far
  fewer kernels.

All but the last are read by XLA once, when JAX creates its CPU client. What each is worth, as
measured, is in docs/performance.md.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import pathlib
from dataclasses import dataclass

import jax

log = logging.getLogger(__name__)

DISPATCH_FLAG = "jax_cpu_enable_async_dispatch"
THREADS_VARIABLE = "PJRT_NPROC"  # read by XLA's CPU client, once, when JAX creates it
XLA_FLAGS = "XLA_FLAGS"  # read by XLA once, when JAX creates its first backend
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width"
# Environments (workers x seeds) up to which one XLA thread trains A2C on one device faster than
# one per core (docs/performance.md, "Thread pools").
SMALL_A2C_BATCH = 64
# The fewest environments per CPU device for which splitting an A2C batch over CPU devices beats
# one device: 32 per core was faster on both 2-core machines measured (AMD Zen 5 and Intel
# Sapphire Rapids), 4 per core slower (docs/performance.md, "Default layout").
MIN_ENVS_PER_CPU_DEVICE = 32


# The layout `jaxac.run` applied in this process before jax.distributed started JAX (a process of
# a multi-process run sets up its platform early, from a Hydra callback, and reports it later).
applied_layout: "Layout | None" = None


class ThreadsAlreadyFixed(RuntimeError):
    """JAX's CPU client already exists in this process, with another thread count."""


def set_up(xla_cpu_threads: int | None = None, cpu_devices: int | None = None) -> None:
    """Apply jaxac's CPU-runtime settings to this process (see the module docstring).

    `xla_cpu_threads`: XLA's CPU thread count (None: the environment's or one per core);
    `cpu_devices`: CPU devices to create (None or 1: leave it). Call it before JAX starts; once
    it has, only the RNG lowering still takes effect, and a different thread count raises
    ThreadsAlreadyFixed. Idempotent.
    """
    use_xla_cpu_threads(xla_cpu_threads)
    use_cpu_devices(cpu_devices)
    run_cpu_computations_inline()
    use_wide_cpu_vectors()
    use_unrolled_threefry_on_cpu()


@dataclass(frozen=True)
class Layout:
    """How a run lays out its work on this machine: the CPU devices to create (None: leave XLA's
    count) and XLA's CPU thread count (None: one per core), with the reason, and whether jaxac
    chose them (`devices` and `xla_cpu_threads` left null) or the user or the environment did."""

    cpu_devices: int | None
    xla_cpu_threads: int | None
    reason: str
    automatic: bool


def a2c_cpu_devices(workers: int, seeds: int, cores: int) -> int:
    """The CPU devices the rule splits an A2C batch over: the most, up to one per core, that
    divide `workers` evenly and still get MIN_ENVS_PER_CPU_DEVICE environments each; 1 if none."""
    fits = [d for d in range(2, cores + 1)
            if workers % d == 0 and workers * seeds // d >= MIN_ENVS_PER_CPU_DEVICE]
    return max(fits, default=1)


def choose_layout(algo: str, workers: int, seeds: int, devices: int | None,
                  threads: int | None, cores: int | None = None) -> Layout:
    """The layout of a run that has not started JAX yet. `devices` and `threads` as configured
    win; left null, on a machine without accelerators, an A2C batch is split over CPU devices
    where `a2c_cpu_devices` says so (one XLA thread pool per core), else it runs on one device
    with `automatic_xla_cpu_threads`."""
    cores = cores or os.cpu_count() or 1
    auto_threads = threads if threads is not None else automatic_xla_cpu_threads(
        algo, workers, seeds, devices)
    if devices is not None:
        return Layout(devices if devices > 1 else None, auto_threads,
                      f"devices={devices} as configured", False)
    if _xla_flag(DEVICE_COUNT_FLAG) is not None:
        return Layout(None, auto_threads, f"XLA_FLAGS sets {DEVICE_COUNT_FLAG}: every device",
                      False)
    if accelerator_plugin_installed():
        return Layout(None, threads, "an accelerator plugin is installed: every device", False)
    split = a2c_cpu_devices(workers, seeds, cores) if algo == "a2c" else 1
    if split > 1:
        return Layout(split, threads, f"an A2C batch of {workers * seeds} environments splits over "
                      f"{split} CPU devices ({workers * seeds // split} each; splitting is faster "
                      f"from {MIN_ENVS_PER_CPU_DEVICE} per device)", True)
    why = (f"{algo.upper()} workers share one device" if algo != "a2c" else
           f"an A2C batch of {workers * seeds} environments stays on one device (splitting is "
           f"faster from {MIN_ENVS_PER_CPU_DEVICE} per device, whole workers each)")
    if auto_threads == 1 and threads is None:
        why += f", on one XLA thread (faster up to {SMALL_A2C_BATCH} environments)"
    return Layout(None, auto_threads, why, True)


def accelerator_plugin_installed() -> bool:
    """Whether JAX could find an accelerator here (a PJRT plugin, libtpu, or JAX_PLATFORMS naming
    another platform), judged without starting JAX."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return any(p.strip() not in ("", "cpu") for p in platforms.split(","))
    if importlib.util.find_spec("libtpu") is not None:
        return True
    try:
        if importlib.util.find_spec("jax_plugins") is not None:
            return True
    except (ImportError, ValueError):
        pass
    return bool(importlib.metadata.entry_points(group="jax_plugins"))


def jax_started() -> bool:
    """Whether JAX created its backends in this process (XLA's settings are fixed from then on)."""
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


# ----- dispatch ---------------------------------------------------------------------------------

def run_cpu_computations_inline() -> bool:
    """Turn off asynchronous dispatch on the CPU; True if it took effect (the environment did not
    choose, the flag exists and no JAX backend was created yet)."""
    if DISPATCH_FLAG.upper() in os.environ:
        return False
    try:
        if jax_started():
            log.debug("JAX's backends already exist: keeping its CPU dispatch as it is")
            return False
        jax.config.update(DISPATCH_FLAG, False)
    except (ImportError, AttributeError) as missing:  # a future JAX may move or drop these
        log.debug(f"keeping JAX's CPU dispatch as it is ({missing})")
        return False
    return True


def cpu_dispatch() -> str:
    """'inline' or 'async': how this process's CPU computations are dispatched (for the record)."""
    try:
        return "async" if jax.config.read(DISPATCH_FLAG) else "inline"
    except AttributeError:
        return "async"


# ----- thread pools -----------------------------------------------------------------------------

def use_xla_cpu_threads(threads: int | None) -> None:
    """Size XLA's CPU thread pools to `threads` (None: leave them as the environment or XLA's
    default of one per core makes them). The size is fixed when JAX creates its CPU client:
    after that a different `threads` raises ThreadsAlreadyFixed, the same one is accepted."""
    if threads is None:
        return
    threads = int(threads)
    if jax_started():
        if xla_cpu_threads() != threads:
            current = os.environ.get(THREADS_VARIABLE) or "unset (one thread per core)"
            raise ThreadsAlreadyFixed(
                f"JAX has already started in this process with {THREADS_VARIABLE}={current}; "
                f"start a fresh process (or set {THREADS_VARIABLE}={threads} in its environment)")
        return
    os.environ[THREADS_VARIABLE] = str(threads)


def automatic_xla_cpu_threads(algo: str, workers: int, seeds: int, devices: int | None
                              ) -> int | None:
    """The XLA CPU thread count a run gets when `xla_cpu_threads` is null: 1 for an A2C batch of
    at most SMALL_A2C_BATCH environments on one device, whose short kernels gain less from a
    second thread than XLA's hand-offs to it cost; None (one thread per core) otherwise, and
    wherever PJRT_NPROC or XLA_FLAGS' device count already decided."""
    split = (devices or 1) > 1 or int(_xla_flag(DEVICE_COUNT_FLAG) or 1) > 1
    if algo != "a2c" or split or os.environ.get(THREADS_VARIABLE):
        return None
    return 1 if workers * seeds <= SMALL_A2C_BATCH else None


def _whole_number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def xla_cpu_threads() -> int | None:
    """The thread count XLA's CPU client is (or will be) created with; None: one per core."""
    return _whole_number(os.environ.get(THREADS_VARIABLE))


# ----- XLA flags: CPU devices and vector width --------------------------------------------------

def _xla_flag(flag: str) -> str | None:
    """The value XLA_FLAGS gives `flag` (the last one wins, as in XLA), or None."""
    values = [item.split("=", 1)[1] for item in os.environ.get(XLA_FLAGS, "").split()
              if item.startswith(flag + "=")]
    return values[-1] if values else None


def _add_xla_flag(flag: str, value: object) -> None:
    os.environ[XLA_FLAGS] = f"{os.environ.get(XLA_FLAGS, '')} {flag}={value}".strip()


def xla_flags_without(flag: str) -> str:
    """XLA_FLAGS as it is, less every setting of `flag` (for a child process that sets its own)."""
    return " ".join(item for item in os.environ.get(XLA_FLAGS, "").split()
                    if not item.startswith(flag + "="))


def use_cpu_devices(count: int | None) -> None:
    """Ask XLA's CPU client for `count` devices when JAX creates it (None or 1: leave it as it
    is). Does nothing when XLA_FLAGS already sets the count or JAX already started: the config's
    validation then compares `devices` with the devices there are."""
    if count is None or count <= 1 or _xla_flag(DEVICE_COUNT_FLAG) is not None:
        return
    if not jax_started():
        _add_xla_flag(DEVICE_COUNT_FLAG, int(count))


def wide_vectors_at_full_clock(cpuinfo: str) -> bool:
    """True for an AMD processor with AVX-512 (Zen 4 and newer), from /proc/cpuinfo's text.
    (Intel processors lower their clock for 512-bit work, so XLA's 256-bit default stays.)"""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), [])
    return "AuthenticAMD" in cpuinfo and "avx512f" in flags


def cpu_has_wide_vectors_at_full_clock() -> bool:
    """`wide_vectors_at_full_clock` for this machine (False where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as info:
            return wide_vectors_at_full_clock(info.read(1 << 16))  # the first processor's lines
    except OSError:
        return False


def use_wide_cpu_vectors() -> bool:
    """Compile CPU kernels for 512-bit vectors where the processor runs them at full clock;
    True if it took effect (no width in XLA_FLAGS, no JAX backend yet, such a processor)."""
    if _xla_flag(VECTOR_WIDTH_FLAG) is not None or not cpu_has_wide_vectors_at_full_clock():
        return False
    if jax_started():
        return False
    _add_xla_flag(VECTOR_WIDTH_FLAG, 512)
    return True


def xla_cpu_vector_width() -> int | None:
    """The vector width (bits) XLA compiles CPU kernels for; None: XLA's default (256)."""
    return _whole_number(_xla_flag(VECTOR_WIDTH_FLAG))


# ----- RNG lowering -----------------------------------------------------------------------------

@functools.cache
def use_unrolled_threefry_on_cpu() -> bool:
    """Lower threefry2x32 unrolled on the CPU (idempotent); True if it took effect.

    JAX lowers its default PRNG for the CPU as a 5-iteration loop, which XLA's CPU runtime runs
    as dozens of tiny kernels per draw; the unrolled form (JAX's own, used on GPU) gives the same
    bits as one fused kernel. It reaches into a private JAX module: if that moves, JAX's default
    stays and this returns False.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry
        lowering = threefry._threefry2x32_lowering
        primitive = threefry.threefry2x32_p
    except (ImportError, AttributeError) as missing:
        log.debug(f"keeping JAX's rolled threefry lowering on the CPU ({missing})")
        return False
    mlir.register_lowering(
        primitive,
        mlir.lower_fun(functools.partial(lowering, use_rolled_loops=False),
                       multiple_results=True),
        platform="cpu")
    return True


def unrolled_threefry_registered() -> bool:
    """Whether `use_unrolled_threefry_on_cpu` ran in this process (without running it)."""
    return use_unrolled_threefry_on_cpu.cache_info().currsize > 0


def set_up_run(cfg) -> Layout:
    """`set_up` with a run config's layout (`choose_layout`: its `devices` and
    `xla_cpu_threads`, or what the rule picks where they are null), before JAX starts;
    returns the layout. ConfigError if the thread count is invalid or JAX already runs in this
    process with another one (a sweep job in a reused process)."""
    global applied_layout
    from jaxac.config import (ConfigError, multi_process_requested, planned_process,
                              validate_xla_cpu_threads)

    validate_xla_cpu_threads(cfg)
    devices = cfg.get("devices") if isinstance(cfg.get("devices"), int) else None
    threads = cfg.get("xla_cpu_threads")
    if jax_started() and applied_layout is not None:
        return applied_layout  # this run's, set up before jax.distributed started JAX
    if jax_started():  # its devices and threads are fixed: keep them
        layout = Layout(None, threads, "JAX already runs in this process: its devices "
                        "and thread count as they are", False)
    else:
        # A process of a multi-process run lays out its own share of the batch.
        processes = planned_process(cfg)[1] if multi_process_requested(cfg) else 1
        layout = choose_layout(cfg.algo.name, max(int(cfg.workers) // processes, 1),
                               int(cfg.seeds), devices, threads)
    try:
        set_up(layout.xla_cpu_threads, layout.cpu_devices)
    except ThreadsAlreadyFixed as fixed:
        raise ConfigError("xla_cpu_threads", cfg.xla_cpu_threads, str(fixed)) from None
    applied_layout = layout if multi_process_requested(cfg) else None
    return layout


def use_compilation_cache(directory: str | None) -> None:
    """Turn JAX's persistent compilation cache on in `directory` (off for None)."""
    if directory is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    path = pathlib.Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache every program that took measurable time to compile, not only those over 1 s.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
