"""The nets' stride-1 zero-"same"-padded convolution, and a faster weight gradient for float32.

On a GPU, XLA computes float32 convolutions with TF32 tensor cores (11-bit significands, float32
accumulation), and cuDNN's TF32 weight gradient runs at a quarter of the bfloat16 rate, not half
as the forward and the activation gradient do; in the float32 training step it is the costliest
kernel (experiments/PERF.md, sessions 7 and 8). float16 carries the same 11-bit significand, with
float16's full tensor-core rate, but its range is only 2^-24 to 65504. `float16_weight_gradient`
therefore scales the operands first:

- each input channel of x and each output channel of the output gradient dy is multiplied by the
  power of two that brings its Frobenius norm (over batch and pixels) to at most 2^7. Powers of
  two scale without rounding, and are divided out of the result exactly.
- By Cauchy-Schwarz every entry dW[o, :, :, i] is at most |x_i| |dy_o| <= 2^14 < 65504, so the
  float16 result cannot overflow; cuDNN accumulates the products in float32.
- An operand entry under 2^-24 after scaling (2^-31 of its channel's norm) flushes to zero; all
  such losses together change an entry of dW by at most 2^-31 sqrt(pixels) |x_i| |dy_o|, under
  2^-21 of that bound at 512 x 512 x 2 pixels, while TF32's rounding is ~2^-11 of each product.

Measured on an H100 (experiments/bench_wgrad_formats.py): relative to float32 products the result
is 2.3x closer than cuDNN's TF32 one, and the float32 deblurring step at batch 2 takes 3.9 ms less.
A non-finite operand, or a channel norm that overflows float32, makes the gradient NaN, which the
training step's non-finite check then reports, as it would TF32's.

`WEIGHT_GRADIENTS`: "native" (XLA's: TF32 on a GPU, float32 on a CPU), "float16" (the above, for
float32 3x3 convs on maps of at least `FLOAT16_MIN_PIXELS`; others stay native), "auto" (float16
for float32 compute on a GPU, else native: on a CPU float32 products are exact, so float16 would
only lose precision).
"""

import functools

import jax
import jax.numpy as jnp

RESOLVED_WEIGHT_GRADIENTS = ("native", "float16")  # what "auto" resolves to; what a ConvSpec holds
WEIGHT_GRADIENTS = ("auto",) + RESOLVED_WEIGHT_GRADIENTS
HWIO_TO_OHWI = (3, 0, 1, 2)  # kernel layout permutations
OHWI_TO_HWIO = (1, 2, 3, 0)
_CHANNEL_NORM_BOUND = 2.0 ** 7  # two such norms bound every float16 gradient entry by 2^14
# Smaller maps keep the native weight gradient: there the conversions and norms cost about what
# the TF32 kernel does (H100, float32 step at batch 2: 36.2 ms with every 3x3 conv on float16,
# 35.7 ms with those of 128 x 128 pixels or more, 39.6 ms with none).
FLOAT16_MIN_PIXELS = 128 * 128


def check_weight_gradient(mode):
  if mode not in WEIGHT_GRADIENTS:
    raise ValueError(f"weight gradient {mode!r}; expected one of {WEIGHT_GRADIENTS}")


def resolve_weight_gradient(mode, dtype, platform):
  """The weight gradient ("native" or "float16") that `mode` means for convs computing in `dtype`
  on `platform` (jax.default_backend()'s names)."""
  check_weight_gradient(mode)
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


def channel_scales(t):
  """Per channel (last axis) of `t`, the largest power of two s with |s t_c|_F <= 2^7 (1 if t_c = 0)."""
  norms = jnp.sqrt(jnp.sum(jnp.square(t.astype(jnp.float32)), axis=tuple(range(t.ndim - 1))))
  safe = jnp.where(norms > 0, norms, 1.0)
  return jnp.where(norms > 0, jnp.exp2(jnp.floor(jnp.log2(_CHANNEL_NORM_BOUND / safe))), 1.0)


def float16_weight_gradient(x, dy, window, out_dtype=jnp.float16):
  """`weight_gradient(x, dy, window)` from power-of-two-scaled float16 operands; float32 OHWI.

  out_dtype: what cuDNN is asked for. float32 gains nothing: XLA then converts the operands back
  to float32 and runs the TF32 kernel (experiments/bench_wgrad_formats.py).
  """
  x_scales, dy_scales = channel_scales(x), channel_scales(dy)
  scaled = weight_gradient((x * x_scales).astype(jnp.float16), (dy * dy_scales).astype(jnp.float16), window,
                           out_dtype=out_dtype)
  return scaled.astype(jnp.float32) / (dy_scales[:, None, None, None] * x_scales)


def _to_layout(ohwi, kernel_layout):
  return ohwi if kernel_layout == "OHWI" else ohwi.transpose(OHWI_TO_HWIO)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_float16_weight_gradient(x, kernel, kernel_layout):
  """`same_conv` whose weight gradient is `float16_weight_gradient`; x's gradient stays native."""
  return same_conv(x, kernel, kernel_layout)


def _forward(x, kernel, kernel_layout):
  return same_conv(x, kernel, kernel_layout), (x, kernel)


def _backward(kernel_layout, residuals, dy):
  x, kernel = residuals
  dx = jax.vjp(lambda x: same_conv(x, kernel, kernel_layout), x)[1](dy)[0]
  window = kernel.shape[1:3] if kernel_layout == "OHWI" else kernel.shape[:2]
  return dx, _to_layout(float16_weight_gradient(x, dy, window), kernel_layout).astype(kernel.dtype)


conv_float16_weight_gradient.defvjp(_forward, _backward)
