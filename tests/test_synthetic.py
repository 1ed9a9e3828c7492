"""The synthetic DP generator against image formation written here from SPEC sections 3 and 9."""

import time

import numpy as np
import pytest
from scipy import ndimage

from bambnet_jax.data import synthetic
from bambnet_jax.io import images

SMALL = dict(height=64, width=80)


def spec_left_psf(b, size=49):
  """sum_i h+_i K+_i + h-_i K-_i (SPEC 3), centred in a size x size frame."""
  half = size // 2
  psf = np.zeros((size, size))
  for i in range(25):
    h_plus, h_minus = max(0, 1 - abs(b - i)), max(0, 1 - abs(b + i))
    if i == 0:
      h_plus, h_minus = h_plus / 2, h_minus / 2
    if h_plus == 0 and h_minus == 0:
      continue
    offsets = np.arange(-i, i + 1)
    disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= i ** 2
    k_plus = disk * np.minimum(np.arange(2 * i + 1) + 1, max(2 * i, 1))[None, :]
    k_plus = k_plus / k_plus.sum()
    psf[half - i:half + i + 1, half - i:half + i + 1] += h_plus * k_plus + h_minus * k_plus[:, ::-1]
  return psf


def test_outputs_have_the_documented_form():
  sample = synthetic.render_sample(3, synthetic.SceneConfig(**SMALL))
  assert set(sample) == {"left", "right", "combined", "sharp", "coc"}
  for key in ("left", "right", "combined", "sharp"):
    assert sample[key].shape == (64, 80, 3) and sample[key].dtype == np.float32
    assert sample[key].min() >= 0 and sample[key].max() <= 1
  assert sample["coc"].shape == (64, 80) and sample["coc"].dtype == np.float32
  np.testing.assert_allclose(sample["combined"], (sample["left"] + sample["right"]) / 2, atol=1e-7)


def test_seeded_and_reproducible():
  config = synthetic.SceneConfig(**SMALL, read_noise=0.01, vignetting=0.2)
  first, again = synthetic.render_sample(5, config), synthetic.render_sample(5, config)
  other = synthetic.render_sample(6, config)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["left"], other["left"])


@pytest.mark.parametrize("seed", [0, 2, 3, 4])
def test_a_plane_is_the_sharp_image_convolved_with_the_spec_psf(seed):
  # One fronto-parallel layer of a photo the size of the frame: the generator pads it by
  # reflection, and the views are that padded photo convolved with the left PSF and its mirror.
  rng = np.random.default_rng(0)
  photo = ndimage.gaussian_filter(rng.random((64, 80, 3)), (1, 1, 0)).astype(np.float32)
  config = synthetic.SceneConfig(**SMALL, num_layers=1, slanted=False, max_coc=6.6)
  # The layer's COC is drawn in [-max_coc, max_coc]; read it back and check it is constant.
  sample = synthetic.render_sample(seed, config, sharp_image=photo)
  assert abs(sample["coc"][0, 0]) > 1  # a real blur (these seeds give both signs)
  coc = float(sample["coc"][0, 0])
  np.testing.assert_array_equal(sample["coc"], coc)
  np.testing.assert_allclose(sample["sharp"], photo, atol=1e-6)
  margin = 30
  padded = np.pad(photo.astype(np.float64), ((margin, margin), (margin, margin), (0, 0)), mode="reflect")
  psf = spec_left_psf(coc)
  for view, kernel in (("left", psf), ("right", psf[:, ::-1])):
    expected = np.stack([ndimage.convolve(padded[..., c], kernel, mode="constant") for c in range(3)], -1)
    np.testing.assert_allclose(sample[view], expected[margin:-margin, margin:-margin], atol=1e-5)


def test_in_front_of_focus_the_right_view_is_shifted_left():
  # SPEC 3 and the Canon pairs: b > 0 means the right view is displaced left of the left view.
  rng = np.random.default_rng(1)
  photo = ndimage.gaussian_filter(rng.random((64, 80, 3)), (2, 2, 0)).astype(np.float32)
  config = synthetic.SceneConfig(**SMALL, num_layers=1, slanted=False, max_coc=8)
  samples = (synthetic.render_sample(seed, config, photo) for seed in range(50))
  strong = [s for s in samples if abs(s["coc"][0, 0]) > 4][:4]
  assert {np.sign(s["coc"][0, 0]) for s in strong} == {-1.0, 1.0}
  for sample in strong:
    left, right = sample["left"].mean(-1), sample["right"].mean(-1)
    shifts = list(range(-6, 7))
    # The shift d with right(x) ~ left(x + d) over the interior: d > 0 means the right view shows
    # at x what the left shows at x + d, i.e. it is shifted left. (The same measure on the Canon
    # pairs gives d = +1 for 0600/f4, in front of focus.)
    errors = [np.mean((np.roll(left, -d, axis=1) - right)[:, 10:-10] ** 2) for d in shifts]
    best = shifts[int(np.argmin(errors))]
    assert np.sign(best) == np.sign(sample["coc"][0, 0]), (sample["coc"][0, 0], best)


