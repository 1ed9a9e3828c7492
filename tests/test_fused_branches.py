"""The fused schedule of the U-Net-like branches (grouped convs) against the branch-by-branch model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bambnet_jax.models import fused_branches
from bambnet_jax.models import networks
import net_equivalence


def test_grouped_conv_equals_separate_convs():
  rng = np.random.default_rng(0)
  inputs = [rng.standard_normal((2, 6, 5, 4)).astype(np.float32) for _ in range(3)]
  kernels = [rng.standard_normal((3, 3, 4, 4)).astype(np.float32) for _ in range(3)]
  biases = [rng.standard_normal(4).astype(np.float32) for _ in range(3)]
  got = fused_branches.grouped_conv3x3(inputs, kernels, biases)
  for x, k, b, y in zip(inputs, kernels, biases, got):
    want = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("net", ["deblur", "coc"])
def test_fused_net_has_the_same_parameters_outputs_and_gradients(net):
  # Capacities 4, 7, 10: 1, 2 and 3 RCABs per group, the paper's mix of group sizes.
  plain = networks.model_config(width=8, branch_capacities=(1, 4, 7, 10))
  fused = networks.model_config(width=8, branch_capacities=(1, 4, 7, 10), fuse_branches=True)
  shapes = lambda config: jax.tree_util.tree_map(jnp.shape, networks.init_params(net, config, jax.random.key(3)))
  assert shapes(fused) == shapes(plain)  # the same checkpoint keys and shapes
  convs = net_equivalence.assert_same_function(net, plain, fused)
  # head, the FCN branch's eight 1x1 convs, the U-Net-like branches, tail
  assert convs == [1 + 8 + (3 + 5 + 7) * 8 + 1, 1 + 8 + 7 * 8 + 1]


def test_fused_net_with_gates_and_each_branch_alone():
  plain = networks.model_config(width=8, branch_capacities=(1, 4, 7))
  fused = networks.model_config(width=8, branch_capacities=(1, 4, 7), fuse_branches=True)
  params = networks.init_params("deblur", plain, jax.random.key(6))
  params["tail"]["kernel"] = 0.05 * jax.random.normal(jax.random.key(7), params["tail"]["kernel"].shape)
  x = jax.random.uniform(jax.random.key(8), (1, 17, 20, 6))
  gates = jax.random.uniform(jax.random.key(9), (1, 17, 20, 3))
  for kwargs in ({"gates": gates}, {"each_branch_alone": True}):
    a = networks.build("deblur", plain).apply({"params": params}, x, **kwargs)
    b = networks.build("deblur", fused).apply({"params": params}, x, **kwargs)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
