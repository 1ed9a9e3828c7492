"""The nets' stride-1 zero-"same"-padded convolution, and faster float32 gradients for it.

On a GPU, XLA computes float32 convolutions with TF32 tensor cores (11-bit significands, float32
accumulation). cuDNN's TF32 kernels run at half the bfloat16 rate, its TF32 weight gradient at a
quarter (experiments/PERF.md, sessions 7 to 9). float16 carries the same 11-bit significand at
the full 16-bit rate, but its range is only 2^-24 to 65504. `conv_float16_gradients` therefore
computes a float32 conv's two gradients from float16 operands scaled by powers of two (which
scale without rounding and are divided out of the results exactly), with float32 accumulation.
The forward pass stays native.

- Output gradient dy: each output channel is multiplied by the power of two that brings its
  Frobenius norm (over batch and pixels) to at most 2^7 (`scaled_float16`). Both gradients read
  this one float16 copy.
- Weight gradient: each input channel of x is scaled alike. By Cauchy-Schwarz every entry
  dW[o, :, :, i] is at most |x_i| |dy_o| <= 2^14 < 65504, so the float16 result cannot overflow.
- Input gradient: channel o of the kernel is multiplied by s_min / s_o (dy's scales, s_min the
  smallest of a channel not all zero in float16; at most 1), which undoes dy's scaling up to one
  common factor s_min, and each input channel i of the kernel
  by the power of two t_i that brings its norm to at most 2^7 / sqrt(C_out). Each entry of dx is
  a 3x3xC_out patch of scaled dy (norm at most sqrt(C_out) 2^7) dotted with such a channel: at
  most 2^14. It is divided by s_min t_i.
- Underflow: an operand entry under 2^-24 after scaling flushes to zero, and a result under 2^-14
  keeps fewer than 11 bits. All such losses together change a result by under 2^-20 of its 2^14
  bound (up to 2^21 pixels a weight gradient, 256 channels an input gradient), while TF32 rounds
  each product by ~2^-11. So precision is relative to the channels' norms: a region whose gradient
  is far below its channel's typical entry is resolved more coarsely than TF32 would resolve it,
  with an error that stays tiny against the channel.

Measured on an H100 (experiments/bench_gradient_formats.py, experiments/gradient_precision.py): one
conv's weight gradient is 2.3x closer to float32 products than cuDNN's TF32 one, its input
gradient 1.2x further (the float16 result is rounded once more); a whole net's parameter
gradients come out closer than TF32's (relative error 2.0e-3 against 2.4e-3 for the deblurring
net at 512 x 512, 7.2e-4 against 1.0e-3 for the COC net), and the float32 deblurring step at
batch 2 takes 32.1 ms instead of 39.6. A non-finite operand, or a channel norm that overflows
float32, makes the gradients NaN, which the training step's non-finite check then reports, as it
would TF32's.

`CONV_GRADIENTS`: "native" (XLA's: TF32 on a GPU, float32 on a CPU), "float16" (the above, for
float32 3x3 convs on maps of at least `FLOAT16_MIN_PIXELS`; others stay native), "auto" (float16
for float32 compute on a GPU, else native: on a CPU float32 products are exact, so float16 would
only lose precision).
"""

import functools

import jax
import jax.numpy as jnp

RESOLVED_CONV_GRADIENTS = ("native", "float16")  # what "auto" resolves to; what a ConvSpec holds
CONV_GRADIENTS = ("auto",) + RESOLVED_CONV_GRADIENTS
HWIO_TO_OHWI = (3, 0, 1, 2)  # kernel layout permutations
OHWI_TO_HWIO = (1, 2, 3, 0)
_NORM_BOUND = 2.0 ** 7  # two such norms bound every float16 result by 2^14
# Smaller maps keep native gradients: there the conversions and norms cost about what the TF32
# kernels do (H100, float32 step at batch 2 with float16 weight gradients: 36.2 ms with every 3x3
# conv on float16, 35.7 ms with those of 128 x 128 pixels or more; with both gradients on float16,
# 31.2 ms from 128 x 128 and 31.7 ms from 256 x 256).
FLOAT16_MIN_PIXELS = 128 * 128


