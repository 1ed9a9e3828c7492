"""The nets' stride-1 zero-"same"-padded convolution (OHWI kernels), and faster float32 gradients for it.

`conv_float16_gradients` takes a float32 conv's input and weight gradients from float16 operands
scaled per channel by powers of two, accumulating in float32: TF32's significand at twice its rate
or more on a GPU (method and error bound: docs/conv_gradients.md). `CONV_GRADIENTS` are the values
of `model.conv_gradients`; "auto" is float16 for float32 compute on a GPU, else native.
"""

import jax
import jax.numpy as jnp

CONV_GRADIENTS = ("auto", "native", "float16")
_NORM_BOUND = 2.0 ** 7  # two such norms bound every float16 result by 2^14
# Smaller maps keep native gradients: there the conversions and norms cost about what the TF32
# kernels do (experiments/PERF.md).
FLOAT16_MIN_PIXELS = 128 * 128


def check_conv_gradients(mode):
  if mode not in CONV_GRADIENTS:
    raise ValueError(f"conv gradients {mode!r}; expected one of {CONV_GRADIENTS}")


def resolve_conv_gradients(mode, dtype, platform):
  """What `mode` means ("native" or "float16") for convs in `dtype` on `platform` (a backend name)."""
  check_conv_gradients(mode)
  if mode != "auto":
    return mode
  return "float16" if jnp.dtype(dtype) == jnp.float32 and platform == "gpu" else "native"


def same_conv(x, kernel):
  """Stride-1 zero-"same"-padded convolution of NHWC `x` with an OHWI kernel."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "OHWI", "NHWC"))


def weight_gradient(x, dy, window, out_dtype=jnp.float32, precision=None):
  """The OHWI weight gradient of `same_conv` with an odd `window` (kh, kw), given dy.

  A convolution with batch and features swapped, which XLA hands to cuDNN as its backward-filter kernel.
  """
  padding = tuple(((k - 1) // 2, (k - 1) // 2) for k in window)
  return jax.lax.conv_general_dilated(x, dy, (1, 1), padding, dimension_numbers=("CHWN", "IHWO", "CHWN"),
                                      precision=precision, preferred_element_type=out_dtype)


def input_gradient(dy, kernel_ohwi, out_dtype=None, precision=None):
  """x's gradient of `same_conv` given dy (NHWC): dy convolved with the kernel flipped in space, its
  input and output channels swapped."""
  return jax.lax.conv_general_dilated(dy, jnp.flip(kernel_ohwi, (1, 2)), (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "IHWO", "NHWC"), precision=precision,
                                      preferred_element_type=out_dtype)


def _power_of_two_scales(norms, bound):
  """The largest powers of two s with s * norms <= bound (1 where a norm is 0)."""
  safe = jnp.where(norms > 0, norms, 1.0)
  return jnp.where(norms > 0, jnp.exp2(jnp.floor(jnp.log2(bound / safe))), 1.0)


def channel_scales(t):
  """Per channel (last axis) of `t`, the largest power of two s with |s t_c|_F <= 2^7 (1 if t_c = 0)."""
  norms = jnp.sqrt(jnp.sum(jnp.square(t.astype(jnp.float32)), axis=tuple(range(t.ndim - 1))))
  return _power_of_two_scales(norms, _NORM_BOUND)


def scaled_float16(t):
  """(t scaled per channel by `channel_scales`, in float16; the scales)."""
  scales = channel_scales(t)
  return (t * scales).astype(jnp.float16), scales


def _unscaled_weight_gradient(x16, x_scales, dy16, dy_scales, window, out_dtype=jnp.float16):
  scaled = weight_gradient(x16, dy16, window, out_dtype=out_dtype)
  return scaled.astype(jnp.float32) / (dy_scales[:, None, None, None] * x_scales)


def float16_weight_gradient(x, dy, window, out_dtype=jnp.float16):
  """`weight_gradient(x, dy, window)` from power-of-two-scaled float16 operands; float32 OHWI.

  out_dtype: what cuDNN is asked for (float32 gains nothing: XLA then runs the TF32 kernel).
  """
  return _unscaled_weight_gradient(*scaled_float16(x), *scaled_float16(dy), window, out_dtype)


def _unscaled_input_gradient(dy16, dy_scales, kernel_ohwi):
  # dy's scales are undone up to `common`, the smallest scale of a live (not all-zero) channel. A
  # dead channel's scale, 1, as the common factor would shrink every live channel's weights by its
  # own scale (up to 2^40 in the nets), to nothing in float16.
  live = jnp.any(dy16 != 0, axis=tuple(range(dy16.ndim - 1)))
  common = jnp.min(jnp.where(live, dy_scales, jnp.inf))
  common = jnp.where(live.any(), common, 1.0)
  kernel = kernel_ohwi * jnp.where(live, common / dy_scales, 0.0)[:, None, None, None]
  norms = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=(0, 1, 2)))
  in_scales = _power_of_two_scales(norms, _NORM_BOUND / jnp.sqrt(kernel.shape[0]))
  scaled = input_gradient(dy16, (kernel * in_scales).astype(jnp.float16))
  return scaled.astype(jnp.float32) / (common * in_scales)


def float16_input_gradient(dy, kernel_ohwi):
  """`input_gradient(dy, kernel_ohwi)` from power-of-two-scaled float16 operands; float32 NHWC."""
  return _unscaled_input_gradient(*scaled_float16(dy), kernel_ohwi)


@jax.custom_vjp
def conv_float16_gradients(x, kernel):
  """`same_conv` whose gradients (x's and the kernel's) come from scaled float16 operands."""
  return same_conv(x, kernel)


def _backward(residuals, dy):
  x, kernel = residuals
  dy16, dy_scales = scaled_float16(dy)
  dx = _unscaled_input_gradient(dy16, dy_scales, kernel).astype(x.dtype)
  dw = _unscaled_weight_gradient(*scaled_float16(x), dy16, dy_scales, kernel.shape[1:3])
  return dx, dw.astype(kernel.dtype)


conv_float16_gradients.defvjp(lambda x, kernel: (same_conv(x, kernel), (x, kernel)), _backward)
