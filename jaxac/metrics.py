"""The run directory's records: `metrics.jsonl` (one JSON object per seed per log point, written
whole and flushed), `summary.json` (written atomically), and the console progress line."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxac.platform import cpu_dispatch, xla_cpu_threads, xla_cpu_vector_width

log = logging.getLogger("jaxac")

PACKAGES = ("jax", "jaxlib", "flax", "optax", "gymnax", "chex", "hydra-core", "numpy")


def json_safe(value: Any) -> Any:
    """Plain JSON values: NumPy scalars and arrays become Python ones, and non-finite floats
    become null (strict JSON has no NaN or infinity)."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class MetricsWriter:
    """Appends metric records to `metrics.jsonl`; each line is written whole and flushed at once,
    so a killed run keeps every line logged before the kill."""

    def __init__(self, run_dir: str | os.PathLike, write: bool = True):
        """`write=False`: count the records, write none (the processes other than 0 of a
        multi-process run)."""
        self.path = Path(run_dir) / METRICS_FILE
        self.lines = len(_read_lines(self.path))  # lines in the file (a resumed run appends)
        self._file = None
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(json_safe(record)) + "\n")
            self._file.flush()
        self.lines += 1

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


METRICS_FILE = "metrics.jsonl"
# Metric fields that depend on the machine and its load, not on the seed and config: everything
# else in an A2C run's metrics is reproduced exactly by the same seed and config.
MACHINE_DEPENDENT_FIELDS = ("wall_time", "steps_per_second", "updates_per_second", "rss_mb")


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []


def truncate_metrics(run_dir: str | os.PathLike, keep_lines: int) -> Path | None:
    """Cut `metrics.jsonl` back to its first `keep_lines` lines (what a checkpoint had seen), so a
    resumed run neither duplicates nor skips log points. The lines cut are moved, not deleted, to
    `metrics.after-checkpoint-<n>.jsonl`; returns that file's path, or None if nothing was cut."""
    path = Path(run_dir) / METRICS_FILE
    lines = _read_lines(path)
    if len(lines) <= keep_lines:
        return None
    n = 0
    while (aside := path.with_name(f"metrics.after-checkpoint-{n}.jsonl")).exists():
        n += 1
    aside.write_text("".join(lines[keep_lines:]), encoding="utf-8")
    tmp = temporary_path(path)
    tmp.write_text("".join(lines[:keep_lines]), encoding="utf-8")
    os.replace(tmp, path)
    return aside


def temporary_path(path: Path) -> Path:
    """A temporary file beside `path`, unique to this process and thread: written whole, then
    renamed over `path`, so two writers never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def mean_or_none(values) -> float | None:
    """Mean of the values that are not None; None when there are none (nothing to average)."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write `data` as JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = temporary_path(path)
    tmp.write_text(json.dumps(json_safe(data), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Progress:
    """Prints a progress line at most every `every_seconds` (and always for the last one)."""

    def __init__(self, label: str, total_steps: int, every_seconds: float, seeds: int = 1):
        """`total_steps` is per seed; the steps/s shown are all seeds together."""
        self.label, self.total, self.every, self.seeds = label, total_steps, every_seconds, seeds
        self.start = time.perf_counter()
        self._last = -math.inf

    def update(self, env_steps: int, steps_per_second: float, episode_return: float | None,
               last100: float | None, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.start
        frac = env_steps / max(self.total, 1)
        per_seed_rate = steps_per_second / self.seeds
        eta = (self.total - env_steps) / per_seed_rate if per_seed_rate > 0 else math.nan
        ret = "n/a" if episode_return is None else f"{episode_return:.1f}"
        l100 = "n/a" if last100 is None else f"{last100:.1f}"
        log.info(f"[{self.label}] steps {env_steps:,}/{self.total:,} ({100 * frac:.0f}%) | "
                 f"{steps_per_second:,.0f} steps/s | return {ret} (last 100: {l100}) | "
                 f"{_clock(elapsed)} elapsed, ETA {_clock(eta)}")


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def environment_info() -> dict:
    """Package versions, Python, platform and the JAX devices the run used."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "cpu_dispatch": cpu_dispatch(),  # see jaxac/platform.py
        "xla_cpu_threads": xla_cpu_threads(),  # None: one per core
        "xla_cpu_vector_width": xla_cpu_vector_width(),  # None: XLA's default, 256 bits
        "devices": [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".strip()
                    for d in devices],
    }


def resident_memory_mb() -> float | None:
    """This process's current resident memory (Linux /proc), in MiB; None where unavailable."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB else


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