def test_compositing_has_no_dark_halos():
  # Every layer of a uniform grey photo is grey: any correct far-to-near compositing of blurred
  # layers gives uniform grey; cutting far layers out behind near ones would darken the edges.
  grey = np.full((64, 80, 3), 0.5, np.float32)
  for psf in ("disk", "rim"):
    config = synthetic.SceneConfig(**SMALL, num_layers=5, max_coc=12, psf=psf)
    sample = synthetic.render_sample(2, config, sharp_image=grey)
    assert len(np.unique(np.round(sample["coc"]))) > 2  # several layers really are there
    for view in ("left", "right", "sharp"):
      np.testing.assert_allclose(sample[view], 0.5, atol=1e-4)


def test_layers_are_planes_within_the_coc_bound():
  config = synthetic.SceneConfig(**SMALL, num_layers=1, slanted=True, max_coc=7)
  sample = synthetic.render_sample(4, config)
  y, x = np.mgrid[0:64, 0:80]
  design = np.stack([np.ones(x.size), x.ravel(), y.ravel()], 1)
  coefficients, *_ = np.linalg.lstsq(design, sample["coc"].ravel().astype(np.float64), rcond=None)
  np.testing.assert_allclose(design @ coefficients, sample["coc"].ravel(), atol=1e-4)
  for seed in range(6):
    coc = synthetic.render_sample(seed, synthetic.SceneConfig(**SMALL, max_coc=5.5))["coc"]
    assert np.abs(coc).max() <= 5.5


def test_layers_go_far_to_near_without_crossing():
  # Far to near is ascending signed COC; each plane keeps to its own band over the whole canvas,
  # so the compositing order is right at every pixel.
  config = synthetic.SceneConfig(**SMALL, num_layers=6, max_coc=12, max_slant=10)
  canvas = (100, 120)
  for seed in range(5):
    layers = synthetic.sample_layers(np.random.default_rng(seed), config, canvas, (18, 20, 64, 80))
    assert layers[0].mask is None and all(layer.mask is not None for layer in layers[1:])
    rows, cols = np.arange(canvas[0], dtype=np.float32), np.arange(canvas[1], dtype=np.float32)
    maps = [layer.coc_map(rows, cols) for layer in layers]
    for far, near in zip(maps[:-1], maps[1:]):
      assert far.max() <= near.min() + 1e-5
    assert min(m.min() for m in maps) >= -12 - 1e-5 and max(m.max() for m in maps) <= 12 + 1e-5


def test_realism_options():
  grey = np.full((64, 80, 3), 0.5, np.float32)
  base = dict(**SMALL, num_layers=1, slanted=False)
  vignetted = synthetic.render_sample(0, synthetic.SceneConfig(**base, vignetting=0.2), grey)
  ratio = vignetted["left"].mean((0, 2)) / vignetted["right"].mean((0, 2))
  assert ratio[-1] > 1 > ratio[0]  # the left view brighter towards the right edge, as the Canon's
  assert np.all(np.diff(ratio) >= 0)
  clean = synthetic.render_sample(0, synthetic.SceneConfig(**base), grey)
  noisy = synthetic.render_sample(0, synthetic.SceneConfig(**base, read_noise=0.05), grey)
  residual = noisy["left"] - clean["left"]
  assert 0 < residual.std() < 0.05 and abs(residual.mean()) < 0.01
  gamma = synthetic.render_sample(0, synthetic.SceneConfig(**base, gamma=True), grey)
  np.testing.assert_allclose(gamma["left"], 0.5, atol=1e-4)  # sRGB -> linear -> sRGB round trip


def test_min_contrast_flattens_textures_but_keeps_the_scene():
  base = dict(**SMALL, max_coc=6.0)
  full = synthetic.render_sample(3, synthetic.SceneConfig(**base))
  low = synthetic.render_sample(3, synthetic.SceneConfig(**base, min_contrast=0.2))
  np.testing.assert_array_equal(low["coc"], full["coc"])
  assert low["sharp"].std() < 0.9 * full["sharp"].std()


def test_rejects_bad_configs():
  for bad in (dict(max_coc=30), dict(max_coc=0), dict(num_layers=0), dict(psf="gauss"), dict(read_noise=-1),
              dict(min_contrast=1.5)):
    with pytest.raises(ValueError):
      synthetic.SceneConfig(**bad)


def test_sharp_photo_folder(tmp_path):
  rng = np.random.default_rng(0)
  colour = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
  grey = rng.integers(0, 65536, (70, 90, 1), dtype=np.uint16)
  images.write_png(tmp_path / "a.png", colour)
  images.write_png(tmp_path / "b.png", grey)
  (tmp_path / "notes.txt").write_text("not an image")
  photos = synthetic.load_sharp_images(tmp_path)
  assert [p.shape for p in photos] == [(40, 50, 3), (70, 90, 3)]
  np.testing.assert_allclose(photos[0], colour / 255.0, atol=1e-6)
  sample = synthetic.render_sample(0, synthetic.SceneConfig(**SMALL), sharp_image=photos[0])
  assert sample["left"].shape == (64, 80, 3)  # smaller photos are upscaled to cover the frame
  with pytest.raises(images.ImageError):
    synthetic.load_sharp_images(tmp_path / "missing")


def test_a_512_sample_renders_in_about_a_second():
  # Budget: < 1 s on one core (measured separately with taskset); generous here for shared CI.
  config = synthetic.SceneConfig()
  best = min(_timed(lambda: synthetic.render_sample(seed, config)) for seed in range(3))
  assert best < 2.0


def _timed(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start
