"""The DP reblur ("geometric") loss that trains the COC net without labels (paper III-B, SPEC 3).

For a signed COC b the SPEC compares the views reblurred with tent-weighted kernels:
  Lg - Rg = sum_i h+_i (L x K+_i - R x K-_i) + h-_i (L x K-_i - R x K+_i).
As K+_0 = K-_0 this is linear interpolation, (1 - t) Q_k + t Q_(k+1), k = floor(b), t = b - k, of
one response per signed radius s = -m..m: Q_s = L x K_s - R x mirror(K_s), K_s = K+_s (s >= 0) or
K-_|s|. The responses do not depend on the network: `kernel_responses` computes them once per batch
by FFT, (N, C, 2m + 1, H, W) (radius before H, W: coalesced gathers), and
`reblur_loss_from_responses` blends them inside the differentiated function. At integer b the
gradient is the right derivative (PyTorch's relu/abs give 0, stalling an all-zero COC output).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.losses import dp_kernels

LOSS_SCALE = 1000.0
GAUSSIAN_SIGMA = 1.5
TV_START_STEP = 3000
TV_WEIGHT = 1e-5


def _signed_kernel_spectra(shape, max_radius):
  """conj(FFT) of each signed kernel K_s, s = -m..m, centred at the origin of the FFT grid. K+_R is
  symmetric top-bottom, so its mirror K-_R is a 180-degree turn, FFT(K-_R) = conj(FFT(K+_R)): only
  the m + 1 kernels K+_R are transformed."""
  m = max_radius
  frames = jnp.asarray(dp_kernels.kernel_stack(m, np.float32))  # (m+1, 2m+1, 2m+1)
  # Tap offset u lands at u mod grid size; taps that alias onto one cell (a grid smaller than the
  # kernel) add up, which is still exact because the image's zero padding covers every wrap.
  rows, cols = np.arange(-m, m + 1) % shape[0], np.arange(-m, m + 1) % shape[1]
  centred = jnp.zeros((m + 1,) + shape, jnp.float32).at[:, rows[:, None], cols[None, :]].add(frames)
  plus = jnp.fft.rfft2(centred)  # FFT(K+_R), R = 0..m
  # s < 0: conj(FFT(K-_|s|)) = FFT(K+_|s|); s >= 0: conj(FFT(K+_s)).
  return jnp.concatenate([plus[:0:-1], jnp.conj(plus)], axis=0)


@functools.partial(jax.jit, static_argnames=("max_radius", "dtype"))
def kernel_responses(left, right, max_radius=dp_kernels.MAX_RADIUS, dtype=jnp.float32):
  """The network-independent part of the reblur loss for (N, H, W, C) views: Q_s by FFT as
  (N, C, 2m+1, H, W), gradient stopped. dtype: storage; bfloat16 halves the memory (about 1e-3
  relative error in the loss)."""
  if left.shape != right.shape or left.ndim != 4:
    raise ValueError(f"need two (N, H, W, C) views of one shape, got {left.shape} and {right.shape}")
  height, width = left.shape[1:3]
  # Exact zero-padded correlation: a support of +-m wraps into rows >= H + m only.
  shape = tuple(dp_kernels.fast_fft_length(n + max_radius) for n in (height, width))
  left_hat, right_hat = (jnp.fft.rfft2(jnp.transpose(jnp.asarray(v, jnp.float32), (0, 3, 1, 2)), s=shape)[:, :, None]
                         for v in (left, right))
  kernel_hat = _signed_kernel_spectra(shape, max_radius)
  # Q_s = L x K_s - R x mirror(K_s); the mirror's correlation spectrum is the conjugate.
  q_hat = left_hat * kernel_hat - right_hat * jnp.conj(kernel_hat)
  return jax.lax.stop_gradient(jnp.fft.irfft2(q_hat, s=shape)[..., :height, :width].astype(dtype))


def blend_responses(responses, coc):
  """Lg - Rg at a signed COC (N, H, W, C) as (N, C, H, W); 0 outside [-m - 1, m + 1], as in the SPEC."""
  m = (responses.shape[2] - 1) // 2
  b = jnp.transpose(coc, (0, 3, 1, 2)).astype(jnp.float32)
  floor = jnp.floor(b)
  t = b - floor  # floor has zero gradient, so d/db reaches the loss through t alone
  low = floor.astype(jnp.int32) + m

  def gather(index, weight):
    picked = jnp.take_along_axis(responses, jnp.clip(index, 0, 2 * m)[:, :, None], axis=2)
    return jnp.where((index >= 0) & (index <= 2 * m), weight * picked[:, :, 0].astype(jnp.float32), 0.0)

  return gather(low, 1.0 - t) + gather(low + 1, t)


def smooth3x3(x, sigma=GAUSSIAN_SIGMA):
  """Normalised 3x3 Gaussian over the last two axes, reflect border (PyTorch's 'reflect'): the outer
  product of a normalised 3-tap one, applied along each axis."""
  taps = np.exp(-np.arange(-1, 2) ** 2 / (2.0 * sigma ** 2))
  a, b, _ = (float(v) for v in taps / taps.sum())
  pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
  x = jnp.pad(x, pad, mode="reflect")
  x = a * (x[..., :-2, :] + x[..., 2:, :]) + b * x[..., 1:-1, :]
  return a * (x[..., :, :-2] + x[..., :, 2:]) + b * x[..., :, 1:-1]


def reblur_loss_from_responses(responses, coc, tv_weight=0.0, border=0):
  """1000 * mean |G x (Lg - Rg)| + tv_weight * TV(coc), TV summing |vertical| + |horizontal|
  neighbour differences over the batch and channels.

  coc: (N, H, W, C) signed radii in px, one per colour channel (or (N, H, W, 1), shared).
  tv_weight: a float or a traced scalar (see `tv_weight_at`).
  border: px along each edge left out of the mean (0: the paper's loss): near an edge the
    zero-padded responses favour the wrong COC (experiments/RESULTS.md). TV covers every pixel.
  """
  residual = smooth3x3(blend_responses(responses, coc))
  if border:
    residual = residual[..., border:-border, border:-border]  # (N, C, H, W)
  coc = coc.astype(jnp.float32)
  tv = jnp.sum(jnp.abs(jnp.diff(coc, axis=1))) + jnp.sum(jnp.abs(jnp.diff(coc, axis=2)))
  return LOSS_SCALE * jnp.mean(jnp.abs(residual)) + tv_weight * tv


def reblur_loss(left, right, coc, tv_weight=0.0, max_radius=dp_kernels.MAX_RADIUS):
  """The whole loss in one call (responses recomputed each call: for checks and one-off use)."""
  responses = kernel_responses(left, right, max_radius=max_radius)
  return reblur_loss_from_responses(responses, coc, tv_weight)


def tv_weight_at(step, start=TV_START_STEP, weight=TV_WEIGHT):
  """The TV weight at a (possibly traced) step: 0 for the first `start` steps, then `weight`."""
  return jnp.where(jnp.asarray(step) >= start, jnp.float32(weight), jnp.float32(0.0))
