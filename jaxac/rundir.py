"""A run directory belongs to one run: an exclusive lock for the run's whole life, a fresh run
never reuses a directory that holds a run, and the paths a config names are checked before
anything is written.

The lock is an OS file lock (`fcntl.flock` on `RUN_DIR/.jaxac.lock`), so the kernel releases it
when the process dies, SIGKILL included: a killed run leaves no stale lock. `python -m jaxac.run`
checks and locks its directory from a Hydra callback (`OwnershipCallback`), before Hydra writes
`.hydra/` or `run.log` into it; `run.execute` takes the same lock for runs started from Python.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from jaxac.config import ConfigError, check_writable_dir
from jaxac.metrics import write_json

LOCK_FILE = ".jaxac.lock"
# What a directory holds once a run has used it (Hydra's own files alone do not count).
RUN_MARKERS = ("metrics.jsonl", "summary.json", "failure.json", "checkpoint")
# Names that end up in directory names: letters, digits and . _ - only, and no "..".
SAFE_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9._-]+$")

_held: dict[Path, int] = {}  # run directory -> the open lock file of this process


class NotThisRunsDirectory(ConfigError):
    """The directory belongs to another run: nothing may be written into it."""


class DirectoryInUse(NotThisRunsDirectory):
    """Another process holds the run directory."""


class DirectoryTaken(NotThisRunsDirectory):
    """A fresh run was pointed at a directory that holds another run."""


def holds_a_run(run_dir: str | os.PathLike) -> bool:
    """Whether `run_dir` already holds (the records of) a run."""
    return any((Path(run_dir) / marker).exists() for marker in RUN_MARKERS)


def lock(run_dir: str | os.PathLike, key: str = "hydra.run.dir") -> None:
    """Hold `run_dir` for this process until it exits (idempotent). DirectoryInUse, naming the
    directory and the holder's pid, if another process holds it."""
    path = Path(run_dir).resolve()
    if path in _held:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise DirectoryInUse(key, str(path), f"a directory no other process is using: process "
                             f"{holder} holds it (a run in progress); wait for it, or use "
                             "another directory") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[path] = fd  # kept open: closing it (or exiting) releases the lock


def release(run_dir: str | os.PathLike) -> None:
    """Let go of a directory this process holds (tests; a process's exit does it anyway)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)


def check_resume_path(resume: str) -> None:
    """ConfigError unless `resume` names a jaxac run directory (before anything is written)."""
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError("resume", resume, "the path of an existing run directory")
    if not (path / ".hydra" / "config.yaml").exists():
        raise ConfigError("resume", resume, "a jaxac run directory (one holding "
                          ".hydra/config.yaml); nothing was written to it")


def check_name(key: str, value: Any) -> None:
    """ConfigError unless `value` is safe inside a directory name."""
    if not SAFE_NAME.match(str(value)):
        raise ConfigError(key, value, "a name of letters, digits, '.', '_' and '-' (it becomes "
                          "part of a directory name)")


def claim_fresh(run_dir: str | os.PathLike, key: str = "hydra.run.dir") -> None:
    """Lock `run_dir` for a fresh run; ConfigError if it already holds a run, or cannot be a
    directory this process writes to."""
    check_writable_dir(key, str(run_dir))
    if holds_a_run(run_dir):
        raise DirectoryTaken(key, str(run_dir), "a directory that holds no run yet: this one has "
                          "the records of another run (continue it with resume=, or choose a "
                          "new directory)")
    lock(run_dir, key)


def refuse(error: ConfigError) -> None:
    """Print a refusal before any write and exit 2 (an invalid configuration)."""
    print(f"configuration error: {error}", file=sys.stderr)
    sys.exit(2)


def check_swept_values(config: DictConfig) -> None:
    """ConfigError for a swept or overridden value that would take its job directory (named by
    the overrides) out of the sweep directory."""
    excluded = set(OmegaConf.select(config, "hydra.job.config.override_dirname.exclude_keys")
                   or [])
    for override in OmegaConf.select(config, "hydra.overrides.task") or []:
        key, _, values = str(override).lstrip("+~").partition("=")
        if key in excluded:
            continue
        if "/" in values or ".." in values or "\\" in values:
            raise ConfigError(key, values, "values without '/', '\\' or '..' in a sweep: each "
                              "job's directory is named by its values")


def _claim(config: DictConfig) -> None:
    """Lock the directory a CLI run writes to: the one it resumes, or a fresh one."""
    resume = config.get("resume")
    if resume:
        check_resume_path(resume)
        lock(resume, "resume")
    else:
        claim_fresh(OmegaConf.select(config, "hydra.run.dir"))


class OwnershipCallback(Callback):
    """Hydra callback: before Hydra writes anything, check the paths and names the config puts
    into directory names, and claim the run directory (or the sweep directory)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from jaxac import distributed

        try:
            check_name("env.name", config.env.name)
            if distributed.requested(config):
                distributed.validate(config)
                self._join_run(config)
                return
            _claim(config)
        except ConfigError as error:
            refuse(error)

    @staticmethod
    def _join_run(config: DictConfig) -> None:
        """A process of a multi-process run: join the others, then process 0 claims the run
        directory and every other process writes into it (only its own log file, and no
        `.hydra/`), or all of them stop with process 0's refusal."""
        from jaxac import distributed
        from jaxac.platform import set_up_run

        set_up_run(config)  # before jax.distributed starts JAX's runtime
        distributed.start(config)
        resume = config.get("resume")
        if distributed.is_main():
            refusal = None
            try:
                _claim(config)
            except ConfigError as error:
                refusal = error
            target = str(Path(resume or OmegaConf.select(config, "hydra.run.dir")).absolute())
            try:
                distributed.share_run_dir(target, refusal and str(refusal),
                                          float(config.distributed.timeout))
            except distributed.DistributedError as error:
                distributed.abandon(str(error))
            if refusal:
                refuse(refusal)
            return
        try:
            run_dir = distributed.share_run_dir(None, None, float(config.distributed.timeout))
        except distributed.LostProcess as error:
            distributed.abandon(str(error))
        except distributed.DistributedError as error:  # process 0 refused: as a config error
            distributed.abandon(str(error), 2)
        if not resume:
            with open_dict(config.hydra), read_write(config.hydra):
                config.hydra.run.dir = run_dir

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_name("env.name", config.env.name)
            check_swept_values(config)
            sweep_dir = Path(OmegaConf.select(config, "hydra.sweep.dir"))
            if sweep_dir.exists() and any(holds_a_run(p) for p in sweep_dir.iterdir()
                                          if p.is_dir()):
                raise ConfigError("hydra.sweep.dir", str(sweep_dir), "a directory that holds "
                                  "no sweep yet: its job directories hold another sweep's runs")
        except ConfigError as error:
            refuse(error)


FAILURE_FILE = "failure.json"


def record_failure(run_dir: str | Path, kind: str, message: str, **details: Any) -> None:
    """Write `failure.json` into a run directory: what failed, in words and fields."""
    write_json(Path(run_dir) / FAILURE_FILE, {"status": "failed", "kind": kind,
                                              "message": message, **details})
