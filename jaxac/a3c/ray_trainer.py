"""A3C with `algo.backend=ray`: the parameter server and the workers as Ray actors (the code that
runs inside them: `jaxac.a3c.actors`), driven by the trainer the shared driver runs
(`jaxac.loop.Trainer`), with the thread backend's metrics, summary and checkpoints.

Faults. A worker actor that dies is restarted by Ray (up to `ray.max_restarts` times) and joins
again with fresh environments and the newest snapshot; the rollout it had claimed is given back
to the budget and counted lost. A worker that raises ends the run with its traceback. If the
server actor dies, the run ends (`ServerLost`), its newest periodic checkpoint intact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
import warnings
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf

from jaxac.a3c.actors import ServerProcess, WorkerProcess
from jaxac.a3c.trainer import (entropy_coefficients_of, interval_row, make_learner,
                               summary_fields, worker_keys)
from jaxac.a3c.workers import ServerLost, WorkerFailed
from jaxac.checkpoint import CheckpointInfo, load_checkpoint
from jaxac.config import ConfigError
from jaxac.envs import EnvSpec
from jaxac.results import Divergence, MetricRow, first_nonfinite
from jaxac.signals import StopRequest

log = logging.getLogger("jaxac")

POLL_SECONDS = 0.1  # how often the driver looks at the server's progress
STOP_SECONDS = 60.0  # how long a stopping worker may take to finish its rollout and push
SERVER_ANSWER_SECONDS = 30.0  # a server that has not answered a ping by then counts as lost


def connect(cfg: DictConfig) -> bool:
    """Join or start Ray as `ray.address` says; True if this process started the instance (and
    shuts it down at the end). ConfigError if no cluster answers at the address."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) set Ray up already
        return False
    address = cfg.ray.address
    options = {"include_dashboard": False, "logging_level": logging.WARNING,
               "configure_logging": False}
    if address is None:
        # Ray's daemons (GCS, raylet) start in this process group: with SIGINT ignored while they
        # start, they inherit the ignore, and a Ctrl-C in the terminal stops the run (through
        # jaxac.signals) instead of killing the instance under it.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with warnings.catch_warnings():  # JAX warns of any fork; Ray forks to exec at once
                warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
                ray.init(num_cpus=os.cpu_count(), **options)
        finally:
            signal.signal(signal.SIGINT, previous)
        return True
    _check_reachable(str(address))  # ray.init would retry an unreachable address for minutes
    try:
        ray.init(address=str(address), **options)
    except (ConnectionError, RuntimeError) as error:
        raise ConfigError("ray.address", address, f"the address of a running Ray cluster "
                          f"(start one with `ray start --head`), or null for a local instance "
                          f"({error})") from None
    return False


REACH_SECONDS = 10.0  # how long a cluster's address may take to accept a connection
CURRENT_CLUSTER_FILE = "/tmp/ray/ray_current_cluster"  # where `ray start` leaves its address


def _check_reachable(address: str) -> None:
    """ConfigError unless something accepts connections at the cluster address `address` names
    (`auto`: $RAY_ADDRESS, or what `ray start --head` on this machine wrote)."""
    import socket

    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS", "")
        if not target and os.path.exists(CURRENT_CLUSTER_FILE):
            with open(CURRENT_CLUSTER_FILE) as f:
                target = f.read().strip()
        if not target:
            raise ConfigError("ray.address", address, "auto only where a Ray cluster runs: none "
                              "is known here (no RAY_ADDRESS, no `ray start --head` on this "
                              "machine); start one, give its HOST:PORT, or null for a local "
                              "instance")
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_SECONDS).close()
    except (OSError, ValueError) as error:
        raise ConfigError("ray.address", address, f"the address of a running Ray cluster: "
                          f"nothing answers at {target} within {REACH_SECONDS:.0f} s ({error}); "
                          "start one with `ray start --head`, or null for a local "
                          "instance") from None


