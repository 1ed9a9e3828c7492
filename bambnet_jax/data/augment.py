"""Augmentation that keeps dual-pixel geometry: random crops and DP-correct flips.

Examples are dicts of NumPy arrays; the spatial ones (images H x W x C and the COC map H x W or
H x W x C) are transformed together, everything else passes through.

The DP disparity is horizontal: in front of the focal plane the right view is shifted left
relative to the left view. Mirroring left-right reverses that shift, so a horizontal flip must
also swap the two views; then the signed COC keeps its sign (only its map is mirrored). A
vertical flip does not touch the disparity. There are no 90-degree rotations: they would turn the
disparity vertical, which no DP sensor produces.
"""

import numpy as np

SPATIAL_KEYS = ("left", "right", "combined", "sharp", "coc")


def _spatial(example):
  return [key for key in SPATIAL_KEYS if key in example]


def flip_horizontal(example):
  """Mirrors every spatial array left-right and swaps the left and right views."""
  flipped = dict(example)
  for key in _spatial(example):
    flipped[key] = example[key][:, ::-1]
  if "left" in example or "right" in example:
    if "left" not in example or "right" not in example:
      raise ValueError("a horizontal DP flip needs both the left and the right view")
    flipped["left"], flipped["right"] = flipped["right"], flipped["left"]
  return flipped


def flip_vertical(example):
  """Mirrors every spatial array top-bottom (no view swap: the disparity is horizontal)."""
  flipped = dict(example)
  for key in _spatial(example):
    flipped[key] = example[key][::-1]
  return flipped


def crop(example, top, left, height, width):
  """The same window of every spatial array."""
  cropped = dict(example)
  for key in _spatial(example):
    cropped[key] = example[key][top:top + height, left:left + width]
  return cropped


def spatial_shape(example):
  """(height, width) shared by the spatial arrays; raises if they disagree."""
  shapes = {key: example[key].shape[:2] for key in _spatial(example)}
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
