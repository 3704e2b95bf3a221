"""Flax actor-critic networks: an MLP or a small MinAtar convolutional torso, with a categorical
or Gaussian policy head and a scalar value head."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxac.config import ACTIVATIONS
from jaxac.distributions import Categorical, DiagonalGaussian
from jaxac.envs import EnvSpec

ACTIVATION_FUNCTIONS = {name: getattr(nn, name) for name in ACTIVATIONS}


def _dense(features: int, scale: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(scale),
                    bias_init=nn.initializers.zeros)


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        for size in self.hidden_sizes:
            x = ACTIVATION_FUNCTIONS[self.activation](_dense(size, np.sqrt(2))(x))
        return x


class PatchConv(nn.Module):
    """A stride-1, VALID-padded 2-D convolution over `[..., H, W, C]`, computed as one matrix
    multiply of each output position's input patch with the flattened kernel (im2col).

    Same parameters ("kernel" `[kh, kw, C, features]`, "bias"), initialisation and result as
    `nn.Conv(features, kernel_size, padding="VALID")`, up to float rounding. Why not nn.Conv:
    under the trainer's `vmap` over seeds the kernel is batched, and XLA's CPU backend runs that
    batched convolution's training gradient far slower than the same FLOPs as dots
    (docs/performance.md).
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        lead, (height, width) = x.shape[:-3], x.shape[-3:-1]
        out_h, out_w = height - kh + 1, width - kw + 1
        images = jnp.moveaxis(x.reshape((-1,) + x.shape[-3:]), -1, 0)  # [C, N, H, W]
        n = images.shape[1]
        # Patch-major: [(channel, row, column) of the patch, every output position]. Built from
        # whole shifted image planes and multiplied as [features, K] @ [K, positions], it needs no
        # transposed copy of the (large) patch matrix in either pass (channel-minor patches,
        # [positions, K], were slower).
        patches = jnp.stack([images[:, :, i:i + out_h, j:j + out_w]
                             for i in range(kh) for j in range(kw)], axis=1)
        patches = patches.reshape(channels * kh * kw, n * out_h * out_w)
        weights = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(self.features, -1)
        out = (weights @ patches).reshape(self.features, n, out_h, out_w)
        return jnp.moveaxis(out, 0, -1).reshape(lead + (out_h, out_w, self.features)) + bias


class MinAtarTorso(nn.Module):
    """The MinAtar baseline torso: one 3x3 convolution, then a dense layer."""

    channels: int = 16
    dense: int = 128

    @nn.compact
    def __call__(self, x):
        # Named as the nn.Conv it replaces, so that saved parameters keep loading.
        x = nn.relu(PatchConv(self.channels, (3, 3), name="Conv_0",
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
