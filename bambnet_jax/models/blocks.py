"""Building blocks of BaMBNet's U-Net-like branches (paper section III-C, after RCAN).

Every convolution has a bias and zero "same" padding, as in the released model. Parameters are
float32, conv kernels OHWI (as cuDNN reads them, so a training step updates them in place).
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bambnet_jax.models import convolution

# PyTorch's default conv initialisation (uniform, bound 1 / sqrt(fan_in)), which the released
# model trains from. Flax's default (LeCun normal) is sqrt(3) larger; through the deep residual
# branches that saturates the sigmoid and the COC clamp at initialisation, and training stalls.
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """How a net's convolutions compute: dtype (parameters stay float32) and how float32 3x3 convs take
  their gradients (`convolution.CONV_GRADIENTS`, docs/conv_gradients.md: only their rounding changes)."""
  dtype: Any = jnp.float32
  conv_gradients: str = "auto"

  def __post_init__(self):
    convolution.check_conv_gradients(self.conv_gradients)
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))  # "bfloat16" and jnp.bfloat16 alike


def kernel_param(module, kernel_init, hwio_shape):
  """A float32 OHWI conv kernel: Flax's HWIO kernel of `hwio_shape`, initialised alike, transposed."""
  init = lambda rng: kernel_init(rng, hwio_shape, jnp.float32).transpose(3, 0, 1, 2)
  return module.param("kernel", init)


def conv(x, kernel, gradients="native", min_pixels=convolution.FLOAT16_MIN_PIXELS):
  """`convolution.same_conv`, with float16 gradients where `gradients` resolves to them for a
  float32 map of at least `min_pixels` (H x W)."""
  mode = convolution.resolve_conv_gradients(gradients, x.dtype, jax.default_backend())
  if mode == "float16" and x.dtype == jnp.float32 and x.shape[1] * x.shape[2] >= min_pixels:
    return convolution.conv_float16_gradients(x, kernel)
  return convolution.same_conv(x, kernel)


class Conv(nn.Module):
  """A size x size convolution with bias and zero "same" padding; the parameters of flax's nn.Conv,
  the kernel OHWI. Only 3x3 convs take `spec.conv_gradients`: 1x1 convs keep native gradients."""
  features: int
  spec: ConvSpec = ConvSpec()
  kernel_init: Any = TORCH_DEFAULT_INIT
  size: int = 3

  @nn.compact
  def __call__(self, x):
    dtype = self.spec.dtype
    kernel = kernel_param(self, self.kernel_init, (self.size, self.size, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    gradients = self.spec.conv_gradients if self.size == 3 else "native"
    return conv(x.astype(dtype), kernel.astype(dtype), gradients) + bias.astype(dtype)


Conv1x1 = functools.partial(Conv, size=1)
Conv3x3 = functools.partial(Conv, size=3)


@jax.custom_vjp
def gradient_fence(x):
  """The identity, whose gradient passes through an optimization barrier (XLA fuses nothing across it)."""
  return x


gradient_fence.defvjp(lambda x: (x, None), lambda _, gradient: (jax.lax.optimization_barrier(gradient),))


class PooledPointwise(nn.Module):
  """A 1x1 conv on pooled (N, C) statistics, with a 1x1 conv's parameters. A broadcast multiply and a
  sum, not a matmul: XLA fuses these tiny products (48 per pass) with the pooling and the sigmoid
  around them instead of launching a kernel for each."""
  features: int

  @nn.compact
  def __call__(self, pooled):
    kernel = kernel_param(self, TORCH_DEFAULT_INIT, (1, 1, pooled.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return jnp.sum(pooled[:, :, None] * kernel[:, 0, 0].T, axis=1) + bias


class ChannelAttention(nn.Module):
  """Squeeze-and-excitation: global mean -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> scale."""
  reduction: int = 16

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    # The pooled statistics are tiny: float32 costs nothing and keeps bfloat16 runs stable.
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    squeezed = max(1, width // self.reduction)  # 64 -> 4 at the default; at least 1 for tiny widths
    y = nn.relu(PooledPointwise(squeezed, name="squeeze")(pooled))
    y = PooledPointwise(width, name="excite")(y)
    return x * nn.sigmoid(y).astype(x.dtype)[:, None, None, :]


class RCAB(nn.Module):
  """Residual channel-attention block: x + CA(conv(ReLU(conv(x))))."""
  reduction: int = 16
  spec: ConvSpec = ConvSpec()

  @nn.compact
  def __call__(self, x):
    conv3x3 = functools.partial(Conv3x3, x.shape[-1], self.spec)
    y = conv3x3(name="conv_1")(nn.relu(conv3x3(name="conv_0")(x)))
    return x + ChannelAttention(self.reduction, name="attention")(y)


class ResidualGroup(nn.Module):
  """n RCABs, a closing 3x3 conv, and a skip over the whole group."""
  num_blocks: int
  reduction: int = 16
  spec: ConvSpec = ConvSpec()

  @nn.compact
  def __call__(self, x):
    y = x
    for j in range(self.num_blocks):
      y = RCAB(self.reduction, self.spec, name=f"rcab_{j}")(y)
    return x + Conv3x3(x.shape[-1], self.spec, name="conv_out")(y)
