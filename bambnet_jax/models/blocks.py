"""Building blocks of BaMBNet's U-Net-like branches (paper section III-C, after RCAN).

Every convolution has a bias and zero "same" padding, as in the released model. Parameters are
float32; `dtype` is the compute dtype (float32 or bfloat16).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's default conv initialisation (uniform, bound 1 / sqrt(fan_in)), which the released
# model trains from. Flax's default (LeCun normal) is sqrt(3) larger; through the deep residual
# branches that saturates the sigmoid and the COC clamp at initialisation, and training stalls.
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
Conv1x1 = functools.partial(nn.Conv, kernel_size=(1, 1), padding="SAME", param_dtype=jnp.float32,
                            kernel_init=TORCH_DEFAULT_INIT)


def conv3x3_as_matmul(x, kernel):
  """A 3x3 "same" convolution (zero padding) as one matmul over the 9 shifted copies of x (im2col).

  x: (N, H, W, C); kernel: (3, 3, C, O), HWIO. The columns are ordered (row, column, channel), as
  the kernel reshaped to (9 C, O) is.
  """
  n, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  columns = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
  out = jnp.dot(columns.reshape(n * h * w, 9 * c), kernel.reshape(9 * c, -1))
  return out.reshape(n, h, w, -1)


class Conv3x3(nn.Module):
  """3x3 convolution with bias and zero "same" padding; the parameters of flax's nn.Conv.

  Feature maps of fewer than `matmul_below` pixels (H x W) are convolved by `conv3x3_as_matmul`:
  at low resolution a cuDNN call costs more to launch than to run, and XLA cannot put cuDNN
  convolutions into a CUDA graph, while it can put matmuls and the fusions around them
  (experiments/PERF.md). At high resolution the 9x larger im2col copy costs more than it saves.
  """
  features: int
  dtype: Any = jnp.float32
  kernel_init: Any = TORCH_DEFAULT_INIT
  matmul_below: int = 0

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
    if x.shape[1] * x.shape[2] < self.matmul_below:
      y = conv3x3_as_matmul(x, kernel)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias


@jax.custom_vjp
def gradient_fence(x):
  """The identity, whose gradient passes through an optimization barrier.

  XLA cannot fuse anything across the barrier: the gradient arriving here is materialised before
  it is added to any other, so a sum of many gradients is not fused into the epilogue of the
  convolution that produced one of them.
  """
  return x


def _fence_forward(x):
  return x, None


def _fence_backward(_, gradient):
  return (jax.lax.optimization_barrier(gradient),)


gradient_fence.defvjp(_fence_forward, _fence_backward)


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
  matmul_below: int = 0  # see Conv3x3

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    conv = functools.partial(Conv3x3, width, dtype=self.dtype, matmul_below=self.matmul_below)
    y = conv(name="conv_0")(x)
    y = nn.relu(y)
    y = conv(name="conv_1")(y)
    y = ChannelAttention(self.reduction, name="attention")(y)
    return x + y


class ResidualGroup(nn.Module):
  """n RCABs, a closing 3x3 conv, and a skip over the whole group."""
  num_blocks: int
  reduction: int = 16
  dtype: Any = jnp.float32
  matmul_below: int = 0  # see Conv3x3

  @nn.compact
  def __call__(self, x):
    y = x
    for j in range(self.num_blocks):
      y = RCAB(self.reduction, dtype=self.dtype, matmul_below=self.matmul_below, name=f"rcab_{j}")(y)
    y = Conv3x3(x.shape[-1], dtype=self.dtype, matmul_below=self.matmul_below, name="conv_out")(y)
    return x + y
