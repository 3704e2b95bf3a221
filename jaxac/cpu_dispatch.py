"""How JAX's CPU client runs jaxac's computations: inline, and on how many threads.

**Inline dispatch.** By default JAX's CPU client dispatches every computation asynchronously: the
calling thread enqueues it, a runtime thread picks it up, and the caller sleeps until it reads the
result. For a long computation that costs nothing. An A3C worker, though, makes two short calls
per update (about 150 and 50 µs), and the hand-offs and wake-ups around them cost about a third
of the update's CPU: on the 2-core CI machine one worker used 1.42 cores and 690 CPU µs per update
with asynchronous dispatch, 1.15 cores and 450 µs inline, and ran about 25% more env steps per
second (about 10% more with 16 workers, in interleaved runs). A2C, one long call per log
interval, was unchanged within noise.

`run_cpu_computations_inline` turns asynchronous dispatch off for the CPU. It only has an effect
before JAX creates its CPU client, so jaxac calls it on import, and it leaves the setting alone
when the environment already chose one (`JAX_CPU_ENABLE_ASYNC_DISPATCH=true` keeps JAX's
default). Computations that span several devices stay asynchronous either way (JAX applies the
setting to single-device computations only), and results do not change.

**Thread pools.** XLA's CPU client runs the parts of a computation that can overlap on its own
thread pools, one thread per core unless the PJRT_NPROC environment variable says otherwise when
the client is created. `use_xla_cpu_threads` (the `xla_cpu_threads` config key) sets it; left
null, a run of A2C on one device with a small batch gets one thread
(`automatic_xla_cpu_threads`). On the 2-core CI machine (Zen 5) one thread trained A2C faster
than two at 8 and 64 workers (1.4-1.5x and 1.1x) and slower at 512 (0.8-0.9x)
(`python -m jaxac.bench` measures it); on the previous CI machine two A2C runs side by side on
one thread each did 1.6-1.9x the env steps/s of two runs on XLA's default. A lone A3C run with
several workers wants the default: its workers' calls overlap on the pool (with one thread, 16
workers used one core).

**CPU devices.** XLA's CPU client has one device unless `--xla_force_host_platform_device_count`
in XLA_FLAGS asks for more when it is created. `use_cpu_devices` (the `devices` config key) asks
for as many as the run wants, so that `devices=2` splits an A2C batch over two CPU devices, one
per core of a 2-core machine: on the 2-core CI machine 512 workers trained at about 1.4-1.5x the
env steps/s of one device (`python -m jaxac.bench` measures it; 8 workers are too few to split).
On a machine with accelerators the flag changes nothing else.

**Vector width.** XLA compiles CPU kernels for 256-bit vectors by default, because 512-bit
instructions lower the clock of some Intel processors. AMD's processors with AVX-512 (Zen 4 and
newer) do not; `use_wide_cpu_vectors` (on import) asks for 512-bit vectors there, which made the
A2C update's element-wise kernels (tanh, the environment) faster: A2C at 512 workers trained
about 12% more env steps/s on the 2-core CI machine (AMD EPYC, Zen 5), A3C was unchanged within
noise. A width already chosen in XLA_FLAGS wins.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)

FLAG = "jax_cpu_enable_async_dispatch"


def jax_started() -> bool:
    """Whether JAX created its backends in this process (XLA's settings are fixed from then on)."""
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def run_cpu_computations_inline() -> bool:
    """Turn off asynchronous dispatch on the CPU; True if it took effect (the environment did not
    choose, the flag exists and no JAX backend was created yet)."""
    if FLAG.upper() in os.environ:
        return False
    try:
        from jax._src import xla_bridge
        if xla_bridge.backends_are_initialized():
            log.debug("JAX's backends already exist: keeping its CPU dispatch as it is")
            return False
        jax.config.update(FLAG, False)
    except (ImportError, AttributeError) as missing:  # a future JAX may move or drop these
        log.debug(f"keeping JAX's CPU dispatch as it is ({missing})")
        return False
    return True


def cpu_dispatch() -> str:
    """'inline' or 'async': how this process's CPU computations are dispatched (for the record)."""
    try:
        return "async" if jax.config.read(FLAG) else "inline"
    except AttributeError:
        return "async"


THREADS_VARIABLE = "PJRT_NPROC"  # read by XLA's CPU client, once, when JAX creates it


class ThreadsAlreadyFixed(RuntimeError):
    """JAX's CPU client already exists in this process, with another thread count."""


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


# Environments (workers x seeds) up to which one XLA thread trains A2C on one device faster than
# one per core: on the 2-core CI machine 1.53x the env steps/s at 8 workers and 1.12x at 64, but
# 0.91x at 512 (`python -m jaxac.bench`, the one-core rows).
SMALL_A2C_BATCH = 64


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


XLA_FLAGS = "XLA_FLAGS"  # read by XLA once, when JAX creates its first backend
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width"


def _xla_flag(flag: str) -> str | None:
    """The value XLA_FLAGS gives `flag` (the last one wins, as in XLA), or None."""
    values = [item.split("=", 1)[1] for item in os.environ.get(XLA_FLAGS, "").split()
              if item.startswith(flag + "=")]
    return values[-1] if values else None


def _add_xla_flag(flag: str, value: object) -> None:
    os.environ[XLA_FLAGS] = f"{os.environ.get(XLA_FLAGS, '')} {flag}={value}".strip()


def use_cpu_devices(count: int | None) -> None:
    """Ask XLA's CPU client for `count` devices when JAX creates it (None or 1: leave it as it
    is). Does nothing when XLA_FLAGS already sets the count or JAX already started: the config's
    validation then compares `devices` with the devices there are."""
    if count is None or count <= 1 or _xla_flag(DEVICE_COUNT_FLAG) is not None:
        return
    if not jax_started():
        _add_xla_flag(DEVICE_COUNT_FLAG, int(count))


def wide_vectors_at_full_clock(cpuinfo: str) -> bool:
    """True for an AMD processor with AVX-512 (Zen 4 and newer), from /proc/cpuinfo's text."""
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
