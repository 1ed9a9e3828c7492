"""A classical signed-COC estimate with no training: per pixel, the COC minimising the locally
smoothed reblur residual of `reblur.py`, and `textured_mask`, where a DP pair carries COC information.

At a signed COC b the residual is (1 - t) A_k + t A_(k+1), k = floor(b), A_s the smoothed
response at integer s; its windowed energy is on each interval [k, k + 1] a parabola in t, so
every integer candidate -m..m is evaluated and refined sub-pixel in closed form (exact, not a fit).
On real images the views are edge-extended (zero padding would be a false edge) and near depth
edges a pixel may take a clearly better shifted window's estimate (shiftable windows, as in stereo).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from bambnet_jax.io import images
from bambnet_jax.losses import dp_kernels
from bambnet_jax.losses import reblur

DEFAULT_WINDOW = 21  # px: averages out noise and model mismatch on real pairs
# A pixel takes a shifted window's estimate only if that window's residual is below this fraction
# of the centred one's: clear wins at depth edges count, chance wins in flat noisy areas do not.
SHIFT_MARGIN = 0.5
TEXTURE_WINDOW = 15
TEXTURE_THRESHOLD = 0.01  # RMS horizontal gradient per px on [0, 1] images (~2.5 levels in 8 bit)


def box_sum(x, size):
  """Sum over a size x size window (zero outside the image) on the last two axes, via cumsums."""
  r = size // 2

  def along(x, axis):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r + 1, r)
    c, n = jnp.cumsum(jnp.pad(x, pad), axis=axis), x.shape[axis]
    return jax.lax.slice_in_dim(c, size, size + n, axis=axis) - jax.lax.slice_in_dim(c, 0, n, axis=axis)

  return along(along(x, x.ndim - 2), x.ndim - 1)


def _interval_minima(energy, slope, curvature):
  """Per interval [s, s+1], D_s = A_s - A_(s+1): the t in [0, 1] minimising e - 2 t g + t^2 h and that
  minimum, for the windowed e = W * A_s^2, g = W * A_s D_s, h = W * D_s^2, each (S-1, ...)."""
  t = jnp.clip(slope / jnp.maximum(curvature, 1e-30), 0.0, 1.0)
  return t, energy - 2.0 * t * slope + t ** 2 * curvature


def _best_shifted_window(value, coc, shift):
  """Per pixel, the estimate of the window with the lowest residual among those centred within
  +-shift px (3x3 offsets): near a depth edge, one lying on one side of it."""
  offsets = [(dy, dx) for dy in (-shift, 0, shift) for dx in (-shift, 0, shift)]
  values = jnp.stack([jnp.roll(value, offset, axis=(-2, -1)) for offset in offsets])
  values = values.at[offsets.index((0, 0))].multiply(SHIFT_MARGIN)
  cocs = jnp.stack([jnp.roll(coc, offset, axis=(-2, -1)) for offset in offsets])
  choice = jnp.argmin(values, axis=0)
  return jnp.take_along_axis(cocs, choice[None], axis=0)[0]


@functools.partial(jax.jit, static_argnames=("max_radius", "window", "shift", "per_channel"))
def _search(left, right, max_radius, window, shift, per_channel):
  """left, right: (H, W, C) float32. Returns the signed COC, (H, W) or (H, W, C)."""
  height, width = left.shape[:2]
  # Edge-extended, not zero-padded: zeros are a false edge, different in the two views. The margin
  # covers the kernels, the window and its shifts, so no roll wraps into the image.
  pad = max_radius + window + shift
  padding = ((pad, pad), (pad, pad), (0, 0))
  left, right = jnp.pad(left, padding, mode="edge"), jnp.pad(right, padding, mode="edge")
  responses = reblur.kernel_responses(left[None], right[None], max_radius=max_radius)[0]
  smoothed = reblur.smooth3x3(responses)  # (C, S, H, W): A_s per channel
  step = smoothed[:, :-1] - smoothed[:, 1:]  # D_s, formed before squaring: no cancellation
  terms = (smoothed[:, :-1] ** 2, smoothed[:, :-1] * step, step ** 2)
  if not per_channel:
    terms = [term.sum(0, keepdims=True) for term in terms]
  t, value = _interval_minima(*(jnp.moveaxis(box_sum(term, window), 1, 0) for term in terms))
  best = jnp.argmin(value, axis=0)  # (C', H, W): the interval holding the minimum
  t_best = jnp.take_along_axis(t, best[None], axis=0)[0]
  coc = (best - max_radius).astype(jnp.float32) + t_best
  if shift:
    coc = _best_shifted_window(jnp.min(value, axis=0), coc, shift)
  coc = jnp.moveaxis(coc[:, pad:pad + height, pad:pad + width], 0, -1)
  return coc if per_channel else coc[..., 0]


def estimate_coc(left, right, max_radius=dp_kernels.MAX_RADIUS, window=DEFAULT_WINDOW, per_channel=False):
  """(coc, textured): the signed COC (px, > 0 in front of focus) minimising the reblur residual summed
  over an odd `window`, among the radii -max_radius..max_radius refined in between (a pixel may
  borrow the estimate of a better-fitting window up to window // 2 px away), and the `textured_mask`
  of (left + right) / 2. left, right: (H, W, C) views, float in [0, 1] or uint8/uint16 pixels.
  per_channel: one COC per colour channel (H, W, C) instead of one shared map (H, W)."""
  left, right = images.to_float(np.asarray(left)), images.to_float(np.asarray(right))
  if left.shape != right.shape or left.ndim != 3:
    raise ValueError(f"need two (H, W, C) views of one shape, got {left.shape} and {right.shape}")
  if window < 1 or window % 2 == 0:
    raise ValueError(f"window must be a positive odd number of pixels, got {window}")
  coc = _search(jnp.asarray(left), jnp.asarray(right), max_radius, window, window // 2, per_channel)
  return np.asarray(coc), textured_mask((left + right) / 2)


def textured_mask(image, window=TEXTURE_WINDOW, threshold=TEXTURE_THRESHOLD):
  """(H, W) bool: where the RMS horizontal central difference (DP disparity is horizontal) of the grey
  `image` ((H, W) or (H, W, C) in [0, 1]) over a `window`^2 neighbourhood is at least `threshold`
  per px. Absolute, not a percentile: a flat image has no textured pixels at all."""
  grey = np.asarray(image, np.float64)
  if grey.ndim == 3:
    grey = grey.mean(axis=-1)
  gradient = np.zeros_like(grey)
  gradient[:, 1:-1] = (grey[:, 2:] - grey[:, :-2]) / 2.0
  # Mean over the part of the window inside the image (no false energy from a zero border).
  energy = ndimage.uniform_filter(gradient ** 2, window, mode="constant")
  inside = ndimage.uniform_filter(np.ones_like(grey), window, mode="constant")
  return np.sqrt(np.maximum(energy / inside, 0.0)) >= threshold
