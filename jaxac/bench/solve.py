"""Time to solve CartPole-v1 with the default presets, each run a fresh `python -m jaxac.run`
(compilation included), with a cold and then a warm JAX compilation cache."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jaxac.bench.timing import Spread, spread

# Stable-Baselines3's A2C settings (conf/experiment/sb3_a2c.yaml): the bench trains A2C on
# CartPole-v1 with them wherever it is compared with SB3.
SB3_SETTINGS = ["+experiment=sb3_a2c"]

PHASES = ("cold", "warm")


@dataclass
class SolveRun:
    seed: int
    env_steps: int | None  # when the last-100 training mean reached 475; None: never
    train_seconds: float | None  # wall seconds from the start of training to then
    compile_seconds: float
    process_seconds: float


@dataclass
class SolvePhase:
    runs: list[SolveRun]
    solved: str  # "solved/runs"
    env_steps: Spread | None = None  # over the solved runs
    train_seconds: Spread | None = None
    compile_seconds: Spread | None = None  # over all runs


@dataclass
class SolveResult:
    algo: str
    cold: SolvePhase
    warm: SolvePhase


def time_to_solve(algo: str, seeds: int, workdir: Path) -> SolveResult:
    """Wall seconds and env steps to solve CartPole-v1 with `algo`'s default preset (A2C: with
    SB3's settings, `+experiment=sb3_a2c`), per seed."""
    runs: dict[str, list[SolveRun]] = {phase: [] for phase in PHASES}
    for seed in range(seeds):
        cache = workdir / f"cache-{algo}-{seed}"  # empty: cold; the same again: warm
        for phase in PHASES:
            run_dir = workdir / f"{algo}-{seed}-{phase}"
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "jaxac.run", f"algo={algo}", f"seed={seed}",
                 *(SB3_SETTINGS if algo == "a2c" else []),  # as SB3 is run
                 "stop_when_solved=true", "eval_episodes=0", f"compilation_cache_dir={cache}",
                 f"hydra.run.dir={run_dir}"], capture_output=True, text=True)
            process_seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"time-to-solve run failed:\n{done.stderr[-3000:]}")
            summary = json.loads((run_dir / "summary.json").read_text())
            solved = summary["solved"]
            runs[phase].append(SolveRun(seed, solved["env_steps"][0], solved["wall_seconds"][0],
                                        summary["compile_seconds"], process_seconds))
    return SolveResult(algo, *(summarize(runs[phase]) for phase in PHASES))


def summarize(runs: list[SolveRun]) -> SolvePhase:
    """A phase's runs with the spread of the solved ones."""
    solved = [r for r in runs if r.env_steps is not None]
    phase = SolvePhase(runs, f"{len(solved)}/{len(runs)}")
    if solved:
        phase.env_steps = spread([r.env_steps for r in solved])
        phase.train_seconds = spread([r.train_seconds for r in solved])
        phase.compile_seconds = spread([r.compile_seconds for r in runs])
    return phase
