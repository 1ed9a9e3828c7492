"""The classical COC estimate: on pairs rendered here from the SPEC, on generated scenes, on the
real Canon pairs (SOURCES.md beside them: 0.6 m in front of the 1 m focus, 1.5 m behind it)."""

import pathlib
import sys

import numpy as np
import pytest
from scipy import ndimage

from bambnet_jax.data import synthetic
from bambnet_jax.io import images
from bambnet_jax.losses import coc_search

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import dp_reference  # pylint: disable=g-import-not-at-top,wrong-import-position

SIZE = 96


def render_constant_depth(b, seed=0):
  """A DP pair of a textured plane at signed COC b: L = S * PSF(b), R = S * mirror(PSF(b)).

  Convolution (not correlation) so that the loss's correlations L x K+ and R x K- both equal
  S * K+ * K- in front of focus: then the pair has zero reblur residual at b (SPEC 3).
  """
  rng = np.random.default_rng(seed)
  margin = 30
  # Detail at several scales, so some survives even a large blur.
  noise = rng.random((SIZE + 2 * margin, SIZE + 2 * margin, 3))
  sharp = sum(ndimage.gaussian_filter(noise, (s, s, 0)) * s for s in (1, 3, 8))
  sharp = (sharp - sharp.min()) / (sharp.max() - sharp.min())
  psf = dp_reference.spec_left_psf(b)
  views = []
  for kernel in (psf, psf[:, ::-1]):
    blurred = np.stack([ndimage.convolve(sharp[..., c], kernel, mode="constant") for c in range(3)], -1)
    views.append(blurred[margin:-margin, margin:-margin].astype(np.float32))
  return views


@pytest.mark.parametrize("b", [3.4, -5.7, 0.0, 0.6, -11.25])
def test_recovers_a_constant_subpixel_coc(b):
  left, right = render_constant_depth(b)
  coc, textured = coc_search.estimate_coc(left, right)
  assert coc.shape == (SIZE, SIZE) and coc.dtype == np.float32
  assert textured.shape == (SIZE, SIZE) and textured.dtype == bool
  inner = coc[16:-16, 16:-16]
  assert np.median(inner) == pytest.approx(b, abs=0.05)
  assert np.mean(np.abs(inner - b) < 0.1) > 0.95


def test_per_channel_gives_one_map_per_colour():
  left, right = render_constant_depth(-2.5, seed=1)
  coc, _ = coc_search.estimate_coc(left, right, per_channel=True)
  assert coc.shape == (SIZE, SIZE, 3)
  for c in range(3):
    assert np.median(coc[16:-16, 16:-16, c]) == pytest.approx(-2.5, abs=0.05)


def test_textured_mask_needs_horizontal_detail():
  y, x = np.mgrid[0:64, 0:64]
  assert not coc_search.textured_mask(np.full((64, 64, 3), 0.5)).any()
  vertical_stripes = 0.5 + 0.2 * np.sin(x * 0.8)  # changes along x: carries DP disparity
  horizontal_stripes = 0.5 + 0.2 * np.sin(y * 0.8)  # changes along y only: no disparity cue
  assert coc_search.textured_mask(vertical_stripes).all()
  assert not coc_search.textured_mask(horizontal_stripes).any()


def test_rejects_bad_input():
  left = np.zeros((32, 32, 3), np.float32)
  with pytest.raises(ValueError):
    coc_search.estimate_coc(left, left[:, :16])
  with pytest.raises(ValueError):
    coc_search.estimate_coc(left, left, window=8)


def test_recovers_generated_scenes_within_three_quarters_of_a_pixel():
  # Held out: these seeds were never used while choosing the window or the search's settings.
  config = synthetic.SceneConfig(height=512, width=512)
  errors = []
  for seed in (1000, 1001):
    sample = synthetic.render_sample(seed, config)
    coc, textured = coc_search.estimate_coc(sample["left"], sample["right"])
    errors.append(np.abs(coc - sample["coc"])[textured])
  mae = float(np.concatenate(errors).mean())
  print(f"signed-COC MAE on textured pixels of 2 held-out 512x512 scenes: {mae:.3f} px")
  assert mae <= 0.75


def _real_pair(real_dp_dir, name):
  left, right = images.read_dp_pair(real_dp_dir / name / "l.png", real_dp_dir / name / "r.png")
  return images.to_float(left), images.to_float(right)


@pytest.mark.parametrize("name, low, high", [
    ("0600/f4", 1.0, np.inf),  # in front of the focal plane: positive
    ("1500/f4", -np.inf, -0.75),  # behind it: negative
    ("0600/f20", -0.5, 0.5),  # f/20: nearly sharp
    ("1500/f20", -0.5, 0.5),
])
def test_real_canon_pairs_have_the_right_sign(real_dp_dir, name, low, high):
  # Full 768x512 resolution: the COC is in pixels of the image as captured.
  left, right = _real_pair(real_dp_dir, name)
  coc, textured = coc_search.estimate_coc(left, right)
  median = float(np.median(coc[textured]))
  print(f"{name}: median signed COC over textured pixels {median:+.3f} px")
  assert textured.mean() > 0.2
  assert low <= median <= high
