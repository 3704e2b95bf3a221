"""The multi-process section: CartPole-v1 A2C as 2 processes x 1 CPU device on loopback
(jax.distributed, gloo all-reduce between the processes) against 1 process x 2 CPU devices, the
same batch and the same mesh size, through `python -m jaxac.run` itself."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jaxac.bench.timing import Spread, spread

WORKERS = (512, 4096)
# Env steps per run: about 10 s of training at the single-process rates measured on 2 cores.
STEPS = {512: 6_000_000, 4096: 16_000_000}


@dataclass
class DistributedRow:
    workers: int
    one_process: Spread  # env steps/s, 1 process x 2 CPU devices
    two_processes: Spread  # env steps/s, 2 processes x 1 CPU device
    ratio: float  # two_processes / one_process (medians)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(workers: int, run_dir: Path) -> list[str]:
    steps = STEPS.get(workers, 2000 * workers)
    return [f"workers={workers}", f"total_steps={steps}", f"log_interval={steps // 10}",
            "eval_episodes=0", "checkpoint_every=0", "compilation_cache_dir=null",
            f"hydra.run.dir={run_dir}"]


def _rate(run_dir: Path) -> float:
    return float(json.loads((run_dir / "summary.json").read_text())["steps_per_second_median"])


def one_process(workers: int, run_dir: Path) -> float:
    """Env steps/s of one process on 2 CPU devices."""
    subprocess.run([sys.executable, "-m", "jaxac.run", "devices=2",
                    *_overrides(workers, run_dir)], check=True, capture_output=True)
    return _rate(run_dir)


def two_processes(workers: int, run_dir: Path) -> float:
    """Env steps/s of two processes of 1 CPU device each, joined on loopback."""
    common = ["distributed.num_processes=2", f"distributed.coordinator=127.0.0.1:{_free_port()}",
              "devices=1", "xla_cpu_threads=1"]
    procs = [subprocess.Popen([sys.executable, "-m", "jaxac.run", *common,
                               f"distributed.process_id={i}", *_overrides(workers, run_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"a 2-process bench run failed: {err[-2000:]}")
    return _rate(run_dir)


def measure(workers_list: tuple[int, ...], repeats: int) -> list[DistributedRow]:
    """One row per batch size: both layouts, alternated, `repeats` times each."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in workers_list:
            one, two = [], []
            for r in range(repeats):
                one.append(one_process(workers, Path(tmp) / f"one-{workers}-{r}"))
                two.append(two_processes(workers, Path(tmp) / f"two-{workers}-{r}"))
            rows.append(DistributedRow(workers, spread(one), spread(two),
                                       spread(two).median / spread(one).median))
    return rows
