"""Building blocks of BaMBNet's U-Net-like branches (paper section III-C, after RCAN).

Every convolution has a bias and zero "same" padding, as in the released model. Parameters are
float32. How the convolutions compute is one `ConvSpec`, handed down from the network to every
block: the compute dtype, two choices (matmul threshold, kernel layout) that change neither
the function nor the parameters' values, and how float32 3x3 convs compute their gradients.
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
KERNEL_LAYOUTS = ("HWIO", "OHWI")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """How a net's convolutions compute.

  dtype: the compute dtype (float32 or bfloat16; parameters stay float32).
  matmul_below: 3x3 convs on feature maps of fewer pixels (H x W) run as im2col matmuls
    (`Conv3x3`); 0 = cuDNN everywhere.
  kernel_layout: how kernels are stored: "HWIO" (Flax's convention) or "OHWI" (cuDNN's, so a
    training step need not transpose every kernel into and out of it). Both initialise to the
    same values.
  conv_gradients: "native" or "float16": how float32 3x3 convs on maps of at least
    `convolution.FLOAT16_MIN_PIXELS` (cuDNN's, not the matmul ones) compute their input and weight
    gradients (`convolution.py`; resolve "auto" with `convolution.resolve_conv_gradients` first).
    Changes only the gradients' rounding.
  """
  dtype: Any = jnp.float32
  matmul_below: int = 0
  kernel_layout: str = "HWIO"
  conv_gradients: str = "native"

  def __post_init__(self):
    check_kernel_layout(self.kernel_layout)
    if self.conv_gradients not in convolution.RESOLVED_CONV_GRADIENTS:
      raise ValueError(f"ConvSpec.conv_gradients {self.conv_gradients!r}; expected one of "
                       f"{convolution.RESOLVED_CONV_GRADIENTS}")
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))  # "bfloat16" and jnp.bfloat16 alike

  def full_resolution(self):
    """The spec of convs that must not become matmuls (the head and tail, at full resolution)."""
    return dataclasses.replace(self, matmul_below=0)


def check_kernel_layout(layout):
  if layout not in KERNEL_LAYOUTS:
    raise ValueError(f"kernel layout {layout!r}; expected one of {KERNEL_LAYOUTS}")


def kernel_param(module, kernel_init, hwio_shape, kernel_layout):
  """A float32 conv kernel parameter of `hwio_shape`, stored in `kernel_layout`.

  OHWI kernels are HWIO ones initialised alike and transposed: the layouts hold the same values.
  """
  init = lambda rng: to_kernel_layout(kernel_init(rng, hwio_shape, jnp.float32), "HWIO", kernel_layout)
  return module.param("kernel", init)


def to_kernel_layout(params, source, target):
  """A parameter tree with every kernel (each 4-D leaf) moved from layout `source` to `target`."""
  check_kernel_layout(source)
  check_kernel_layout(target)
  if source == target:
    return params
  axes = convolution.HWIO_TO_OHWI if target == "OHWI" else convolution.OHWI_TO_HWIO
  return jax.tree_util.tree_map(lambda x: x.transpose(axes) if x.ndim == 4 else x, params)


def conv(x, kernel, kernel_layout, gradients="native", min_pixels=convolution.FLOAT16_MIN_PIXELS):
  """Stride-1 zero-"same"-padded convolution of NHWC `x` with a kernel in `kernel_layout`.

  gradients="float16": a float32 conv on a map of at least `min_pixels` (H x W) takes x's and the
  kernel's gradients from scaled float16 operands (`convolution.conv_float16_gradients`); the
  function itself is unchanged.
  """
  if gradients == "float16" and x.dtype == jnp.float32 and x.shape[1] * x.shape[2] >= min_pixels:
    return convolution.conv_float16_gradients(x, kernel, kernel_layout)
  return convolution.same_conv(x, kernel, kernel_layout)


class Conv1x1(nn.Module):
  """1x1 convolution with bias; the parameters of flax's nn.Conv (in `spec.kernel_layout`)."""
  features: int
  spec: ConvSpec = ConvSpec()

  @nn.compact
  def __call__(self, x):
    dtype, layout = self.spec.dtype, self.spec.kernel_layout
    kernel = kernel_param(self, TORCH_DEFAULT_INIT, (1, 1, x.shape[-1], self.features), layout)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return conv(x.astype(dtype), kernel.astype(dtype), layout) + bias.astype(dtype)


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

  Feature maps of fewer than `spec.matmul_below` pixels (H x W) are convolved by
  `conv3x3_as_matmul`: at low resolution a cuDNN call costs more to launch than to run, and XLA
  cannot put cuDNN convolutions into a CUDA graph, while it can put matmuls and the fusions
  around them (experiments/PERF.md). At high resolution the 9x larger im2col copy costs more
  than it saves.
  """
  features: int
  spec: ConvSpec = ConvSpec()
  kernel_init: Any = TORCH_DEFAULT_INIT

  @nn.compact
  def __call__(self, x):
    dtype, layout = self.spec.dtype, self.spec.kernel_layout
    kernel = kernel_param(self, self.kernel_init, (3, 3, x.shape[-1], self.features), layout)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = x.astype(dtype), kernel.astype(dtype), bias.astype(dtype)
    if x.shape[1] * x.shape[2] < self.spec.matmul_below:
      y = conv3x3_as_matmul(x, to_kernel_layout(kernel, layout, "HWIO"))
    else:
      y = conv(x, kernel, layout, self.spec.conv_gradients)
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
  kernel_layout: str = "HWIO"

  @nn.compact
  def __call__(self, pooled):
    kernel = kernel_param(self, TORCH_DEFAULT_INIT, (1, 1, pooled.shape[-1], self.features), self.kernel_layout)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    matrix = to_kernel_layout(kernel, self.kernel_layout, "HWIO")[0, 0]  # (in, out)
    return jnp.sum(pooled[:, :, None] * matrix, axis=1) + bias


class ChannelAttention(nn.Module):
  """Squeeze-and-excitation: global mean -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> scale.

  Computed in float32 whatever the block's compute dtype (see below); the scale is applied in x's.
  """
  reduction: int = 16
  kernel_layout: str = "HWIO"

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    # The pooled statistics are tiny: float32 costs nothing and keeps bfloat16 runs stable.
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    pointwise = functools.partial(PooledPointwise, kernel_layout=self.kernel_layout)
    y = nn.relu(pointwise(attention_channels(width, self.reduction), name="squeeze")(pooled))
    y = pointwise(width, name="excite")(y)
    return x * nn.sigmoid(y).astype(x.dtype)[:, None, None, :]


class RCAB(nn.Module):
  """Residual channel-attention block: x + CA(conv(ReLU(conv(x))))."""
  reduction: int = 16
  spec: ConvSpec = ConvSpec()

  @nn.compact
  def __call__(self, x):
    conv3x3 = functools.partial(Conv3x3, x.shape[-1], self.spec)
    y = conv3x3(name="conv_0")(x)
    y = nn.relu(y)
    y = conv3x3(name="conv_1")(y)
    y = ChannelAttention(self.reduction, self.spec.kernel_layout, name="attention")(y)
    return x + y


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
    y = Conv3x3(x.shape[-1], self.spec, name="conv_out")(y)
    return x + y
