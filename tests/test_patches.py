"""The paper's patch rule against a plain re-implementation written here (SciPy Sobel, loops)."""

import math

import numpy as np
import pytest
from scipy import ndimage

from bambnet_jax.data import patches

HEIGHT, WIDTH = 1120, 1680


def reference_grid(height, width, size, stride):
  """Walk the image in steps of `stride`; a window running past an edge is pulled back flush."""
  origins = []
  for top in range(0, height, stride):
    for left in range(0, width, stride):
      origin = (min(top, height - size), min(left, width - size))
      if origin not in origins:
        origins.append(origin)
  return origins


def reference_sobel_kernels(size):
  """OpenCV's Sobel of aperture `size`: derivative [-1, 0, 1] * binomial(size - 2), smoothing binomial(size)."""
  binomial = lambda n: np.array([math.comb(n - 1, k) for k in range(n)], np.float64)
  return np.convolve([-1.0, 0.0, 1.0], binomial(size - 2)), binomial(size)


def reference_energy(gray_patch, size):
  derivative, smoothing = reference_sobel_kernels(size)
  # mode="mirror" is OpenCV's default BORDER_REFLECT_101.
  gx = ndimage.correlate1d(ndimage.correlate1d(gray_patch, derivative, axis=1, mode="mirror"),
                           smoothing, axis=0, mode="mirror")
  gy = ndimage.correlate1d(ndimage.correlate1d(gray_patch, derivative, axis=0, mode="mirror"),
                           smoothing, axis=1, mode="mirror")
  return np.hypot(gx, gy).sum()


def reference_scores(target_rgb, origins, size=512):
  gray = target_rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  score = np.ones(len(origins))
  for kernel_size in (3, 7, 11, 15):
    energy = np.array([reference_energy(gray[t:t + size, l:l + size], kernel_size) for t, l in origins])
    score *= (energy - energy.min()) / (energy.max() - energy.min())
  return score


def reference_dropped(scores, fraction=0.3):
  order = sorted(range(len(scores)), key=lambda i: scores[i])
  return sorted(order[:int(fraction * len(scores))])


def textured_target(seed=0):
  """A 1120x1680 target whose detail grows from left to right, with a random mix of scales."""
  rng = np.random.default_rng(seed)
  fine = rng.normal(size=(HEIGHT, WIDTH, 3))
  coarse = ndimage.zoom(rng.normal(size=(HEIGHT // 16, WIDTH // 16, 3)), (16, 16, 1), order=1)
  ramp = np.linspace(0.02, 1.0, WIDTH)[None, :, None]
  return np.clip(0.5 + 0.15 * ramp * (0.6 * fine + coarse), 0, 1).astype(np.float32)


def test_training_grid_for_dpdd_size():
  grid = patches.patch_grid(HEIGHT, WIDTH, 512, 204)
  assert [tuple(o) for o in grid] == reference_grid(HEIGHT, WIDTH, 512, 204)
  assert len(grid) == 28
  assert sorted({int(t) for t in grid[:, 0]}) == [0, 204, 408, 608]
  assert sorted({int(l) for l in grid[:, 1]}) == [0, 204, 408, 612, 816, 1020, 1168]


def test_validation_grid_for_dpdd_size():
  grid = patches.patch_grid(HEIGHT, WIDTH, stride=patches.VALIDATION_STRIDE)
  assert [tuple(o) for o in grid] == reference_grid(HEIGHT, WIDTH, 512, 506)
  assert len(grid) == 12


def test_sharpness_filter_drops_the_reference_patches():
  target = textured_target()
  grid = patches.patch_grid(HEIGHT, WIDTH)
  kept = patches.training_patch_origins(target)
  dropped = [i for i, o in enumerate(grid) if not any((o == kept).all(axis=1))]
  scores = reference_scores(target, [tuple(o) for o in grid])
  np.testing.assert_allclose(patches.sharpness_energy(target, grid), scores, rtol=1e-4, atol=1e-6)
  assert len(kept) == 28 - 8
  assert dropped == reference_dropped(scores)
  # The detail ramp makes the two leftmost columns the most homogeneous.
  assert sorted({int(grid[i][1]) for i in dropped}) == [0, 204]
  # Kept patches stay in grid order.
  assert [tuple(o) for o in kept] == [tuple(o) for i, o in enumerate(grid) if i not in dropped]


def test_filter_is_invariant_to_bit_depth():
  target = textured_target(seed=1)
  as_uint16 = np.rint(target * 65535).astype(np.uint16)
  np.testing.assert_array_equal(patches.training_patch_origins(target),
                                patches.training_patch_origins(as_uint16))


def test_uniform_image_drops_in_grid_order():
  flat = np.full((40, 40, 3), 0.5, np.float32)
  kept = patches.keep_sharpest(flat, patches.patch_grid(40, 40, 16, 12), 16)
  # 9 patches, int(2.7) = 2 dropped: the first two.
  assert [tuple(o) for o in kept] == [tuple(o) for o in patches.patch_grid(40, 40, 16, 12)[2:]]


def test_image_of_exactly_one_patch_and_too_small_image():
  assert patches.patch_grid(512, 512).tolist() == [[0, 0]]
  with pytest.raises(ValueError, match="smaller than the patch size"):
    patches.patch_grid(500, 800)
