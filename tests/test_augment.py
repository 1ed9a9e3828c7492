"""DP-correct augmentation: a horizontal flip must swap the views, a vertical one must not."""

import numpy as np
import pytest

from bambnet_jax.data import augment
from bambnet_jax.data import synthetic
from bambnet_jax.losses import reblur

MAX_RADIUS = 8  # enough for the scenes below (|COC| <= 4), and a small FFT


def _example(height=6, width=10):
  rng = np.random.default_rng(0)
  return {key: rng.random((height, width, 3), np.float32) for key in ("left", "right", "combined", "sharp")} | {
      "coc": rng.normal(size=(height, width)).astype(np.float32), "name": "scene"}


def test_horizontal_flip_mirrors_everything_and_swaps_the_views():
  example = _example()
  flipped = augment.flip_horizontal(example)
  np.testing.assert_array_equal(flipped["left"], example["right"][:, ::-1])
  np.testing.assert_array_equal(flipped["right"], example["left"][:, ::-1])
  for key in ("combined", "sharp", "coc"):
    np.testing.assert_array_equal(flipped[key], example[key][:, ::-1])
  assert flipped["name"] == "scene"
  with pytest.raises(ValueError, match="both the left and the right view"):
    augment.flip_horizontal({"left": example["left"]})


def test_vertical_flip_mirrors_everything_without_swap():
  example = _example()
  flipped = augment.flip_vertical(example)
  for key in ("left", "right", "combined", "sharp", "coc"):
    np.testing.assert_array_equal(flipped[key], example[key][::-1])


def test_random_crop_takes_one_window_for_every_array():
  example = _example(20, 30)
  rng = np.random.default_rng(1)
  for _ in range(10):
    cropped = augment.random_crop(example, rng, (8, 12))
    # Locate the window from the left view; every other array must show the same window.
    top, left = next((t, l) for t in range(13) for l in range(19)
                     if np.array_equal(example["left"][t:t + 8, l:l + 12], cropped["left"]))
    for key in ("right", "combined", "sharp", "coc"):
      np.testing.assert_array_equal(cropped[key], example[key][top:top + 8, left:left + 12])
  with pytest.raises(ValueError, match="cannot crop"):
    augment.random_crop(example, rng, 32)


def _loss(sample, coc):
  batch = lambda x: np.asarray(x, np.float32)[None]
  responses = reblur.kernel_responses(batch(sample["left"]), batch(sample["right"]), max_radius=MAX_RADIUS)
  coc = np.broadcast_to(np.asarray(coc, np.float32)[..., None], coc.shape + (3,))
  return float(reblur.reblur_loss_from_responses(responses, batch(coc)))


def _best_constant_coc(sample, candidates):
  shape = sample["left"].shape[:2]
  return candidates[int(np.argmin([_loss(sample, np.full(shape, c)) for c in candidates]))]


def _mirror_without_swap(sample):
  return {key: value[:, ::-1] for key, value in sample.items()}


@pytest.mark.parametrize("seed", [3, 4])
def test_reblur_minimum_stays_at_the_true_coc_after_a_swapped_flip(seed):
  config = synthetic.SceneConfig(height=48, width=48, max_coc=4.0, num_layers=1, slanted=False)
  sample = synthetic.render_sample(seed, config)
  true_coc = float(sample["coc"][0, 0])
  assert abs(true_coc) > 3  # a clearly signed blur (seed 3: -3.31, seed 4: +3.54)
  candidates = np.arange(-6.0, 6.01, 0.25)
  assert _best_constant_coc(sample, candidates) == pytest.approx(true_coc, abs=0.125)
  assert _best_constant_coc(augment.flip_horizontal(sample), candidates) == pytest.approx(true_coc, abs=0.125)
  assert _best_constant_coc(augment.flip_vertical(sample), candidates) == pytest.approx(true_coc, abs=0.125)
  # Mirroring without the swap turns the disparity around: the loss then prefers -COC.
  assert _best_constant_coc(_mirror_without_swap(sample), candidates) == pytest.approx(-true_coc, abs=0.125)


def test_swapped_flip_keeps_the_loss_of_a_layered_scene_at_its_coc_map():
  config = synthetic.SceneConfig(height=48, width=64, max_coc=4.0, num_layers=3)
  sample = synthetic.render_sample(11, config)
  coc = sample["coc"]
  at_truth = _loss(sample, coc)
  assert at_truth < 0.5 * _loss(sample, -coc)  # the map is (close to) the minimiser
  flipped = augment.flip_horizontal(sample)
  # The flip with swap is an exact symmetry of the loss at the mirrored COC map ...
  assert _loss(flipped, flipped["coc"]) == pytest.approx(at_truth, rel=1e-4, abs=1e-6)
  assert _loss(augment.flip_vertical(sample), coc[::-1]) == pytest.approx(at_truth, rel=1e-4, abs=1e-6)
  # ... while without the swap the mirrored views match the negated map instead.
  unswapped = _mirror_without_swap(sample)
  assert _loss(unswapped, -unswapped["coc"]) == pytest.approx(at_truth, rel=1e-4, abs=1e-6)
  assert _loss(unswapped, unswapped["coc"]) > 2 * at_truth
