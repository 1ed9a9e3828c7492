"""Dual-pixel image formation for synthetic scenes (SPEC sections 3 and 9), NumPy/SciPy on one core.

A layer at signed COC b is blurred into the left view by the left PSF at b and into the right view
by its mirror image. For PSF "disk" that is the reblur loss's own tent blend of the SPEC's kernels,
sum_s max(0, 1 - |b - s|) K_s, per pixel where b varies, so the loss vanishes at the true COC.
Layers are composited far to near with premultiplied colour (colour*alpha and alpha blurred alike):
depth edges get no dark halo, and no gap opens behind an object's blur.
"""

import numpy as np
import scipy.fft

from bambnet_jax.losses import dp_kernels


def rim_kernel_plus(radius, strength=1.0):
  """A disk PSF with a bright rim, weighted by the translating-disk ramp (Abuolaim et al. 2021).

  The rim (a Butterworth high-pass of the disk, relative height `strength`) is added to the disk and
  softened by a 0.5 px Gaussian; the column ramp is K+_R's, so it stays symmetric top-bottom.
  """
  radius = int(radius)
  if radius == 0:
    return np.ones((1, 1))
  disk = dp_kernels.disk_mask(radius).astype(np.float64)
  size = 4 * radius + 3  # room so the filter's ringing does not wrap onto the disk
  frame = np.zeros((size, size))
  start = radius + 1
  frame[start:start + 2 * radius + 1, start:start + 2 * radius + 1] = disk
  frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
  cutoff, order = 0.5 / radius, 2
  high_pass = 1.0 / (1.0 + (cutoff / np.maximum(frequency, 1e-9)) ** (2 * order))
  edge = np.abs(np.fft.ifft2(np.fft.fft2(frame) * high_pass).real)
  edge = edge[start:start + 2 * radius + 1, start:start + 2 * radius + 1] * disk
  profile = disk + strength * edge / max(edge.max(), 1e-12)
  taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * 0.5 ** 2))
  taps /= taps.sum()
  padded = np.pad(profile, 1)
  padded = taps[0] * padded[:-2] + taps[1] * padded[1:-1] + taps[2] * padded[2:]
  profile = taps[0] * padded[:, :-2] + taps[1] * padded[:, 1:-1] + taps[2] * padded[:, 2:]
  weighted = profile * dp_kernels.column_ramp(radius)[None, :]
  return weighted / weighted.sum()


def psf_family(kind, rim_strength=1.0):
  """The left view's PSF at an integer signed COC s, as a function s -> odd square kernel."""
  if kind == "disk":
    return dp_kernels.signed_kernel
  if kind == "rim":
    def signed_rim(s):
      kernel = rim_kernel_plus(abs(int(s)), rim_strength)
      return kernel if s >= 0 else kernel[:, ::-1]
    return signed_rim
  raise ValueError(f"unknown PSF kind {kind!r} (use 'disk' or 'rim')")


def blended_psf(family, coc):
  """sum_s max(0, 1 - |b - s|) family(s): the PSF at a real signed COC b."""
  low = int(np.floor(coc))
  t = coc - low
  parts = [(w, family(s)) for w, s in ((1.0 - t, low), (t, low + 1)) if w > 0]
  size = max(k.shape[0] for _, k in parts)
  psf = np.zeros((size, size))
  for w, k in parts:
    pad = (size - k.shape[0]) // 2
    psf[pad:pad + k.shape[0], pad:pad + k.shape[1]] += w * k
  return psf


def _kernel_spectrum(kernel, shape):
  """rfft2 of an odd square kernel with its centre moved to the origin of a `shape` grid."""
  r = kernel.shape[0] // 2
  grid = np.zeros(shape, np.float32)
  rows = np.arange(-r, r + 1) % shape[0]
  cols = np.arange(-r, r + 1) % shape[1]
  np.add.at(grid, (rows[:, None], cols[None, :]), kernel)  # taps aliasing on a small grid add up
  return scipy.fft.rfft2(grid)


def blur_views(planes, coc, family, max_radius):
  """Left and right views of planes (C, h, w) blurred at `coc`, a float or an (h, w) map; zero outside.

  Every PSF here is symmetric top-bottom, so the mirrored right PSF is a 180-degree turn whose
  spectrum is the conjugate: both views share each kernel FFT.
  """
  channels, height, width = planes.shape
  shape = (dp_kernels.fast_fft_length(height + max_radius + 1),
           dp_kernels.fast_fft_length(width + max_radius + 1))
  spectrum = scipy.fft.rfft2(planes, s=shape)

  def both_views(kernel):
    k = _kernel_spectrum(kernel, shape)
    views = scipy.fft.irfft2(np.stack([spectrum * k, spectrum * np.conj(k)]), s=shape)
    return views[:, :, :height, :width]

  if np.ndim(coc) == 0:
    return tuple(both_views(blended_psf(family, float(coc))))
  views = np.zeros((2, channels, height, width), np.float32)
  for s in range(int(np.floor(coc.min())), int(np.floor(coc.max())) + 2):
    weight = np.maximum(0.0, 1.0 - np.abs(coc - s)).astype(np.float32)
    if weight.any():
      views += weight * both_views(family(s))
  return tuple(views)


def srgb_to_linear(x):
  x = np.clip(x, 0.0, 1.0)
  return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x):
  x = np.clip(x, 0.0, 1.0)
  return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def vignetting_gains(width, strength):
  """Complementary horizontal gains (left view, right view), each 1 -+ strength/2 at the edges.

  The left view is brighter towards the right edge, as in the test data's Canon pairs.
  """
  u = np.linspace(-0.5, 0.5, width, dtype=np.float32)
  return 1.0 + strength * u, 1.0 - strength * u


def add_noise(rng, image, read_std, shot_gain):
  """Poisson-Gaussian noise in its Gaussian approximation: variance shot_gain * x + read_std^2."""
  if read_std <= 0 and shot_gain <= 0:
    return image
  std = np.sqrt(np.maximum(shot_gain * image, 0.0) + read_std ** 2)
  return image + std * rng.standard_normal(image.shape).astype(np.float32)
