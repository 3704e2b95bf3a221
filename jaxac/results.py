"""What a trainer hands back to the run directory writer, whichever trainer it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from jaxac.normalization import ObsStats

# What the divergence guard watches, in the order it reports them (the first non-finite one wins).
GUARDED_METRICS = ("policy_loss", "value_loss", "entropy", "grad_norm", "params")


def first_nonfinite(flags: int) -> str:
    """The name of the first guarded metric set in a bit mask (bit i: GUARDED_METRICS[i])."""
    for i, name in enumerate(GUARDED_METRICS):
        if flags >> i & 1:
            return name
    raise ValueError(f"no non-finite flag set in {flags}")


@dataclass
class Divergence:
    """Where training stopped because a loss, gradient or parameter was no longer finite."""

    update: int  # the update (1-based) whose loss, gradient or result was non-finite
    env_steps: int  # environment steps per seed when it happened
    metric: str  # one of GUARDED_METRICS
    seed_index: int = 0
    last_checkpoint_env_steps: int | None = None  # the last good checkpoint, kept on disk

    def message(self) -> str:
        kept = ("no checkpoint had been written yet" if self.last_checkpoint_env_steps is None
                else f"the last good checkpoint (env step {self.last_checkpoint_env_steps:,}) is "
                     "kept")
        what = "the parameters" if self.metric == "params" else self.metric
        return (f"training diverged at update {self.update:,} (about env step {self.env_steps:,}, "
                f"seed index {self.seed_index}): {what} became non-finite (NaN or inf); {kept}")

    def as_dict(self) -> dict:
        return asdict(self)


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
    diverged: Divergence | None = None
    extra: dict = field(default_factory=dict)  # trainer-specific summary fields
