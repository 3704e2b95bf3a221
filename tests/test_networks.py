"""The networks: the patch-matmul convolution of the MinAtar torso against flax's own nn.Conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxac.envs import make_env
from jaxac.networks import PatchConv, make_network


@pytest.mark.parametrize("kernel_size, image", [((3, 3), (10, 10, 4)), ((2, 3), (7, 9, 3))])
def test_patch_conv_matches_flax_conv_in_parameters_outputs_and_gradients(kernel_size, image):
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 5) + image)  # two leading batch axes
    init = nn.initializers.orthogonal(np.sqrt(2))
    reference = nn.Conv(6, kernel_size, padding="VALID", kernel_init=init)
    patch = PatchConv(6, kernel_size, kernel_init=init)
    params = reference.init(jax.random.PRNGKey(0), x)
    # Same parameter tree and the same initial values from the same key.
    jax.tree.map(np.testing.assert_array_equal, patch.init(jax.random.PRNGKey(0), x), params)
    params = jax.tree.map(lambda p: p + 0.1 * jnp.arange(p.size).reshape(p.shape) / p.size, params)

    out_ref, out = reference.apply(params, x), patch.apply(params, x)
    assert out.shape == out_ref.shape == (2, 5, image[0] - kernel_size[0] + 1,
                                          image[1] - kernel_size[1] + 1, 6)
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-5)

    weights = jax.random.normal(jax.random.PRNGKey(4), out.shape)
    grad_ref = jax.grad(lambda p: jnp.sum(reference.apply(p, x) * weights))(params)
    grad = jax.grad(lambda p: jnp.sum(patch.apply(p, x) * weights))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
                 grad, grad_ref)


def test_minatar_torso_keeps_the_parameter_names_of_its_nn_conv_version():
    """Checkpoints and policies saved before the patch convolution still load."""
    spec = make_env("Breakout-MinAtar")
    params = make_network(spec).init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape))
    torso = params["params"]["MinAtarTorso_0"]
    assert set(torso) == {"Conv_0", "Dense_0"}
    assert torso["Conv_0"]["kernel"].shape == (3, 3, spec.obs_shape[-1], 16)
    assert torso["Conv_0"]["bias"].shape == (16,)
