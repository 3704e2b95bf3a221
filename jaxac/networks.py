"""Flax actor-critic networks: an MLP or a small MinAtar convolutional torso, with a categorical
or Gaussian policy head and a scalar value head."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxac.distributions import Categorical, DiagonalGaussian
from jaxac.envs import EnvSpec

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


def _dense(features: int, scale: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(scale),
                    bias_init=nn.initializers.zeros)


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        for size in self.hidden_sizes:
            x = ACTIVATIONS[self.activation](_dense(size, np.sqrt(2))(x))
        return x


class MinAtarTorso(nn.Module):
    """The MinAtar baseline torso: one 3x3 convolution, then a dense layer."""

    channels: int = 16
    dense: int = 128

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.channels, (3, 3), padding="VALID",
                            kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        x = x.reshape(x.shape[:-3] + (-1,))
        return nn.relu(_dense(self.dense, np.sqrt(2))(x))


class ActorCritic(nn.Module):
    """Maps a batch of observations to (policy distribution, value).

    The MLP variant keeps separate actor and critic streams (more stable on classic control);
    the convolutional variant shares its torso, as in the A3C paper.
    """

    action_dim: int
    discrete: bool
    obs_rank: int = 1  # rank of one observation; leading axes beyond it are batch axes
    torso: str = "mlp"  # "mlp" or "conv"
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    conv_channels: int = 16
    conv_dense: int = 128
    log_std_init: float = 0.0  # Gaussian head only

    @nn.compact
    def __call__(self, obs: jax.Array):
        if self.torso == "conv":
            shared = MinAtarTorso(self.conv_channels, self.conv_dense)(obs)
            actor_features = critic_features = shared
        else:
            flat = obs.reshape(obs.shape[: obs.ndim - self.obs_rank] + (-1,))
            actor_features = MLP(self.hidden_sizes, self.activation, name="actor_torso")(flat)
            critic_features = MLP(self.hidden_sizes, self.activation, name="critic_torso")(flat)
        value = _dense(1, 1.0)(critic_features)[..., 0]
        policy_out = _dense(self.action_dim, 0.01)(actor_features)
        if self.discrete:
            return Categorical(policy_out), value
        log_std = self.param("log_std", nn.initializers.constant(self.log_std_init),
                             (self.action_dim,))
        return DiagonalGaussian(policy_out, jnp.broadcast_to(log_std, policy_out.shape)), value


def make_network(spec: EnvSpec, torso: str = "auto", hidden_sizes: Sequence[int] = (64, 64),
                 activation: str = "tanh", conv_channels: int = 16,
                 conv_dense: int = 128, log_std_init: float = 0.0) -> ActorCritic:
    """Build the actor-critic for `spec`; `torso="auto"` picks the conv torso for image observations."""
    if torso == "auto":
        torso = "conv" if len(spec.obs_shape) == 3 else "mlp"
    return ActorCritic(spec.action_dim, spec.discrete, len(spec.obs_shape), torso,
                       tuple(hidden_sizes), activation, conv_channels, conv_dense, log_std_init)
