"""One A2C run over many processes (and hosts) with `jax.distributed`: start-up, the checks every
process makes against the others, the decisions they take together, and what a lost process
ends in.

Every process runs the same program: `python -m jaxac.run ... distributed.num_processes=N
distributed.process_id=i distributed.coordinator=HOST:PORT`, or `distributed.auto=true` where JAX
reads all three from the cluster environment (SLURM, Open MPI). Process 0 hosts the coordinator
and owns the run directory; the mesh spans every device of every process, so the A2C update is
the same one all-reduce per update as on one process (`jaxac.a2c`).

The processes talk through two channels: the collectives of the compiled update (NCCL on GPUs,
gloo on CPUs), and the coordinator's key-value store, used here, outside the compiled program,
to exchange the config digest, the run directory and, once per log interval, the stop decision.
A process that dies breaks both: its peers' next collective fails (gloo: at once) or their next
key-value read times out, and `LostProcess` names who is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf

from jaxac.config import (ConfigError, cluster_environment, multi_process_requested,
                          planned_process, validate_distributed)

# What the config asks for, decided before JAX starts, lives in config.py (which this builds on).
requested, validate, _cluster = multi_process_requested, validate_distributed, cluster_environment

log = logging.getLogger("jaxac")

# Keys that differ between the processes of one run by design.
PER_PROCESS_KEYS = ("distributed.process_id",)
# Exit status of a process that lost a peer or could not join (jaxac.run documents it).
EXIT_LOST = 6
_PREFIX = "jaxac"


class DistributedError(RuntimeError):
    """A multi-process run cannot start or cannot go on; the message says why and who."""


class LostProcess(DistributedError):
    """Another process of the run died, was killed or stopped answering."""


# ----- start-up ----------------------------------------------------------------------------------
def start(cfg: DictConfig) -> None:
    """Join the run's processes (`jax.distributed.initialize`), once per process; nothing for a
    single-process config. On CPUs the collectives run over gloo. A process that cannot reach the
    coordinator, or a process 0 whose peers do not all join, within `distributed.timeout`
    seconds ends with a message naming the address (exit status EXIT_LOST: JAX's own give-up is
    a fatal abort, so a watchdog speaks first)."""
    if not requested(cfg) or is_started():
        return
    d = cfg.distributed
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = int(d.timeout)
    kwargs = dict(initialization_timeout=timeout + 30,
                  heartbeat_timeout_seconds=int(d.heartbeat_timeout))
    if not d.auto:
        kwargs.update(coordinator_address=str(d.coordinator), num_processes=int(d.num_processes),
                      process_id=int(d.process_id))
    elif d.coordinator:
        kwargs.update(coordinator_address=str(d.coordinator))
    pid, n = planned_process(cfg)
    where = d.coordinator or _cluster_coordinator() or "the cluster's coordinator address"
    log.info(f"process {pid} of {n}: joining the run at {where} (waiting up to {timeout} s)")
    joined = threading.Event()

    def give_up() -> None:
        if joined.wait(timeout):
            return
        if pid == 0:
            why = (f"not every process joined the coordinator this process serves at {where} "
                   f"within distributed.timeout={timeout} s (all {n} must start, with the same "
                   "distributed.coordinator and num_processes)")
        else:
            why = (f"could not reach the coordinator at {where} within distributed.timeout="
                   f"{timeout} s: is process 0 running, and can this host reach that address?")
        abandon(f"process {pid} of {n}: {why}")

    threading.Thread(target=give_up, name="jaxac-join-watchdog", daemon=True).start()
    jax.distributed.initialize(**kwargs)
    joined.set()
    log.info(f"process {jax.process_index()} of {jax.process_count()} joined: "
             f"{len(jax.local_devices())} local and {len(jax.devices())} devices in all")


def _cluster_coordinator() -> str | None:
    cluster = _cluster()
    try:
        return cluster.get_coordinator_address(None, None) if cluster is not None else None
    except Exception:  # noqa: BLE001 - only for the message
        return None


def abandon(message: str, code: int | None = None) -> None:
    """Log `message` and end this process at once with `code` (default EXIT_LOST), skipping
    jax.distributed's exit barrier, which would wait for the lost peers (and then abort)."""
    log.error(message)
    for handler in logging.getLogger().handlers + log.handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_LOST if code is None else code)


def is_started() -> bool:
    return _client() is not None


def _client():
    # The coordinator's key-value store has no public JAX API; this is the one jax.distributed
    # itself creates (and multihost_utils uses).
    from jax._src import distributed

    return distributed.global_state.client


