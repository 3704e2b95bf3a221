"""Asynchronous A3C: `workers` Python threads update one shared parameter vector, never waiting
for each other. All of jaxac's concurrency lives in this package.

The protocol. Each worker owns `envs_per_worker` environments (vmapped), an RNG stream derived from
(seed, worker index) and its own exploration (entropy coefficient). Its loop:

    pull a snapshot of the global parameters, tagged with the global version    server.snapshot()
    -> roll out `rollout_length` steps and compute the gradient on the snapshot  (one jitted call,
       the same `core.rollout` and `core.gradients` as A2C)
    -> hand the gradient to the parameter server, which applies it with the      server.submit()
       shared optax optimizer (one jitted call, which releases the GIL)

The global parameters, the observation statistics and the optimizer state are one flat vector on
the server. `algo.update` picks the server: `locked` (updates applied in arrival order, none lost
or overlapped; waiting ones in one call) or `hogwild` (no lock, as in the A3C paper; overlapping
updates interleave and are counted). Staleness of an update = global version it was applied to -
version of the snapshot its gradient was computed on.

The modules, in reading order:

- `trainer.py`: the worker loop, and the trainer the shared driver (`jaxac.loop`) runs;
- `servers.py`: `LockedServer` and `HogwildServer`, behind `snapshot()` and `submit()`;
- `learner.py`: the jitted calls, on flat vectors;
- `layout.py`: every flat vector's named parts, described once;
- `workers.py`: the threads' lifetime (start, pause, stop, join, failures), shared counters;
- `calls.py`: one update's two calls, for measuring them from outside (the bench);
- `ray_trainer.py` and `actors.py`: `algo.backend=ray`, the same protocol with the server and the
  workers as Ray actors (processes, on one machine or a cluster), imported only for that backend.
"""

from jaxac.a3c.calls import UpdateCalls
from jaxac.a3c.layout import FlatLayout, Segments
from jaxac.a3c.learner import A3CLearner, Report
from jaxac.a3c.servers import (MAX_BATCH, HogwildServer, LockedServer, NonFiniteUpdate,
                               ParameterServer, Snapshot, UpdateRecord, batch_sizes)
from jaxac.a3c.trainer import (A3CTrainer, entropy_coefficients, make_thread_trainer,
                               staleness_histogram, worker_keys)
from jaxac.a3c.workers import ServerLost, SharedCounters, ThreadLifetime, WorkerFailed

__all__ = [
    "A3CLearner", "A3CTrainer", "FlatLayout", "HogwildServer", "LockedServer", "MAX_BATCH",
    "NonFiniteUpdate", "ParameterServer", "Report", "Segments", "ServerLost", "SharedCounters",
    "Snapshot", "ThreadLifetime", "UpdateCalls", "UpdateRecord", "WorkerFailed", "batch_sizes",
    "entropy_coefficients", "make_thread_trainer", "make_trainer", "staleness_histogram",
    "worker_keys",
]


def make_trainer(cfg, spec, network, devices, keep_history: bool = False):
    """The A3C trainer (workers not yet started) of a validated run config, in the backend
    `algo.backend` names: threads in this process, or Ray actors (`ray_trainer`, imported only
    then). `keep_history` keeps every applied gradient in order (for tests)."""
    if cfg.algo.get("backend", "threads") == "ray":
        from jaxac.a3c.ray_trainer import make_ray_trainer

        return make_ray_trainer(cfg, spec, network, keep_history=keep_history)
    return make_thread_trainer(cfg, spec, network, devices, keep_history=keep_history)
