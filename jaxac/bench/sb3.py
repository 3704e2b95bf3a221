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
from typing import Any

from jaxac.cpu_dispatch import automatic_xla_cpu_threads

THRESHOLD = 475.0
MAX_STEPS = 2_000_000  # per time-to-solve run


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


def time_to_solve(seed: int) -> dict[str, Any]:
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
    return {"seed": seed, "env_steps": callback.solved_at,
            "train_seconds": time.perf_counter() - start if callback.solved_at else None}


def measure(repeats: int, seeds: int, seconds: float) -> dict[str, Any]:
    """Throughput and time to solve of SB3's A2C (median over seeds)."""
    import stable_baselines3
    import torch

    from jaxac.bench import spread

    torch.set_num_threads(torch.get_num_threads())
    result: dict[str, Any] = {"version": stable_baselines3.__version__,
                              "torch": torch.__version__,
                              "steps_per_second": spread(steps_per_second(repeats, seconds))}
    runs = [time_to_solve(seed) for seed in range(seeds)]
    solved = [r for r in runs if r["env_steps"] is not None]
    result.update({"runs": runs, "solved": f"{len(solved)}/{len(runs)}",
                   "max_steps": MAX_STEPS})
    if solved:
        result["env_steps"] = spread([r["env_steps"] for r in solved])
        result["train_seconds"] = spread([r["train_seconds"] for r in solved])
    return result


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """jaxac over SB3: steps/s at workers=8 (measured as `python -m jaxac.run workers=8` runs:
    on one XLA thread where jaxac picks one, `automatic_xla_cpu_threads`), and SB3's wall time to
    solve over jaxac's (warm)."""
    out = {}
    sb3 = results["sb3"]
    eight = [r for r in results.get("a2c", []) if r["workers"] == 8 and r["env"] == "CartPole-v1"]
    setting = "XLA's default threads"
    one_thread = [r for r in results.get("a2c_one_core", []) if r["workers"] == 8]
    if automatic_xla_cpu_threads("a2c", 8, 1, None) == 1 and one_thread:
        eight, setting = one_thread, "1 XLA thread"  # what `python -m jaxac.run` picks there
    if eight:
        out[f"A2C steps/s at workers=8 ({setting}, as python -m jaxac.run runs it), "
            "jaxac / SB3"] = (
            eight[0]["train_steps_per_second"]["median"] / sb3["steps_per_second"]["median"])
    a2c_solve = [r for r in results.get("solve", []) if r["algo"] == "a2c"]
    if a2c_solve and "warm_train_seconds" in a2c_solve[0] and "train_seconds" in sb3:
        out["wall time to solve, SB3 / jaxac A2C (warm cache)"] = (
            sb3["train_seconds"]["median"] / a2c_solve[0]["warm_train_seconds"]["median"])
    return out
