"""The dual-pixel kernel family of the reblur loss (SPEC section 3), defined once for
the loss, the classical COC search and the synthetic generator, so rendered views and loss agree.

Sign convention: a signed COC b > 0 is in front of the focal plane, where the left view is the scene
*convolved* with K+_b and the right view with K-_b; then L x K+ = R x K- in the loss's
cross-correlation, so it vanishes at the true b. K+ (heavier on its right columns) moves content
right, so in front of focus the right view is shifted left of the left one, as in real cameras.
"""

import numpy as np

MAX_RADIUS = 24  # the paper's bound on the COC (radii 0..24, "25 as the upper bound")


def fast_fft_length(n):
  """Smallest 2-3-5-smooth integer >= n: an FFT size every library (pocketfft, cuFFT) does fast."""
  while True:
    m = n
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    if m == 1:
      return n
    n += 1


def disk_mask(radius):
  """(2R+1)x(2R+1) boolean disk: (i-R)^2 + (j-R)^2 <= R^2."""
  offsets = np.arange(-radius, radius + 1)
  return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2


def column_ramp(radius):
  """The translating-disk column weights w[j] = min(j + 1, 2R), j = 0..2R."""
  return np.minimum(np.arange(2 * radius + 1) + 1, 2 * radius).astype(np.float64)


def kernel_plus(radius):
  """K+_R: the disk weighted by the rising column ramp, normalised to sum 1 (float64)."""
  radius = int(radius)
  if radius < 0:
    raise ValueError(f"radius must be >= 0, got {radius}")
  if radius == 0:
    return np.ones((1, 1))
  weighted = disk_mask(radius) * column_ramp(radius)[None, :]
  return weighted / weighted.sum()


def kernel_minus(radius):
  """K-_R: K+_R mirrored left-right."""
  return kernel_plus(radius)[:, ::-1].copy()


def signed_kernel(signed_radius):
  """K+_s for s >= 0 and K-_|s| for s < 0: the left view's kernel at an integer signed COC s (the
  right view's is the left view's at -s)."""
  s = int(signed_radius)
  return kernel_plus(s) if s >= 0 else kernel_minus(-s)


def kernel_stack(max_radius=MAX_RADIUS, dtype=np.float32):
  """K+_R for R = 0..m (m = max_radius), each centred in a (2m+1)^2 frame of zeros: (m + 1, 2m+1, 2m+1)."""
  size = 2 * max_radius + 1
  stack = np.zeros((max_radius + 1, size, size), np.float64)
  for radius in range(max_radius + 1):
    start = max_radius - radius
    stack[radius, start:start + 2 * radius + 1, start:start + 2 * radius + 1] = kernel_plus(radius)
  return stack.astype(dtype)
