"""PSNR, SSIM and MAE of float images in [0, 1] (N, H, W, C), one value per image (SPEC 7).

SSIM is skimage's `structural_similarity(x, y, data_range=1, channel_axis=-1)` (7x7 uniform window).
"""

import chex
import dm_pix
import jax
import jax.numpy as jnp

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(x, y):
  """Peak signal-to-noise ratio with peak 1, in dB."""
  chex.assert_rank([x, y], 4)
  chex.assert_equal_shape([x, y])
  return dm_pix.psnr(x.astype(jnp.float32), y.astype(jnp.float32))


def mae(x, y):
  """Mean absolute error over all pixels and channels."""
  chex.assert_rank([x, y], 4)
  chex.assert_equal_shape([x, y])
  return jnp.mean(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(1, 2, 3))


def _box_mean(x, size):
  """Mean over every size x size window that fits inside the image ('valid')."""
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, size, size, 1), (1, 1, 1, 1), "VALID")
  return total / (size * size)


def ssim(x, y, window=SSIM_WINDOW):
  """Structural similarity, scikit-image's default convention (see the module docstring)."""
  chex.assert_rank([x, y], 4)
  chex.assert_equal_shape([x, y])
  if min(x.shape[1:3]) < window:
    raise ValueError(f"SSIM needs images of at least {window}x{window}, got {x.shape[1:3]}")
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  # Variances are differences of means of squares: centring first keeps float32 accurate.
  offset = jnp.mean(y, axis=(1, 2), keepdims=True)
  x, y = x - offset, y - offset
  cov_norm = window**2 / (window**2 - 1)
  ux, uy = _box_mean(x, window), _box_mean(y, window)
  vx = cov_norm * (_box_mean(x * x, window) - ux * ux)
  vy = cov_norm * (_box_mean(y * y, window) - uy * uy)
  vxy = cov_norm * (_box_mean(x * y, window) - ux * uy)
  c1, c2 = SSIM_K1**2, SSIM_K2**2
  # The centring shifted the means: put the offset back where the luminance term needs it.
  ux, uy = ux + offset, uy + offset
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
  # 'valid' windows are exactly skimage's map with its (window - 1) / 2 border cropped.
  return jnp.mean(s, axis=(1, 2, 3))


def image_metrics(restored, target):
  """{"psnr", "ssim", "mae"} per image."""
  return {"psnr": psnr(restored, target), "ssim": ssim(restored, target), "mae": mae(restored, target)}
