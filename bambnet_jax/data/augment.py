"""Augmentation that keeps dual-pixel geometry: random crops and DP-correct flips.

The spatial arrays of an example dict (images H x W x C, the COC map) are transformed together.
The DP disparity is horizontal, so a left-right mirror reverses it: a horizontal flip also swaps
the two views (the signed COC keeps its sign). No 90-degree rotations: no DP sensor has a
vertical disparity.
"""

import numpy as np

SPATIAL_KEYS = ("left", "right", "combined", "sharp", "coc")


def _map_spatial(example, fn):
  return {key: fn(value) if key in SPATIAL_KEYS else value for key, value in example.items()}


def flip_horizontal(example):
  """Mirrors every spatial array left-right and swaps the left and right views."""
  if ("left" in example) != ("right" in example):
    raise ValueError("a horizontal DP flip needs both the left and the right view")
  flipped = _map_spatial(example, lambda x: x[:, ::-1])
  if "left" in example:
    flipped["left"], flipped["right"] = flipped["right"], flipped["left"]
  return flipped


def flip_vertical(example):
  """Mirrors every spatial array top-bottom (no view swap: the disparity is horizontal)."""
  return _map_spatial(example, lambda x: x[::-1])


def crop(example, top, left, height, width):
  """The same window of every spatial array."""
  return _map_spatial(example, lambda x: x[top:top + height, left:left + width])


def spatial_shape(example):
  """(height, width) shared by the spatial arrays; raises if they disagree."""
  shapes = {key: example[key].shape[:2] for key in SPATIAL_KEYS if key in example}
  if not shapes:
    raise ValueError(f"example has none of the spatial keys {SPATIAL_KEYS}: {sorted(example)}")
  if len(set(shapes.values())) != 1:
    raise ValueError(f"spatial arrays differ in size: {shapes}")
  return next(iter(shapes.values()))


def random_crop(example, rng, size):
  """A uniformly placed size x size (or (height, width)) window, the same for every array."""
  height, width = (size, size) if np.isscalar(size) else size
  image_height, image_width = spatial_shape(example)
  if image_height < height or image_width < width:
    raise ValueError(f"cannot crop {height}x{width} from an image of {image_height}x{image_width}")
  top = int(rng.integers(0, image_height - height + 1))
  left = int(rng.integers(0, image_width - width + 1))
  return crop(example, top, left, height, width)


def random_flips(example, rng, horizontal=True, vertical=True):
  """Each enabled flip with probability 1/2 (both random draws are made either way)."""
  do_horizontal, do_vertical = rng.random(2) < 0.5
  if horizontal and do_horizontal:
    example = flip_horizontal(example)
  if vertical and do_vertical:
    example = flip_vertical(example)
  return example
