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
the client is created. `use_xla_cpu_threads` (the `xla_cpu_threads` config key) sets it. On the
2-core CI machine one thread trained A2C about as fast as two up to 64-512 workers, depending on
the VM's phase (`python -m jaxac.bench` measures it), so two A2C runs side by side on one thread
each did 1.6-1.9x the env steps/s of two runs on XLA's default. A lone A3C run with several
workers wants the default: its workers' calls overlap on the pool (with one thread, 16 workers
used one core).
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)

FLAG = "jax_cpu_enable_async_dispatch"


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
    from jax._src import xla_bridge

    threads = int(threads)
    if xla_bridge.backends_are_initialized():
        if xla_cpu_threads() != threads:
            current = os.environ.get(THREADS_VARIABLE) or "unset (one thread per core)"
            raise ThreadsAlreadyFixed(
                f"JAX has already started in this process with {THREADS_VARIABLE}={current}; "
                f"start a fresh process (or set {THREADS_VARIABLE}={threads} in its environment)")
        return
    os.environ[THREADS_VARIABLE] = str(threads)


def xla_cpu_threads() -> int | None:
    """The thread count XLA's CPU client is (or will be) created with; None: one per core."""
    value = os.environ.get(THREADS_VARIABLE)
    return int(value) if value and value.isdigit() else None
