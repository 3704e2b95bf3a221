"""What a trainer hands back, whichever trainer it is: metric rows, divergence, the result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from jaxac.normalization import ObsStats

# What the divergence guard watches, in the order it reports them (the first non-finite one wins).
GUARDED_METRICS = ("policy_loss", "value_loss", "entropy", "grad_norm", "params")


def nonfinite_flags(**guarded: Any) -> jax.Array:
    """Bit mask (int32) of the guarded values that hold a NaN or an infinity: bit i for
    GUARDED_METRICS[i]; 0 when all are finite. Takes every name of GUARDED_METRICS as a keyword,
    each a scalar, an array or a pytree (`params`: the parameters, or an update's step)."""
    if set(guarded) != set(GUARDED_METRICS):
        raise TypeError(f"nonfinite_flags takes exactly {', '.join(GUARDED_METRICS)}")
    flags = jnp.int32(0)
    for i, name in enumerate(GUARDED_METRICS):
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x))
                                    for x in jax.tree.leaves(guarded[name])]))
        flags = flags | ((~finite).astype(jnp.int32) << i)
    return flags


def first_nonfinite(flags: int) -> str:
    """The name of the first guarded metric set in a bit mask (bit i: GUARDED_METRICS[i])."""
    for i, name in enumerate(GUARDED_METRICS):
        if flags >> i & 1:
            return name
    raise ValueError(f"no non-finite flag set in {flags}")


@dataclass
class MetricRow:
    """One seed's metrics at one log point, either trainer's: a line of `metrics.jsonl` once the
    driver adds the clock (`record`). Means are over the log interval; None: nothing to average."""

    seed_index: int
    env_steps: int  # per seed, so far
    updates: int  # updates applied so far
    episodes: int  # episodes that ended in the interval
    episode_return_mean: float | None
    episode_return_min: float | None
    episode_return_max: float | None
    episode_length_mean: float | None
    return_last100: float | None  # mean return of the last 100 finished episodes
    episodes_in_last100: int
    policy_loss: float | None
    value_loss: float | None
    entropy: float | None
    grad_norm: float | None
    learning_rate: float
    solved_env_steps: int | None  # when the last-100 mean first reached the threshold
    nonfinite_update: int | None = None  # the first update with a non-finite guarded value
    nonfinite_flags: int = 0  # its bit mask (see nonfinite_flags)
    extra: dict = field(default_factory=dict)  # trainer-specific fields (A3C: staleness, ...)

    def record(self, seed: int, wall_time: float, steps_per_second: float,
               rss_mb: float | None) -> dict:
        """The metrics.jsonl object: these fields, the run's seed and the driver's clock."""
        fields = asdict(self)
        extra = fields.pop("extra")
        return {"seed_index": fields.pop("seed_index"), "seed": seed,
                "env_steps": fields.pop("env_steps"), "updates": fields.pop("updates"),
                "wall_time": wall_time, "steps_per_second": steps_per_second, **fields, **extra,
                "rss_mb": rss_mb}


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