def actor_resources(cfg: DictConfig, cluster: dict) -> tuple[float, float]:
    """(CPUs per worker actor, CPUs of the server actor) on a cluster with `cluster` resources:
    as configured, checked to fit; with `ray.worker_cpus` null one CPU each where the cluster
    has enough, else its CPUs shared evenly (Ray reserves in units of 1e-4)."""
    workers, ray_cfg = int(cfg.workers), cfg.ray
    cpus, gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    server = float(ray_cfg.server_cpus)
    if ray_cfg.worker_cpus is None:
        if cpus >= workers + server:
            per_worker = 1.0
        else:
            share = np.floor(cpus / (workers + (1 if server else 0)) * 1e4) / 1e4
            per_worker, server = float(share), min(server, float(share))
    else:
        per_worker = float(ray_cfg.worker_cpus)
        if workers * per_worker + server > cpus + 1e-9:
            raise ConfigError("ray.worker_cpus", per_worker,
                              f"at most ({cpus:g} - ray.server_cpus={server:g}) / {workers} "
                              f"workers: this Ray cluster has {cpus:g} CPUs (null shares them)")
    need_gpus = workers * float(ray_cfg.worker_gpus)
    if need_gpus > gpus + 1e-9:
        raise ConfigError("ray.worker_gpus", ray_cfg.worker_gpus,
                          f"at most {gpus / workers:g} per worker: this Ray cluster has "
                          f"{gpus:g} GPUs for {workers} workers")
    return per_worker, server


def _actor_env(cfg: DictConfig, gpus: float) -> dict:
    """Environment variables of an actor process: XLA's CPU threads as the run sets them (one
    per actor by default: the actors are the parallelism), CPU-only JAX without a GPU."""
    threads = cfg.get("xla_cpu_threads") or 1
    env = {"PJRT_NPROC": str(threads)}
    if not gpus:
        env["JAX_PLATFORMS"] = "cpu"
    return env


def make_ray_trainer(cfg: DictConfig, spec: EnvSpec, network,
                     keep_history: bool = False) -> "RayA3CTrainer":
    """Start (or join) Ray and create the actors (`ServerProcess`, `WorkerProcess`) of a
    validated run config; they build their jitted calls in the background while the driver
    goes on."""
    import ray

    server_class, worker_class = ServerProcess, WorkerProcess  # module attributes: tests swap

    owns_ray = connect(cfg)
    try:
        cluster = ray.cluster_resources()
        worker_cpus, server_cpus = actor_resources(cfg, cluster)
        config = OmegaConf.to_container(cfg, resolve=True)
        server_name = f"jaxac-a3c-server-{uuid.uuid4().hex[:12]}"
        server = ray.remote(server_class).options(
            num_cpus=server_cpus, max_restarts=0, name=server_name,
            runtime_env={"env_vars": _actor_env(cfg, 0)}).remote(config, keep_history)
        gpus = float(cfg.ray.worker_gpus)
        worker_actor = ray.remote(worker_class).options(
            num_cpus=worker_cpus, num_gpus=gpus, max_restarts=int(cfg.ray.max_restarts),
            max_task_retries=0, runtime_env={"env_vars": _actor_env(cfg, gpus)})
        coefs = entropy_coefficients_of(cfg)
        workers = [worker_actor.remote(config, i, coefs[i], server_name)
                   for i in range(int(cfg.workers))]
    except BaseException:
        if owns_ray:
            ray.shutdown()
        raise
    learner = make_learner(cfg, spec, network)
    params_key, keys = worker_keys(int(cfg.seed), int(cfg.workers))
    learner.init_state(params_key)  # fixes the layouts the driver reads checkpoints with
    placement = {"address": cfg.ray.address, "cluster_cpus": cluster.get("CPU"),
                 "cluster_gpus": cluster.get("GPU", 0.0), "worker_cpus": worker_cpus,
                 "worker_gpus": gpus, "server_cpus": server_cpus,
                 "max_restarts": int(cfg.ray.max_restarts)}
    log.info(f"Ray: {len(workers)} worker actors ({worker_cpus:g} CPU, {gpus:g} GPU each) and "
             f"a server actor ({server_cpus:g} CPU) on a cluster of {cluster.get('CPU', 0):g} "
             f"CPUs{'' if cfg.ray.address is None else ' at ' + str(cfg.ray.address)}")
    return RayA3CTrainer(learner, server, workers, keys, coefs, placement, owns_ray,
                         bool(cfg.get("stop_when_solved", False)))


