"""The paper's training patches: a 512x512 grid with 60% overlap and a sharpness-energy filter.

BaMBNet (section 5, following DPDNet) cuts each DPDD training image into 512x512 patches with
stride 204, plus patches flush with the right and bottom edges, and drops the int(0.3 N) most
homogeneous patches of each image. Validation patches use stride 506 and no filter.
"""

import cv2
import numpy as np

from bambnet_jax.io import images

PATCH_SIZE = 512
TRAIN_STRIDE = 204
VALIDATION_STRIDE = 506
DROP_FRACTION = 0.3
SOBEL_KERNEL_SIZES = (3, 7, 11, 15)


def axis_starts(length, patch_size=PATCH_SIZE, stride=TRAIN_STRIDE):
  """Start offsets along one axis: every `stride` pixels, plus one flush with the far edge."""
  if patch_size <= 0 or stride <= 0:
    raise ValueError(f"patch_size and stride must be positive, got {patch_size} and {stride}")
  if length < patch_size:
    raise ValueError(f"image side {length} is smaller than the patch size {patch_size}")
  starts = list(range(0, length - patch_size + 1, stride))
  if starts[-1] != length - patch_size:
    starts.append(length - patch_size)
  return starts


def patch_grid(height, width, patch_size=PATCH_SIZE, stride=TRAIN_STRIDE):
  """(N, 2) int array of patch origins (top, left), row-major."""
  tops = axis_starts(height, patch_size, stride)
  lefts = axis_starts(width, patch_size, stride)
  return np.array([(top, left) for top in tops for left in lefts], dtype=np.int64).reshape(-1, 2)


def crop(image, origin, patch_size=PATCH_SIZE):
  """The patch_size x patch_size window of `image` whose top-left corner is `origin`."""
  top, left = int(origin[0]), int(origin[1])
  return image[top:top + patch_size, left:left + patch_size]


def sharpness_energy(target, origins, patch_size=PATCH_SIZE, kernel_sizes=SOBEL_KERNEL_SIZES):
  """Sharpness energy of each patch of the RGB `target` (the all-in-focus image): per Sobel kernel size,
  the gradient magnitude summed over the grey patch (OpenCV's reflected border), min-max normalised
  over the image's patches; the sizes' values are multiplied."""
  gray = cv2.cvtColor(images.to_float(np.asarray(target)), cv2.COLOR_RGB2GRAY)
  origins = np.asarray(origins).reshape(-1, 2)
  energy = np.ones(len(origins), np.float64)
  for size in kernel_sizes:
    per_patch = []
    for origin in origins:
      patch = crop(gray, origin, patch_size)
      grad_x = cv2.Sobel(patch, cv2.CV_64F, 1, 0, ksize=size)
      grad_y = cv2.Sobel(patch, cv2.CV_64F, 0, 1, ksize=size)
      per_patch.append(np.sqrt(grad_x * grad_x + grad_y * grad_y).sum())
    per_patch = np.array(per_patch)
    span = per_patch.max() - per_patch.min()
    # Equal energies rank nothing: zeros tie, and `keep_sharpest` breaks ties by grid order.
    energy *= (per_patch - per_patch.min()) / span if span else np.zeros_like(per_patch)
  return energy


def keep_sharpest(target, origins, patch_size=PATCH_SIZE, drop_fraction=DROP_FRACTION):
  """Origins left after dropping the int(drop_fraction * N) lowest-energy patches, in grid order."""
  origins = np.asarray(origins).reshape(-1, 2)
  num_dropped = int(drop_fraction * len(origins))
  if num_dropped == 0:
    return origins
  # A stable sort drops equal energies in grid order: the result is deterministic.
  dropped = np.argsort(sharpness_energy(target, origins, patch_size), kind="stable")[:num_dropped]
  return np.delete(origins, dropped, axis=0)


def training_patch_origins(target, patch_size=PATCH_SIZE, stride=TRAIN_STRIDE, drop_fraction=DROP_FRACTION):
  """The paper's training patches of one image: the stride-204 grid, sharpness-filtered."""
  height, width = np.shape(target)[:2]
  return keep_sharpest(target, patch_grid(height, width, patch_size, stride), patch_size, drop_fraction)