def check_conv_gradients(mode):
  if mode not in CONV_GRADIENTS:
    raise ValueError(f"conv gradients {mode!r}; expected one of {CONV_GRADIENTS}")


def resolve_conv_gradients(mode, dtype, platform):
  """The conv gradients ("native" or "float16") that `mode` means for convs computing in `dtype`
  on `platform` (jax.default_backend()'s names)."""
  check_conv_gradients(mode)
  if mode != "auto":
    return mode
  return "float16" if jnp.dtype(dtype) == jnp.float32 and platform == "gpu" else "native"


def same_conv(x, kernel, kernel_layout):
  """Stride-1 zero-"same"-padded convolution of NHWC `x` with a kernel in `kernel_layout`."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", kernel_layout, "NHWC"))


def weight_gradient(x, dy, window, out_dtype=jnp.float32, precision=None):
  """The OHWI weight gradient of `same_conv` with an odd `window` (kh, kw), given dy.

  dW[o, a, b, i] = sum over n, h, w of xpad[n, h + a, w + b, i] dy[n, h, w, o]: a convolution with
  batch and features swapped, which XLA hands to cuDNN as its backward-filter kernel.
  """
  padding = tuple(((k - 1) // 2, (k - 1) // 2) for k in window)
  return jax.lax.conv_general_dilated(x, dy, (1, 1), padding, dimension_numbers=("CHWN", "IHWO", "CHWN"),
                                      precision=precision, preferred_element_type=out_dtype)


def input_gradient(dy, kernel_ohwi, out_dtype=None, precision=None):
  """x's gradient of `same_conv` with an OHWI kernel of odd window, given dy (NHWC).

  dx[n, h, w, i] = sum over a, b, o of dy[n, h - a', w - b', o] W[o, a, b, i]: the convolution of
  dy with the kernel flipped in space, its input and output channels swapped.
  """
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

  out_dtype: what cuDNN is asked for. float32 gains nothing: XLA then converts the operands back
  to float32 and runs the TF32 kernel (experiments/bench_gradient_formats.py).
  """
  return _unscaled_weight_gradient(*scaled_float16(x), *scaled_float16(dy), window, out_dtype)


def _unscaled_input_gradient(dy16, dy_scales, kernel_ohwi):
  # dy's scales undone up to `common`, the smallest scale of a channel whose float16 copy is not
  # all zero. A dead channel (a dead ReLU's, say) contributes nothing; were its scale, 1, the
  # common factor, every live channel's weights would shrink by its own scale (up to 2^40 in the
  # nets), to nothing in float16.
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


def _to_layout(ohwi, kernel_layout):
  return ohwi if kernel_layout == "OHWI" else ohwi.transpose(OHWI_TO_HWIO)


def _to_ohwi(kernel, kernel_layout):
  return kernel if kernel_layout == "OHWI" else kernel.transpose(HWIO_TO_OHWI)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_float16_gradients(x, kernel, kernel_layout):
  """`same_conv` whose gradients (x's and the kernel's) come from scaled float16 operands."""
  return same_conv(x, kernel, kernel_layout)


def _forward(x, kernel, kernel_layout):
  return same_conv(x, kernel, kernel_layout), (x, kernel)


def _backward(kernel_layout, residuals, dy):
  x, kernel = residuals
  kernel_ohwi = _to_ohwi(kernel, kernel_layout)
  dy16, dy_scales = scaled_float16(dy)
  dx = _unscaled_input_gradient(dy16, dy_scales, kernel_ohwi).astype(x.dtype)
  dw = _unscaled_weight_gradient(*scaled_float16(x), dy16, dy_scales, kernel_ohwi.shape[1:3])
  return dx, _to_layout(dw, kernel_layout).astype(kernel.dtype)


conv_float16_gradients.defvjp(_forward, _backward)
