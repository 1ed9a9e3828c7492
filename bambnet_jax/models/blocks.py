"""Building blocks of BaMBNet's U-Net-like branches (paper section III-C, after RCAN).

Every convolution has a bias and zero "same" padding, as in the released model. Parameters are
float32; `dtype` is the compute dtype (float32 or bfloat16).
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# PyTorch's default conv initialisation (uniform, bound 1 / sqrt(fan_in)), which the released
# model trains from. Flax's default (LeCun normal) is sqrt(3) larger; through the deep residual
# branches that saturates the sigmoid and the COC clamp at initialisation, and training stalls.
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
Conv1x1 = functools.partial(nn.Conv, kernel_size=(1, 1), padding="SAME", param_dtype=jnp.float32,
                            kernel_init=TORCH_DEFAULT_INIT)
Conv3x3 = functools.partial(nn.Conv, kernel_size=(3, 3), padding="SAME", param_dtype=jnp.float32,
                            kernel_init=TORCH_DEFAULT_INIT)


def attention_channels(width, reduction=16):
  """Bottleneck width of channel attention: 64 -> 4 at the default; at least 1 for tiny widths."""
  return max(1, width // reduction)


class PooledPointwise(nn.Module):
  """A 1x1 conv applied to pooled (N, C) statistics, with a 1x1 conv's parameters.

  Written as a broadcast multiply and a sum rather than a matmul: the products are tiny (64 x 4)
  and there are 48 of them per pass, so as matmuls each is a kernel launch of its own, while as
  elementwise work XLA fuses them with the pooling and the sigmoid around them.
  """
  features: int

  @nn.compact
  def __call__(self, pooled):
    kernel = self.param("kernel", TORCH_DEFAULT_INIT, (1, 1, pooled.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return jnp.sum(pooled[:, :, None] * kernel[0, 0], axis=1) + bias


class ChannelAttention(nn.Module):
  """Squeeze-and-excitation: global mean -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> scale.

  Computed in float32 whatever the block's compute dtype (see below); the scale is applied in x's.
  """
  reduction: int = 16

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    # The pooled statistics are tiny: float32 costs nothing and keeps bfloat16 runs stable.
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    y = nn.relu(PooledPointwise(attention_channels(width, self.reduction), name="squeeze")(pooled))
    y = PooledPointwise(width, name="excite")(y)
    return x * nn.sigmoid(y).astype(x.dtype)[:, None, None, :]


class RCAB(nn.Module):
  """Residual channel-attention block: x + CA(conv(ReLU(conv(x))))."""
  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    y = Conv3x3(width, dtype=self.dtype, name="conv_0")(x)
    y = nn.relu(y)
    y = Conv3x3(width, dtype=self.dtype, name="conv_1")(y)
    y = ChannelAttention(self.reduction, name="attention")(y)
    return x + y


class ResidualGroup(nn.Module):
  """n RCABs, a closing 3x3 conv, and a skip over the whole group."""
  num_blocks: int
  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = x
    for j in range(self.num_blocks):
      y = RCAB(self.reduction, dtype=self.dtype, name=f"rcab_{j}")(y)
    y = Conv3x3(x.shape[-1], dtype=self.dtype, name="conv_out")(y)
    return x + y
