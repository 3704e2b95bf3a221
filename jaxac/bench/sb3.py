"""The Stable-Baselines3 side of `python -m jaxac.bench --vs sb3`.

SB3's A2C on CartPole-v1 with jaxac's default A2C settings: 8 environments, 5-step rollouts,
RMSprop (alpha 0.99, eps 1e-5) at 7e-4, gamma 0.99, plain n-step returns (GAE lambda 1), value
coefficient 0.5, entropy coefficient 0.01, global-norm clip 0.5, separate 64-64 tanh actor and
critic networks with orthogonal initialisation, on the CPU. "Solved" is the same as jaxac's: the
mean return of the last 100 finished training episodes reaches 475.

Optional: `pip install -e ".[sb3]"` after `pip install torch==2.13.0` (a CPU-only build; see the
README).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from jaxac.bench.solve import SolvePhase, SolveResult, SolveRun, summarize
from jaxac.bench.timing import Spread, spread
from jaxac.platform import automatic_xla_cpu_threads

THRESHOLD = 475.0
MAX_STEPS = 2_000_000  # per time-to-solve run


@dataclass
class SB3Result:
    """SB3's A2C throughput and time to solve, with the versions it ran."""

    version: str
    torch: str
    steps_per_second: Spread
    solve: SolvePhase
    max_steps: int = MAX_STEPS
    ratios: dict[str, float] = field(default_factory=dict)  # jaxac over SB3 (see `ratios`)


def check_installed() -> None:
    """Raise SystemExit with the install hint if SB3 or gymnasium is missing."""
    import importlib.util

    missing = [name for name in ("stable_baselines3", "gymnasium", "torch")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"--vs sb3 needs stable-baselines3, gymnasium and torch (missing: "
                         f"{', '.join(missing)}). Install a CPU-only torch first, then the extra: "
                         "pip install torch==2.13.0 && pip install -e '.[sb3]'")


def make_model(seed: int):
    """SB3 A2C with jaxac's default A2C settings (see the module docstring)."""
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    return A2C("MlpPolicy", env, n_steps=5, learning_rate=7e-4, gamma=0.99, gae_lambda=1.0,
               ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, use_rms_prop=True,
               rms_prop_eps=1e-5, normalize_advantage=False, seed=seed, device="cpu",
               policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]},
                              "activation_fn": torch.nn.Tanh, "ortho_init": True})


def steps_per_second(repeats: int, seconds: float) -> list[float]:
    """SB3 A2C training env steps/s, measured after a warm-up."""
    model = make_model(0)
    model.learn(2_000)  # warm-up
    start = time.perf_counter()
    model.learn(2_000, reset_num_timesteps=False)
    per_chunk = max(2_000, int(2_000 * seconds / (time.perf_counter() - start)) // 40 * 40)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.learn(per_chunk, reset_num_timesteps=False)
        rates.append(per_chunk / (time.perf_counter() - start))
    return rates


def time_to_solve(seed: int) -> SolveRun:
    """Wall seconds (model construction included) and env steps until solved, or None."""
    from stable_baselines3.common.callbacks import BaseCallback

    class StopWhenSolved(BaseCallback):
        solved_at: int | None = None

        def _on_step(self) -> bool:
            buffer = self.model.ep_info_buffer
            if len(buffer) == buffer.maxlen and \
                    statistics.fmean(e["r"] for e in buffer) >= THRESHOLD:
                self.solved_at = self.num_timesteps
                return False
            return True

    start = time.perf_counter()
    model = make_model(seed)
    callback = StopWhenSolved()
    model.learn(MAX_STEPS, callback=callback)
    seconds = time.perf_counter() - start
    return SolveRun(seed, callback.solved_at, seconds if callback.solved_at else None, 0.0,
                    seconds)


def measure(repeats: int, seeds: int, seconds: float) -> SB3Result:
    """Throughput and time to solve of SB3's A2C (median over seeds)."""
    import stable_baselines3
    import torch

    torch.set_num_threads(torch.get_num_threads())
    return SB3Result(stable_baselines3.__version__, torch.__version__,
                     spread(steps_per_second(repeats, seconds)),
                     summarize([time_to_solve(seed) for seed in range(seeds)]))


def ratios(sb3: SB3Result, a2c_rows: list, one_core_rows: list,
           solve: list[SolveResult]) -> dict[str, float]:
    """jaxac over SB3: steps/s at workers=8 (measured as `python -m jaxac.run workers=8` runs:
    on one XLA thread where jaxac picks one, `automatic_xla_cpu_threads`), and SB3's wall time to
    solve over jaxac's (warm)."""
    out = {}
    eight = [r for r in a2c_rows if r.workers == 8 and r.env == "CartPole-v1"]
    setting = "XLA's default threads"
    one_thread = [r for r in one_core_rows if r.workers == 8]
    if automatic_xla_cpu_threads("a2c", 8, 1, None) == 1 and one_thread:
        eight, setting = one_thread, "1 XLA thread"  # what `python -m jaxac.run` picks there
    if eight:
        out[f"A2C steps/s at workers=8 ({setting}, as python -m jaxac.run runs it), "
            "jaxac / SB3"] = (eight[0].train_steps_per_second.median
                              / sb3.steps_per_second.median)
    a2c_solve = [r for r in solve if r.algo == "a2c"]
    if a2c_solve and a2c_solve[0].warm.train_seconds and sb3.solve.train_seconds:
        out["wall time to solve, SB3 / jaxac A2C (warm cache)"] = (
            sb3.solve.train_seconds.median / a2c_solve[0].warm.train_seconds.median)
    return out
