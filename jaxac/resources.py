"""A run's memory, estimated before anything is compiled, against what the machine has free.

The estimate counts what grows with the environment batch (`workers` x `seeds` x
`rollout_length`): the trajectory of one update (observations acted in and arrived at, actions,
rewards, flags), the environments' states, and the network's activations over the trajectory in
the loss's forward and backward passes (kept for the backward pass, plus their gradients). It
leaves out what does not grow with the batch (parameters, compiled code, Python), so it is a
floor; the bench's peak resident memory is within a small factor of it (docs/performance.md).
"""

from __future__ import annotations

import math
from pathlib import Path

FLOAT = 4  # bytes: everything on the device is 32-bit
# Arrays per activation: the forward value kept for the backward pass, and its gradient. With
# this, CartPole-v1 at workers=1000000 is estimated at 10.9 GB, where it was measured at 10 GB.
ACTIVATION_COPIES = 2
# A refused batch would need more than this share of the memory the machine has available.
MOST_OF_AVAILABLE = 0.9


def activations_per_sample(obs_shape: tuple[int, ...], torso: str, hidden_sizes: list[int],
                           conv_channels: int, conv_dense: int) -> int:
    """Floats the loss keeps per trajectory sample: every layer's output of the actor and the
    critic (the MLP's two streams), or of the shared conv torso."""
    if torso == "conv" or (torso == "auto" and len(obs_shape) == 3):
        height, width, channels = obs_shape
        positions = (height - 2) * (width - 2)  # the 3x3 VALID convolution
        return positions * (channels * 9 + conv_channels) + conv_dense
    return 2 * sum(hidden_sizes)


def estimate_bytes(obs_shape: tuple[int, ...], workers: int, seeds: int, rollout_length: int,
                   torso: str, hidden_sizes: list[int], conv_channels: int,
                   conv_dense: int) -> int:
    """Bytes the batch needs during one update (see the module docstring)."""
    obs = math.prod(obs_shape)
    per_sample = (2 * obs + 8 + ACTIVATION_COPIES * activations_per_sample(
        obs_shape, torso, hidden_sizes, conv_channels, conv_dense)) * FLOAT
    per_env = rollout_length * per_sample + 4 * (obs + 16) * FLOAT  # the states, and a copy
    return per_env * workers * seeds


def available_bytes() -> int | None:
    """The memory the machine has available now (Linux: MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"
