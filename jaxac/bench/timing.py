"""Timing and spread: calibrated repeats, rates, CPU cores used, and the typed rows' JSON form."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import typing
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Spread:
    """Repeated measurements: their median, min and max (and the measurements)."""

    median: float
    min: float
    max: float
    n: int
    values: list[float]


def spread(values: list[float]) -> Spread:
    """The Spread of `values`."""
    return Spread(float(statistics.median(values)), float(min(values)), float(max(values)),
                  len(values), [float(v) for v in values])


def to_json(row: Any) -> Any:
    """A typed row (dataclasses, lists and dicts of them) as plain JSON values."""
    if dataclasses.is_dataclass(row):
        return {f.name: to_json(getattr(row, f.name)) for f in dataclasses.fields(row)}
    if isinstance(row, list):
        return [to_json(x) for x in row]
    if isinstance(row, dict):
        return {k: to_json(v) for k, v in row.items()}
    return row


def from_json(kind: Any, data: Any) -> Any:
    """The inverse of `to_json` for a type `kind` (a dataclass, list[...], dict[str, ...])."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if data is None:
        return None
    if origin is list:
        return [from_json(args[0], x) for x in data]
    if origin is dict:
        return {k: from_json(args[1], v) for k, v in data.items()}
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return from_json(next(a for a in args if a is not type(None)), data)
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: from_json(hints[f.name], data[f.name])
                       for f in dataclasses.fields(kind) if f.name in data})
    return data


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


def in_child_process(module: str, args: list[str], environment: dict[str, str], what: str,
                     kind: Any) -> Any:
    """The rows (of type `kind`) that `python -m MODULE ARGS...` prints as JSON on its last line,
    run in a fresh process whose environment has `environment` added (settings XLA reads only
    when JAX starts); RuntimeError naming `what` if it fails."""
    child = subprocess.run([sys.executable, "-m", module, *args], env=os.environ | environment,
                           capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{child.stderr[-3000:]}")
    return from_json(kind, json.loads(child.stdout.strip().splitlines()[-1]))
