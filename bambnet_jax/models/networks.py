"""BaMBNet's deblurring network and COC network (paper section III), and their configuration.

Both share the multi-branch body; the deblurring net gates its branches (`masks.branch_gates`)
and ends in a sigmoid, the COC net clamps its signed radius per colour channel. Any input size
works: the body pools four times by 2, so inputs are reflect-padded to multiples of 16 and cropped back.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from bambnet_jax.models import blocks
from bambnet_jax.models import branches
from bambnet_jax.models import padding

NET_KINDS = ("deblur", "coc")

# The tail starts at zero: a random tail maps the body's large features into the sigmoid's flat ends
# (or the COC clamp), where training stalls; from zero the outputs start at 0.5 and 0 px.
_tail = functools.partial(blocks.Conv3x3, 3, kernel_init=nn.initializers.zeros, name="tail")


def model_config(width=64, branch_capacities=(1, 4, 7, 10), dtype="float32", conv_gradients="auto"):
  """The network fields of a config; the defaults are the paper's model (4,497,731 parameters)."""
  config = ml_collections.ConfigDict()
  config.width = width  # feature channels everywhere in the body
  config.branch_capacities = tuple(branch_capacities)  # k per branch; floor(k/3) RCABs per group, 0 = FCN
  config.attention_reduction = 16  # channel attention squeezes width -> width / 16
  config.coc_clamp = 24.0  # the COC net's output range [-24, 24] px
  config.dtype = dtype  # compute dtype: "float32" or "bfloat16" (parameters stay float32)
  # float32 3x3 convs' gradients: "auto" (scaled float16 on a GPU), "native" or "float16" (docs/conv_gradients.md)
  config.conv_gradients = conv_gradients
  return config


class DeblurNet(nn.Module):
  """The deblurring network: multi-branch body gated by defocus masks, 3x3 conv, sigmoid."""
  width: int = 64
  branch_capacities: Sequence[int] = (1, 4, 7, 10)
  reduction: int = 16
  spec: blocks.ConvSpec = blocks.ConvSpec()

  @nn.compact
  def __call__(self, dp_views, gates=None, each_branch_alone=False):
    """dp_views: (N, H, W, 6) left then right RGB in [0, 1]; gates: None (all 1) or (N, H, W, M).
    Returns the restored RGB (N, H, W, 3) in [0, 1], float32; with `each_branch_alone`, (N, M, H, W, 3):
    each branch with the others' residuals dropped (phi_i of the threshold search and Fig. 7)."""
    if gates is not None and gates.shape[-1] != len(self.branch_capacities):
      raise ValueError(f"gates have {gates.shape[-1]} channels, the net has {len(self.branch_capacities)} branches")
    (dp_views, gates), crop = padding.pad_to_multiple((dp_views, gates), 16)
    body = branches.MultiBranchBody(self.width, self.branch_capacities, self.reduction, self.spec, name="body")
    tail = _tail(self.spec)
    restore = lambda z: crop(nn.sigmoid(tail(z).astype(jnp.float32)))
    dp_views = dp_views.astype(self.spec.dtype)
    if each_branch_alone:
      features, outputs = body(dp_views, separate=True)
      return jnp.stack([restore(features + o) for o in outputs], axis=1)
    return restore(body(dp_views, gates))


class COCNet(nn.Module):
  """The COC network: the same body with no gates, a 3x3 conv and a clamp to [-clamp, clamp]."""
  width: int = 64
  branch_capacities: Sequence[int] = (1, 4, 7, 10)
  reduction: int = 16
  clamp: float = 24.0
  spec: blocks.ConvSpec = blocks.ConvSpec()

  @nn.compact
  def __call__(self, dp_views):
    """dp_views: (N, H, W, 6). Returns the signed COC radius per colour channel (N, H, W, 3), px."""
    (dp_views,), crop = padding.pad_to_multiple((dp_views,), 16)
    body = branches.MultiBranchBody(self.width, self.branch_capacities, self.reduction, self.spec, name="body")
    z = body(dp_views.astype(self.spec.dtype))
    return crop(jnp.clip(_tail(self.spec)(z).astype(jnp.float32), -self.clamp, self.clamp))


def conv_spec(config):
  """The `blocks.ConvSpec` of a model config."""
  return blocks.ConvSpec(dtype=config.dtype, conv_gradients=config.conv_gradients)


def build(net, config):
  """The `net` ("deblur" or "coc") described by a model config (see `model_config`)."""
  common = dict(width=config.width, branch_capacities=tuple(config.branch_capacities),
                reduction=config.attention_reduction, spec=conv_spec(config))
  if net == "deblur":
    return DeblurNet(**common)
  if net == "coc":
    return COCNet(clamp=config.coc_clamp, **common)
  raise ValueError(f"unknown network {net!r}; expected one of {NET_KINDS}")


def init_params(net, config, rng, image_size=(32, 32)):
  """Freshly initialised float32 parameters of `net`."""
  return build(net, config).init(rng, jnp.zeros((1, *image_size, 6), jnp.float32))["params"]


def param_shapes(net, config):
  """Parameter shapes without allocating anything (for counting and restoring)."""
  return jax.eval_shape(lambda: init_params(net, config, jax.random.key(0)))


def count_params(tree):
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
