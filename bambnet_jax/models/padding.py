"""Reflect-padding to a multiple of 16 and cropping back, so the networks take any image size."""

import jax.numpy as jnp


def padded_size(size, multiple):
  return -(-size // multiple) * multiple


def pad_to_multiple(arrays, multiple):
  """(NHWC `arrays` reflect-padded at the bottom/right, None entries passed; crop back to their size).
  Reflection, not zeros: the channel attention's means and the convs near the edge see image-like content."""
  first = next(a for a in arrays if a is not None)
  height, width = first.shape[1:3]
  pad_h = padded_size(height, multiple) - height
  pad_w = padded_size(width, multiple) - width
  crop = lambda y: y[:, :height, :width]
  if pad_h == 0 and pad_w == 0:
    return tuple(arrays), crop
  widths = ((0, 0), (0, pad_h), (0, pad_w), (0, 0))
  padded = tuple(None if a is None else jnp.pad(a, widths, mode="reflect") for a in arrays)
  return padded, crop
