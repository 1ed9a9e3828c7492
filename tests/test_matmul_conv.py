"""3x3 convolutions as im2col matmuls (blocks.Conv3x3's low-resolution path) against a NumPy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bambnet_jax.models import blocks
from bambnet_jax.models import networks
import net_equivalence


def numpy_conv3x3(x, kernel, bias):
  """Zero-padded 'same' 3x3 cross-correlation, written as the textbook sum over the 9 taps."""
  n, h, w, _ = x.shape
  padded = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((n, h, w, kernel.shape[-1]))
  for i in range(3):
    for j in range(3):
      out += padded[:, i:i + h, j:j + w] @ kernel[i, j].astype(np.float64)
  return out + bias


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 8, 8, 16)])
def test_conv3x3_as_matmul_equals_the_textbook_sum(shape):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  kernel = rng.standard_normal((3, 3, shape[-1], 4)).astype(np.float32)
  got = jax.jit(blocks.conv3x3_as_matmul)(x, kernel)
  np.testing.assert_allclose(np.asarray(got), numpy_conv3x3(x, kernel, 0.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("matmul_below", [0, 10**9])
def test_both_paths_of_conv3x3_equal_the_textbook_sum_with_bias(matmul_below):
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 6, 9, 5)).astype(np.float32)
  module = blocks.Conv3x3(7, blocks.ConvSpec(matmul_below=matmul_below))
  params = module.init(jax.random.key(0), x)["params"]
  params["bias"] = jnp.asarray(rng.standard_normal(7), jnp.float32)
  got = module.apply({"params": params}, x)
  want = numpy_conv3x3(x, np.asarray(params["kernel"]), np.asarray(params["bias"]))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_the_parameter_tree_is_flax_convs():
  x = jnp.zeros((1, 4, 4, 3))
  ours = blocks.Conv3x3(5).init(jax.random.key(0), x)["params"]
  flax_conv = blocks.nn.Conv(5, (3, 3)).init(jax.random.key(0), x)["params"]
  assert jax.tree_util.tree_map(jnp.shape, ours) == jax.tree_util.tree_map(jnp.shape, flax_conv)


@pytest.mark.parametrize("net", ["deblur", "coc"])
def test_a_net_with_matmul_convs_has_the_same_outputs_and_gradients(net):
  # 32x32 inputs: the branches run at 32 down to 2 px; 300 px puts levels 1-4 (<= 16x16) on matmuls.
  cudnn_config = networks.model_config(width=8, branch_capacities=(1, 4, 7))
  matmul_config = networks.model_config(width=8, branch_capacities=(1, 4, 7), matmul_conv_below=300)
  convs = net_equivalence.assert_same_function(net, cudnn_config, matmul_config)
  assert convs[1] < convs[0], convs  # the low-resolution stages really took the matmul path
