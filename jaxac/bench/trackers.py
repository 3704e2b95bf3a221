"""The trackers section: what an experiment tracker costs A2C's training throughput. Whole
`python -m jaxac.run` runs of CartPole-v1 at 8 workers (the default log cadence), with no
tracker, with TensorBoard, and with W&B offline, interleaved so that the machine's drift falls
on all three alike; each run's figure is its median interval steps/s (compilation excluded)."""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jaxac.bench.timing import Spread, spread
from jaxac.config import compose_config

WORKERS = 8
TOTAL_STEPS = 1_000_000
LOGGERS = {"none": [], "tensorboard": ["logger=tensorboard"],
           "wandb": ["logger=wandb", "logger.wandb.mode=offline"]}


@dataclass
class TrackerRow:
    """One logger over the repeats, against the runs without a tracker."""

    logger: str
    steps_per_second: Spread
    ratio: float  # median steps/s over that of logger=none


def measure(repeats: int, total_steps: int = TOTAL_STEPS) -> list[TrackerRow]:
    """Interleaved runs of each available logger; the first row is logger=none."""
    from jaxac.run import execute

    loggers = [name for name in LOGGERS
               if name == "none" or importlib.util.find_spec(
                   "tensorboardX" if name == "tensorboard" else name) is not None]
    rates: dict[str, list[float]] = {name: [] for name in loggers}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats + 1):  # the first round warms the compilation cache
            for name in loggers:
                cfg = compose_config([f"workers={WORKERS}", f"total_steps={total_steps}",
                                      "eval_episodes=0", "checkpoint_every=0",
                                      *LOGGERS[name]])
                summary = execute(cfg, Path(tmp) / f"{name}-{repeat}")
                if repeat:
                    rates[name].append(summary["steps_per_second_median"])
    base = spread(rates["none"]).median
    return [TrackerRow(name, spread(rates[name]), spread(rates[name]).median / base)
            for name in loggers]