def process_index() -> int:
    return jax.process_index() if is_started() else 0


def process_count() -> int:
    return jax.process_count() if is_started() else 1


def is_main() -> bool:
    """Whether this process owns the run directory (process 0, or the only process)."""
    return process_index() == 0


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# ----- exchanges over the key-value store --------------------------------------------------------
def _get(key: str, timeout_s: float) -> str:
    return _client().blocking_key_value_get(key, int(timeout_s * 1000))


def exchange(name: str, value: str, timeout_s: float) -> list[str]:
    """Every process's `value` under `name`, in process order (each process calls it with its
    own). LostProcess, naming the processes that did not answer, after `timeout_s` seconds."""
    me, n = process_index(), process_count()
    client = _client()
    client.key_value_set(f"{_PREFIX}/{name}/{me}", value)
    values, missing, wait_s = [], [], timeout_s
    for i in range(n):
        try:
            values.append(value if i == me else _get(f"{_PREFIX}/{name}/{i}", wait_s))
        except Exception:  # noqa: BLE001 - a timeout or a lost coordinator
            missing.append(i)
            wait_s = 0.5  # the others have had their time: do not wait that long again
    if missing:
        raise LostProcess(lost_message(missing, f"did not answer within {timeout_s:.0f} s"))
    return values


def lost_message(processes: list[int], how: str) -> str:
    who = ", ".join(str(i) for i in processes)
    coordinator = " (process 0 hosts the coordinator)" if 0 in processes else ""
    return (f"lost process {who} of {process_count()}{coordinator}: it {how}; it died, was "
            f"killed or hangs. This process stops; see run.process<i>.log and the last periodic "
            f"checkpoint (resume=<run dir> continues from it)")


def comparable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as flat dotted keys, without those that differ per process."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    walk(container, "")
    for key in PER_PROCESS_KEYS:
        flat.pop(key, None)
    return flat


def config_digest(flat: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()


def check_same_config(cfg: DictConfig) -> None:
    """Refuse to go on unless every process was given the same config (all but the per-process
    keys): ConfigError naming the keys in which processes differ from process 0. Every process
    sees every config, so all of them refuse together, with the same message."""
    if process_count() == 1:
        return
    mine = comparable_config(cfg)
    digests = exchange("config-digest", config_digest(mine), float(cfg.distributed.timeout))
    if len(set(digests)) == 1:
        return
    configs = [json.loads(v) for v in exchange("config", json.dumps(mine, default=str),
                                               float(cfg.distributed.timeout))]
    reference = configs[0]
    odd = [i for i, d in enumerate(digests) if d != digests[0]]

    def shown(config: dict, key: str) -> str:
        return json.dumps(config.get(key, "(absent)"), default=str)

    differences = []
    for i in odd:
        for key in sorted(set(reference) | set(configs[i])):
            if shown(reference, key) != shown(configs[i], key):
                differences.append(f"{key}: process 0 has {shown(reference, key)}, process {i} "
                                   f"{shown(configs[i], key)}")
    keys = sorted({d.split(":", 1)[0] for d in differences})
    raise ConfigError("distributed", f"process {process_index()} of {process_count()}",
                      f"the same config on every process (all but distributed.process_id): "
                      f"process(es) {', '.join(map(str, odd))} differ from process 0 in "
                      f"{', '.join(keys)} ({'; '.join(differences)})")


def share_run_dir(run_dir: str | None, refusal: str | None = None,
                  timeout_s: float = 60.0) -> str:
    """Process 0's run directory, on every process (process 0 passes it, or the `refusal` that
    ends the run: every process then raises DistributedError with it)."""
    values = exchange("run-dir", json.dumps({"dir": run_dir, "refusal": refusal}), timeout_s)
    shared = json.loads(values[0])
    if shared["refusal"]:
        raise DistributedError(f"process 0 refused the run: {shared['refusal']}")
    return shared["dir"]


class StopVote:
    """The stop decision of a multi-process run, taken together once per log interval: every
    process stops when any of them was asked to (SIGINT/SIGTERM in one terminal stops the run)."""

    def __init__(self, timeout_s: float, first_timeout_s: float):
        """`first_timeout_s` for the vote before training (the processes' compilations may take
        different times), `timeout_s` for the votes after an interval (which every process
        leaves at the same moment, through its all-reduce)."""
        self.timeout_s, self.first_timeout_s, self.round = timeout_s, first_timeout_s, 0

    def any(self, mine: bool) -> bool:
        if process_count() == 1:
            return mine
        self.round += 1
        votes = exchange(f"stop/{self.round}", "1" if mine else "0",
                         self.first_timeout_s if self.round == 1 else self.timeout_s)
        if self.round > 1:  # this process's vote of the round before is read by everyone by now
            _client().key_value_delete(f"{_PREFIX}/stop/{self.round - 1}/{process_index()}")
        return "1" in votes


class PeerMonitor:
    """Watches the other processes of the run from a background thread, so that a lost peer ends
    this process within seconds whatever it is doing (compiling, in a collective, writing).

    Every process bumps its own counter in the key-value store every `period_s`; a peer whose
    counter has not moved for `lost_after_s` (and that has not said it finished), or a
    coordinator that no longer answers, is lost: `on_lost(message)` runs (it records the failure
    and ends the process). JAX's own heartbeat (`distributed.heartbeat_timeout`) is the
    backstop: it aborts every process a little later, with its own message.
    """

    def __init__(self, lost_after_s: float, on_lost, period_s: float = 1.0):
        self.lost_after_s, self.on_lost, self.period_s = lost_after_s, on_lost, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="jaxac-peer-monitor",
                                        daemon=True)

    def start(self) -> "PeerMonitor":
        if process_count() > 1:
            self._thread.start()
        return self

    def finished(self) -> None:
        """This process ends normally: its peers stop watching it, and it stops watching."""
        self._stop.set()
        if process_count() > 1:
            with contextlib.suppress(Exception):
                _client().key_value_set(f"{_PREFIX}/done/{process_index()}", "1")

    def _watch(self) -> None:
        client, me, n = _client(), process_index(), process_count()
        seen: dict[int, tuple[str | None, float]] = {}
        beat = 0
        while not self._stop.wait(self.period_s):
            now = time.monotonic()
            try:
                beat += 1
                client.key_value_set(f"{_PREFIX}/beat/{me}", str(beat), allow_overwrite=True)
                lost = []
                for i in range(n):
                    if i == me or _try_get(client, f"{_PREFIX}/done/{i}") is not None:
                        continue
                    value = _try_get(client, f"{_PREFIX}/beat/{i}")
                    last_value, since = seen.get(i, (None, now))
                    if value != last_value:
                        seen[i] = (value, now)
                    elif now - since > self.lost_after_s:
                        lost.append(i)
            except Exception as error:  # noqa: BLE001 - the coordinator (process 0) is gone
                if not self._stop.is_set():
                    self.on_lost(lost_message([0], f"no longer answers ({_first_line(error)})"))
                return
            if lost and not self._stop.is_set():
                self.on_lost(lost_message(lost, f"sent no heartbeat for {self.lost_after_s:.0f} s"))
                return


