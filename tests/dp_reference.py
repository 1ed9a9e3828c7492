"""Reference DP kernels written from SPEC section 3, for tests (independent of bambnet_jax)."""

import numpy as np


def spec_left_psf(b):
  """sum_i h+_i K+_i + h-_i K-_i (SPEC 3), centred in a 49 x 49 frame."""
  psf = np.zeros((49, 49))
  for i in range(25):
    offsets = np.arange(-i, i + 1)
    disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= i ** 2
    k_plus = disk * np.minimum(np.arange(2 * i + 1) + 1, max(2 * i, 1))[None, :]
    k_plus = k_plus / k_plus.sum()
    h_plus, h_minus = max(0, 1 - abs(b - i)), max(0, 1 - abs(b + i))
    if i == 0:
      h_plus, h_minus = h_plus / 2, h_minus / 2
    psf[24 - i:25 + i, 24 - i:25 + i] += h_plus * k_plus + h_minus * k_plus[:, ::-1]
  return psf
