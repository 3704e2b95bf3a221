"""Watching the agent: greedy episodes rendered with gymnax's own visualiser into an animated
GIF (and an MP4 where matplotlib finds ffmpeg). One frame per step: the state each action was
taken in, titled with the step and the return so far."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxac.envs import EnvSpec, reset_envs, step_envs
from jaxac.normalization import ObsStats, normalize

# The environments gymnax's Visualizer draws (gymnax 1.0.1, gymnax/visualize/visualizer.py).
CLASSIC_CONTROL = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
                   "MountainCarContinuous-v0")
MINATAR = ("Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
           "SpaceInvaders-MinAtar")
RENDERABLE = CLASSIC_CONTROL + MINATAR + ("Catch-bsuite", "Pong-misc", "PointRobot-misc",
                                          "MetaMaze-misc", "FourRooms-misc")
# What the visualiser imports beyond jaxac's own dependencies: (module, pip extra)
NEEDS = {**{name: ("gymnasium", "render") for name in CLASSIC_CONTROL},  # pygame draws them
         **{name: ("seaborn", "render") for name in MINATAR}}


def renderable_message(name: str) -> str | None:
    """Why `name` cannot be rendered here (no visualiser, or its package missing); None if it
    can."""
    if name not in RENDERABLE:
        return (f"{name} has no gymnax visualiser; rendering works for "
                f"{', '.join(RENDERABLE)}")
    module, extra = NEEDS.get(name, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        return (f"rendering {name} needs {module}, which is not installed: "
                f'pip install -e ".[{extra}]"')
    return None


def ffmpeg_available() -> bool:
    from matplotlib import animation

    return animation.writers.is_available("ffmpeg")


def play_greedy(spec: EnvSpec, apply_fn: Callable, params: Any, obs_stats: ObsStats,
                key: jax.Array, normalize_obs: bool, episodes: int = 1,
                max_steps: int | None = None) -> tuple[list[Any], list[float], list[int]]:
    """Play `episodes` greedy episodes of one agent (unstacked parameters); returns the state
    before every step, the return so far after it, and each episode's length. `max_steps`
    caps an episode's frames (None: the environment's own limit)."""
    limit = max_steps or spec.max_episode_steps or 10_000

    @jax.jit
    def step(carry):
        dist, _ = apply_fn(params, normalize(obs_stats, carry.obs, normalize_obs))
        return step_envs(spec, carry, dist.mode())

    states, returns, lengths = [], [], []
    for episode in range(episodes):
        carry = reset_envs(spec, jax.random.fold_in(key, episode)[None])
        total = 0.0
        for t in range(limit):
            states.append(jax.tree.map(lambda x: x[0], carry.env_state))
            carry, out = step(carry)
            total += float(out.reward[0])
            returns.append(total)
            if bool(out.terminated[0] | out.truncated[0]):
                break
        lengths.append(t + 1)
    return states, returns, lengths


def write_animation(spec: EnvSpec, states: list[Any], returns: list[float],
                    path: str | Path) -> list[Path]:
    """Animate the states with gymnax's Visualizer into `path` (.gif, or .mp4 with ffmpeg);
    for a GIF, an MP4 beside it too where ffmpeg exists. Returns the files written."""
    import os

    import matplotlib

    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame draws; it needs no sound card
    from gymnax.visualize import Visualizer

    matplotlib.use("Agg", force=False)
    path = Path(path)
    problem = renderable_message(spec.name)
    if problem is not None:
        raise ValueError(problem)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"--render {path}: the file must end in .gif or .mp4")
    if path.suffix.lower() == ".mp4" and not ffmpeg_available():
        raise ValueError(f"--render {path}: an MP4 needs ffmpeg, which matplotlib does not find "
                         "here; write a .gif instead")
    path.parent.mkdir(parents=True, exist_ok=True)
    targets = [path]
    if path.suffix.lower() == ".gif" and ffmpeg_available():
        targets.append(path.with_suffix(".mp4"))
    for target in targets:
        Visualizer(spec.env, spec.params, states, np.asarray(returns)).animate(str(target))
    return targets


def gif_frames(path: str | Path) -> int:
    """The number of frames of an animated GIF."""
    from PIL import Image

    with Image.open(path) as image:
        return int(image.n_frames)
