"""PSNR, SSIM and MAE against scikit-image and NumPy, on random and real images."""

import jax
import numpy as np
import pytest
from skimage import metrics as skm

from bambnet_jax.evaluation import metrics
from bambnet_jax.io import images


def _pair(name, real_dp_dir):
  """(x, y) float64 images in [0, 1] of the named case."""
  rng = np.random.default_rng(0)
  if name == "random":
    x = rng.random((33, 47, 3))
    return x, np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
  if name == "uint16":  # 16-bit quantised, an odd size
    a = images.to_float(rng.integers(0, 65536, (29, 31, 3), dtype=np.uint16))
    return a, images.to_float(images.from_float(np.clip(a * 0.9 + 0.05, 0, 1), 16))
  if name == "full-resolution uint16":  # DPDD's size: float32 sums over 5.6M values stay accurate
    b = images.to_float(rng.integers(0, 65536, (1120, 1680, 3), dtype=np.uint16))
    noisy = np.clip(b * 0.95 + 0.02 + rng.normal(0, 0.01, b.shape), 0, 1)
    return b, images.to_float(images.from_float(noisy, 16))
  return _real_pair(real_dp_dir)


def _real_pair(real_dp_dir):
  left, right = images.read_dp_pair(real_dp_dir / "0600/f4/l.png", real_dp_dir / "0600/f4/r.png")
  return images.to_float(left), images.to_float(right)


@pytest.mark.parametrize("jitted", [False, True])
@pytest.mark.parametrize("name", ["random", "uint16", "full-resolution uint16", "real"])
def test_metrics_match_scikit_image_and_numpy(name, jitted, real_dp_dir):
  x, y = _pair(name, real_dp_dir)
  fn = jax.jit(metrics.image_metrics) if jitted else metrics.image_metrics
  got = {k: float(v[0]) for k, v in fn(x[None].astype(np.float32), y[None].astype(np.float32)).items()}
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  # The bar: 1e-5 for PSNR (dB) and MAE, 1e-4 for SSIM, absolute.
  assert got["psnr"] == pytest.approx(skm.peak_signal_noise_ratio(y64, x64, data_range=1), abs=1e-5, rel=0)
  assert got["ssim"] == pytest.approx(skm.structural_similarity(x64, y64, data_range=1, channel_axis=-1), abs=1e-4)
  assert got["mae"] == pytest.approx(np.mean(np.abs(x64 - y64)), abs=1e-5, rel=0)


def test_ssim_is_per_image_in_a_batch():
  rng = np.random.default_rng(1)
  x = rng.random((3, 16, 20, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
  got = np.asarray(metrics.ssim(x, y))
  want = [skm.structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=1, channel_axis=-1)
          for a, b in zip(x, y)]
  np.testing.assert_allclose(got, want, atol=1e-4)
