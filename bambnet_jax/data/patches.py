"""The paper's training patches: a 512x512 grid with 60% overlap and a sharpness-energy filter.

BaMBNet (section 5, following DPDNet) cuts each DPDD training image into 512x512 patches with
stride 204 (60% overlap), adds patches aligned to the right and bottom edges so the whole image
is covered, and drops the int(0.3 N) most homogeneous patches of each image. Validation patches
use stride 506 (1% overlap) and no filter. Pure NumPy/OpenCV so dataset builders can use it.
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
  # The regular grid stops short of the far edge unless the length fits exactly; the extra
  # patch keeps the right / bottom border in the training set.
  if starts[-1] != length - patch_size:
    starts.append(length - patch_size)
  return starts


def patch_grid(height, width, patch_size=PATCH_SIZE, stride=TRAIN_STRIDE):
  """(N, 2) int array of patch origins (top, left), row-major (top to bottom, then left to right)."""
  tops = axis_starts(height, patch_size, stride)
  lefts = axis_starts(width, patch_size, stride)
  return np.array([(top, left) for top in tops for left in lefts], dtype=np.int64).reshape(-1, 2)


def crop(image, origin, patch_size=PATCH_SIZE):
  """The patch_size x patch_size window of `image` whose top-left corner is `origin`."""
  top, left = int(origin[0]), int(origin[1])
  return image[top:top + patch_size, left:left + patch_size]


def grayscale(image):
  """RGB (or single-channel) image, 8/16-bit or float, to float32 grayscale."""
  image = images.to_float(np.asarray(image))
  if image.ndim == 3 and image.shape[2] == 3:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  if image.ndim == 3 and image.shape[2] == 1:
    return image[:, :, 0]
  if image.ndim == 2:
    return image
  raise ValueError(f"expected an H x W x 3, H x W x 1 or H x W image, got shape {image.shape}")


def _sobel_magnitude_sum(gray_patch, kernel_size):
  grad_x = cv2.Sobel(gray_patch, cv2.CV_64F, 1, 0, ksize=kernel_size)
  grad_y = cv2.Sobel(gray_patch, cv2.CV_64F, 0, 1, ksize=kernel_size)
  return float(np.sqrt(grad_x * grad_x + grad_y * grad_y).sum())


def _min_max_normalise(values):
  span = values.max() - values.min()
  # Equal energies carry no ranking information; zeros make the product tie, and ties are
  # broken by grid order in `keep_sharpest`.
  if span == 0:
    return np.zeros_like(values)
  return (values - values.min()) / span


def sharpness_energy(target, origins, patch_size=PATCH_SIZE, kernel_sizes=SOBEL_KERNEL_SIZES):
  """Sharpness energy of each patch of `target` (the all-in-focus image).

  For each Sobel kernel size, the sum over the patch of the gradient magnitude, computed on the
  grayscale patch itself (OpenCV's default reflected border); each size's energies are min-max
  normalised over this image's patches and the normalised values multiplied.
  """
  gray = grayscale(target)
  origins = np.asarray(origins).reshape(-1, 2)
  energy = np.ones(len(origins), np.float64)
  for kernel_size in kernel_sizes:
    per_patch = np.array([_sobel_magnitude_sum(crop(gray, o, patch_size), kernel_size) for o in origins])
    energy *= _min_max_normalise(per_patch)
  return energy


def keep_sharpest(target, origins, patch_size=PATCH_SIZE, drop_fraction=DROP_FRACTION):
  """Origins left after dropping the int(drop_fraction * N) lowest-energy patches, in grid order."""
  origins = np.asarray(origins).reshape(-1, 2)
  num_dropped = int(drop_fraction * len(origins))
  if num_dropped == 0:
    return origins
  energy = sharpness_energy(target, origins, patch_size)
  # A stable sort makes equal energies drop in grid order, so the result is deterministic.
  dropped = np.argsort(energy, kind="stable")[:num_dropped]
  keep = np.ones(len(origins), bool)
  keep[dropped] = False
  return origins[keep]


def training_patch_origins(target, patch_size=PATCH_SIZE, stride=TRAIN_STRIDE,
                           drop_fraction=DROP_FRACTION):
  """The paper's training patches of one image: the stride-204 grid, sharpness-filtered."""
  height, width = np.shape(target)[:2]
  return keep_sharpest(target, patch_grid(height, width, patch_size, stride), patch_size, drop_fraction)


def validation_patch_origins(height, width, patch_size=PATCH_SIZE, stride=VALIDATION_STRIDE):
  """The paper's validation patches of one image: the stride-506 grid, unfiltered."""
  return patch_grid(height, width, patch_size, stride)
