"""The Ray A3C section: CartPole-v1 A3C with `algo.backend=ray` against the thread backend in the
same run, at each worker count (env steps/s, updates/s, mean staleness), what an update costs the
server actor (µs of its time, bytes moved), and Ray's own fixed costs (an actor call's round trip,
a snapshot's put and get), from which the section predicts how many workers one server feeds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Sequence

import jax
import numpy as np

from jaxac import a3c
from jaxac.a3c.trainer import make_learner
from jaxac.bench.a3c import compiled_trainer
from jaxac.bench.roofline import ROLLOUT
from jaxac.bench.timing import Spread, spread
from jaxac.checkpoint import network_from_config
from jaxac.config import compose_config
from jaxac.envs import make_env

WORKERS = (1, 2, 4, 8, 16)


@dataclass
class RayRow:
    """One worker count, both backends, over the repeats."""

    workers: int
    threads_steps_per_second: Spread
    ray_steps_per_second: Spread
    threads_updates_per_second: Spread
    ray_updates_per_second: Spread
    threads_staleness_mean: Spread
    ray_staleness_mean: Spread
    server_us_per_update: Spread  # the server actor's time applying and answering, per update
    updates_per_batch: Spread  # pushes applied per optimizer call (and per snapshot put)
    bytes_in_per_update: Spread  # gradient result + the worker's environments
    bytes_out_per_update: Spread  # snapshot bytes put into the object store, per update


@dataclass
class RayFloor:
    """Ray's fixed costs on this machine, with nothing else running on the instance."""

    call_us: Spread  # round trip of an actor call that does nothing
    put_us: Spread  # ray.put of one snapshot (CartPole-v1's default network)
    get_us: Spread  # ray.get of it in another process
    snapshot_bytes: int


def _ray_run(workers: int, total_steps: int, seed: int) -> dict[str, float]:
    cfg = compose_config(["algo=a3c", "algo.backend=ray", f"workers={workers}",
                          f"rollout_length={ROLLOUT}", f"total_steps={total_steps}",
                          f"seed={seed}", "compilation_cache_dir=null"])
    spec = make_env(cfg.env.name)
    trainer = a3c.make_trainer(cfg, spec, network_from_config(cfg, spec), jax.devices())
    trainer.compile()
    start = time.perf_counter()
    trainer.start()
    trainer.advance(2**62, SimpleNamespace(requested=False))
    elapsed = time.perf_counter() - start
    trainer.stop()
    final = trainer.final_report
    records, cost = final["records"], final["cost"]
    updates = max(cost["updates"], 1)
    return {"steps_per_second": sum(final["worker_steps"]) / elapsed,
            "updates_per_second": final["version"] / elapsed,
            # the report after the run holds every record (none was drained before)
            "staleness_mean": float(np.mean([r.staleness for r in records])),
            "server_us_per_update": cost["server_seconds"] / updates * 1e6,
            "updates_per_batch": updates / max(cost["batches"], 1),
            "bytes_in_per_update": cost["bytes_in"] / updates,
            "bytes_out_per_update": cost["bytes_out"] / updates}


def _threads_run(workers: int, total_steps: int, seed: int) -> dict[str, float]:
    trainer = compiled_trainer(workers, f"total_steps={total_steps}", f"seed={seed}")
    start = time.perf_counter()
    trainer.run_to_completion()
    elapsed = time.perf_counter() - start
    records = trainer.server.drain_records()
    return {"steps_per_second": trainer.env_steps / elapsed,
            "updates_per_second": len(records) / elapsed,
            "staleness_mean": float(np.mean([r.staleness for r in records]))}


def throughput(worker_counts: Sequence[int], repeats: int, total_steps: int) -> list[RayRow]:
    """Both backends at each worker count, alternated, `repeats` runs of `total_steps` each."""
    threads = {w: [] for w in worker_counts}
    on_ray = {w: [] for w in worker_counts}
    for r in range(repeats):
        for workers in worker_counts:
            threads[workers].append(_threads_run(workers, total_steps, r))
            on_ray[workers].append(_ray_run(workers, total_steps, r))

    def of(runs, key):
        return spread([run[key] for run in runs])

    return [RayRow(w, of(threads[w], "steps_per_second"), of(on_ray[w], "steps_per_second"),
                   of(threads[w], "updates_per_second"), of(on_ray[w], "updates_per_second"),
                   of(threads[w], "staleness_mean"), of(on_ray[w], "staleness_mean"),
                   of(on_ray[w], "server_us_per_update"), of(on_ray[w], "updates_per_batch"),
                   of(on_ray[w], "bytes_in_per_update"), of(on_ray[w], "bytes_out_per_update"))
            for w in worker_counts]


def floor(repeats: int, calls: int = 500) -> RayFloor:
    """Time an empty actor call, and a put and a remote get of one CartPole-v1 snapshot."""
    import ray

    @ray.remote(num_cpus=0)
    class Echo:
        def nothing(self) -> None:
            return None

        def get(self, refs: list) -> int:
            return ray.get(refs[0]).size

    cfg = compose_config(["algo=a3c"])
    spec = make_env(cfg.env.name)
    learner = make_learner(cfg, spec, network_from_config(cfg, spec))
    snapshot = learner.init_state(jax.random.PRNGKey(0))[learner.state.through("obs_stats")]
    echo = Echo.remote()
    ray.get(echo.nothing.remote())
    call, put, get = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            ray.get(echo.nothing.remote())
        call.append((time.perf_counter() - start) / calls * 1e6)
        start = time.perf_counter()
        refs = [ray.put(snapshot) for _ in range(calls)]
        put.append((time.perf_counter() - start) / calls * 1e6)
        start = time.perf_counter()
        for ref in refs:
            ray.get(echo.get.remote([ref]))
        # less the call itself: what fetching the snapshot added
        get.append((time.perf_counter() - start) / calls * 1e6 - call[-1])
        del refs
    ray.kill(echo)
    return RayFloor(spread(call), spread(put), spread(get), int(snapshot.nbytes))


def measure(worker_counts: Sequence[int], repeats: int,
            total_steps: int) -> tuple[list[RayRow], RayFloor]:
    """The section: a local Ray instance for the whole of it, shut down at the end."""
    import ray

    from jaxac.a3c.ray_trainer import connect

    connect(compose_config(["algo=a3c", "algo.backend=ray"]))
    try:
        return throughput(worker_counts, repeats, total_steps), floor(repeats)
    finally:
        ray.shutdown()


def server_capacity(rows: list[RayRow]) -> tuple[float, float, float] | None:
    """(server µs per update, updates/s one server can apply at that cost, workers of the
    1-worker rate it can feed): the prediction for a cluster, where the workers do not share the
    server's cores. The cost is the least measured, which is where the fewest workers competed
    with the server for this machine's cores."""
    if not rows:
        return None
    cost = min(r.server_us_per_update.median for r in rows)
    capacity = 1e6 / cost
    one = next((r for r in rows if r.workers == 1), rows[0])
    per_worker = one.ray_updates_per_second.median / one.workers
    return cost, capacity, capacity / per_worker