class RayA3CTrainer:
    """The driver's side of a Ray run: starts the workers' loops, watches them (restarting the
    dead, ending the run on an exception or a lost server), and reads the server's reports."""

    trains_in_background = True  # see jaxac.loop.Trainer

    seeds = 1

    def __init__(self, learner, server, workers: list, keys: jax.Array,
                 entropy_coefs: list[float], placement: dict, owns_ray: bool,
                 stop_when_solved: bool = False):
        self.learner, self.server, self.workers = learner, server, workers
        self.keys, self.entropy_coefs, self.placement = keys, entropy_coefs, placement
        self.owns_ray, self.stop_when_solved = owns_ray, stop_when_solved
        self.initial_envs: list[np.ndarray] | None = None
        self.totals = {"updates": 0, "staleness": 0, "interleaved": 0}
        self.restarts = [0] * len(workers)
        # restarted workers not yet joined again -> their generation on the server at the death
        self._rejoining: dict[int, int] = {}
        self.runs: dict[Any, int] = {}  # each running loop's reference -> its worker
        self._progress = {"env_steps": 0, "budget_used": False, "solved_env_steps": None,
                          "stopping": False, "diverged": None,
                          "generation": [0] * len(workers)}
        self._failure: BaseException | None = None
        self._frozen: dict | None = None  # the report a pause took (log rows and checkpoint)
        self._final: dict | None = None  # the last report, taken when the run stopped
        self._last = {"time": time.perf_counter(), "steps": 0, "cost": None}
        self._stopped = False

    # ----- set-up ------------------------------------------------------------------------------

    def restore(self, checkpoint: CheckpointInfo) -> None:
        template = {"state": np.zeros(self.learner.state.size, np.float32),
                    "envs": jax.device_get(jax.vmap(self.learner.init_envs)(self.keys))}
        restored = load_checkpoint(checkpoint, template)
        meta = checkpoint.meta
        solved = meta["solved_env_steps"]
        solved = solved[0] if isinstance(solved, list) else solved
        self._call(self.server.restore.remote(
            restored["state"], int(meta["version"]), list(meta["worker_env_steps"]),
            list(meta["recent_returns"]), solved))
        self.initial_envs = [np.asarray(self.learner.pack_envs(
            jax.tree.map(lambda x, i=i: x[i], restored["envs"]))) for i in range(len(self.keys))]
        self.totals = dict(meta["totals"])
        self._progress["env_steps"] = sum(meta["worker_env_steps"])

    def compile(self) -> float:
        """Wait until every actor has started and compiled its calls (in parallel)."""
        import ray

        start = time.perf_counter()
        refs = [self.server.compile.remote()] + [w.compile.remote() for w in self.workers]
        try:
            ray.get(refs)
        except Exception:
            self.close()
            raise
        return time.perf_counter() - start

    def start(self) -> None:
        envs = self.initial_envs or [np.asarray(self.learner.fresh_env_vector(k))
                                     for k in self.keys]
        self._call(self.server.begin.remote(envs))
        self.runs = {w.run.remote(0, envs[i]): i for i, w in enumerate(self.workers)}
        self._last = {"time": time.perf_counter(), "steps": self._progress["env_steps"],
                      "cost": None}

    @property
    def final_report(self) -> dict | None:
        """The server's last report (state, counters, cost, the records not yet logged), taken
        by `stop`; None before, or when the server was lost."""
        return self._final

    # ----- watching the workers ---------------------------------------------------------------
    def advance(self, env_steps: int, stop: StopRequest) -> None:
        import ray

        while (self._failure is None and self.runs and not stop.requested
               and self._progress["env_steps"] < env_steps):
            done, _ = ray.wait(list(self.runs), num_returns=len(self.runs),
                               timeout=POLL_SECONDS)
            for ref in done:
                self._loop_ended(ref)
            if self._failure is None:
                with contextlib.suppress(ServerLost):  # kept in _failure, raised by the driver
                    self._progress = self._call(self.server.progress.remote())
                joined = self._progress["generation"]
                self._rejoining = {i: g for i, g in self._rejoining.items() if joined[i] == g}

    def _loop_ended(self, ref) -> None:
        """A worker's loop returned or raised: done, restart it, or end the run."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        i = self.runs.pop(ref)
        try:
            ray.get(ref)
            return  # the server said stop: budget used, stopping, or diverged
        except RayTaskError as error:
            if not self._server_alive():
                return
            if isinstance(error.cause, RayActorError):  # its server call failed: not its fault
                self._restart(i, error.cause)
                return
            self._failure = WorkerFailed(i, str(error))
        except RayActorError as error:  # the actor's process died (killed, its node lost)
            if self._server_alive() and not self._stopped:
                self._restart(i, error)

    def _restart(self, i: int, error: BaseException) -> None:
        """Worker i's actor died or is restarting: run its loop again once Ray has restarted it;
        without restarts left, go on without it."""
        from ray.exceptions import ActorUnavailableError

        why = str(error).splitlines()[0]
        if not isinstance(error, ActorUnavailableError):  # dead for good: out of restarts
            log.error(f"A3C worker {i} is gone ({why}); no ray.max_restarts left, the run goes "
                      "on without it")
            self._call(self.server.retire.remote(i))
            if not self.runs:
                self._failure = WorkerFailed(i, f"every worker actor is gone; the last: {why}")
            return
        if i not in self._rejoining:  # a new death (not a call that found it still restarting)
            self.restarts[i] += 1
            self._rejoining[i] = self._progress["generation"][i]
            log.warning(f"A3C worker {i} died ({why}); Ray restarts it (restart "
                        f"{self.restarts[i]}), and it goes on from the newest snapshot")
        self.runs[self.workers[i].run.remote(self.restarts[i])] = i

    def _server_alive(self) -> bool:
        """Ping the server; a dead one ends the run (`ServerLost`)."""
        try:
            self._call(self.server.progress.remote(), timeout=SERVER_ANSWER_SECONDS)
        except ServerLost:
            return False
        return True

    def _call(self, ref, timeout: float | None = None):
        """`ray.get(ref)` of a server call; a dead (or silent) server ends the run."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        try:
            return ray.get(ref, timeout=timeout)
        except (RayActorError, GetTimeoutError) as error:
            if not isinstance(self._failure, ServerLost):
                self._failure = ServerLost(
                    f"the A3C parameter server actor is lost ({str(error).splitlines()[0]}); "
                    "the shared parameters and optimizer state went with it, and the run's "
                    "newest periodic checkpoint holds the state to resume from")
            raise self._failure from None

    # ----- the driver's interface (jaxac.loop.Trainer) ----------------------------------------
    @property
    def env_steps(self) -> int:
        return self._progress["env_steps"]

    @property
    def finished(self) -> bool:
        """The budget is used up, or training ended by itself (not by a stop request)."""
        p = self._progress
        return (p["budget_used"] or p["diverged"] is not None or self._failure is not None
                or (self.stop_when_solved and p["solved_env_steps"] is not None))

    def _report(self, with_state: bool) -> dict | None:
        if self._final is not None:
            return self._final
        if isinstance(self._failure, ServerLost):
            return None
        try:
            report = self._call(self.server.report.remote(with_state))
        except ServerLost:
            return None
        self._progress = {k: report[k] for k in self._progress}
        return report

    def log_rows(self) -> list[MetricRow]:
        report = self._frozen or self._report(False)
        if report is None or report.get("logged"):
            return []
        report["logged"] = True
        steps, records = report["env_steps"], report["records"]
        if steps == self._last["steps"] and not records:
            return []
        now = time.perf_counter()
        shared = SimpleNamespace(recent=report["recent"], worker_steps=report["worker_steps"],
                                 solved_env_steps=report["solved_env_steps"])
        cost, before = report["cost"], self._last["cost"] or {}
        updates = cost["updates"] - before.get("updates", 0)
        server_us = ((cost["server_seconds"] - before.get("server_seconds", 0.0)) * 1e6
                     / updates if updates else None)
        row = interval_row(steps, report["version"], records, report["episodes"], shared,
                           self.totals, report["learning_rate"], now - self._last["time"],
                           extra={"worker_restarts": sum(self.restarts),
                                  "lost_rollouts": report["lost_rollouts"],
                                  "server_us_per_update": server_us})
        self._last = {"time": now, "steps": steps, "cost": cost}
        return [row]

    @contextlib.contextmanager
    def paused(self):
        """One report of the server, state included, taken at one instant: the log row and the
        checkpoint of this log point both come from it (the workers go on meanwhile)."""
        self._frozen = self._report(True)
        try:
            yield self._frozen is not None
        finally:
            self._frozen = None

    def checkpoint(self) -> tuple[Any, dict]:
        report = self._frozen or self._report(True)
        return ({"state": report["state"], "envs": self.learner.stack_envs(report["envs"])},
                {"version": report["version"], "worker_env_steps": report["worker_steps"],
                 "recent_returns": report["recent"], "totals": dict(self.totals)})

    def divergence(self) -> Divergence | None:
        diverged = self._progress["diverged"]
        if diverged is None:
            return None
        update, flags = diverged
        return Divergence(update, self.env_steps, first_nonfinite(flags), 0)

    def stop(self) -> None:
        """Let every worker finish its rollout and push, take the final report, and end the
        actors (and the Ray instance this run started)."""
        import ray

        if self._stopped:
            return
        self._stopped = True
        try:
            if self._failure is None:
                self._call(self.server.stop.remote())
                deadline = time.monotonic() + STOP_SECONDS
                while self.runs and time.monotonic() < deadline and self._failure is None:
                    done, _ = ray.wait(list(self.runs), num_returns=len(self.runs),
                                       timeout=POLL_SECONDS)
                    for ref in done:
                        self._loop_ended(ref)
                if self.runs:
                    log.error(f"{len(self.runs)} worker(s) did not stop within {STOP_SECONDS:.0f}"
                              " s; ended")
            if not isinstance(self._failure, ServerLost):
                self._final = self._report(True)
        except ServerLost:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """End every actor, and the Ray instance if this run started it."""
        import ray

        for actor in [*self.workers, self.server]:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if self.owns_ray:
            ray.shutdown()
            self.owns_ray = False

    def failure(self) -> BaseException | None:
        return self._failure

    def policy(self) -> tuple[Any, Any]:
        """The final policy, or during training the server's current one (the workers go on)."""
        state = (self._final["state"] if self._final is not None
                 else self._call(self.server.state_now.remote()))
        params = self.learner.unravel(state[self.learner.state.params])
        stats = jax.device_get(self.learner.stats_layout.unpack(
            state[self.learner.state.obs_stats]))
        return (jax.tree.map(lambda x: x[None], params), jax.tree.map(lambda x: x[None], stats))

    def summary(self) -> dict:
        final = self._final or {}
        cost = final.get("cost") or {}
        updates = max(cost.get("updates", 0), 1)
        return {**summary_fields("locked", final.get("version", 0), self.totals,
                                 self.entropy_coefs, final.get("worker_steps", [])),
                "backend": "ray", "ray": self.placement,
                "worker_restarts": list(self.restarts),
                "lost_rollouts": final.get("lost_rollouts", 0),
                "server_us_per_update": cost.get("server_seconds", 0.0) * 1e6 / updates,
                "bytes_in_per_update": cost.get("bytes_in", 0) / updates,
                "snapshot_puts": cost.get("puts", 0),
                "snapshot_bytes": cost.get("bytes_out", 0) / max(cost.get("puts", 0), 1)}