def _try_get(client, key: str) -> str | None:
    try:
        return client.key_value_try_get(key)
    except Exception:  # noqa: BLE001 - not set (yet)
        return None


def lost_in_collective(error: BaseException, wait_s: float = 2.0) -> LostProcess:
    """The LostProcess behind a failed collective (a peer closed its connections): the processes
    that do not answer a roll call over the key-value store within `wait_s` seconds (the
    survivors' collectives fail together, so they all answer it)."""
    me, n = process_index(), process_count()
    how = f"broke off the update's all-reduce ({_first_line(error)})"
    try:
        client = _client()
        client.key_value_set(f"{_PREFIX}/alive/{me}", "1")
        deadline = time.monotonic() + wait_s
        answered = {me}
        while time.monotonic() < deadline and len(answered) < n:
            time.sleep(0.1)
            answered = {int(key.rsplit("/", 1)[-1])
                        for key, _ in client.key_value_dir_get(f"{_PREFIX}/alive/")}
        gone = [i for i in range(n) if i not in answered]
    except Exception:  # noqa: BLE001 - the coordinator itself is gone, with process 0
        gone = [0]
    return LostProcess(lost_message(gone or ["(unknown)"], how))


def is_collective_failure(error: BaseException) -> bool:
    """Whether `error` is a collective that failed because a peer went away."""
    text = str(error)
    return any(s in text for s in ("Gloo", "gloo", "NCCL", "Connection reset", "heartbeat",
                                   "coordination service", "UNAVAILABLE"))


# ----- global arrays -----------------------------------------------------------------------------
def to_host(tree: Any) -> Any:
    """`tree` as NumPy arrays on this process, whole: arrays split over the processes are
    gathered (a collective: every process calls it at the same point)."""
    if process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def whole(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(whole, tree)


def place(tree: Any, shardings: Any) -> Any:
    """Host arrays (the same on every process) onto `shardings`, which may span processes."""
    if process_count() == 1:
        return jax.device_put(tree, shardings)

    def put(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree, shardings)
