"""What a trainer hands back to the run directory writer, whichever trainer it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jaxac.normalization import ObsStats


@dataclass
class TrainResult:
    """What a finished (or interrupted) training run hands to the run directory writer."""

    params: Any  # leading axis: seed
    obs_stats: ObsStats
    env_steps: int  # per seed
    compile_seconds: float
    train_seconds: float  # wall time of the whole training loop, compilation included
    steps_per_second: list[float]  # one per logging interval, all seeds together
    solved_env_steps: list[int | None]  # per seed
    solved_wall_seconds: list[float | None]  # per seed, since training started (with compile)
    interrupted: bool = False
    extra: dict = field(default_factory=dict)  # trainer-specific summary fields
