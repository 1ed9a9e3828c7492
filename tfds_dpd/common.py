"""Features and example building shared by the DP dataset builders (dpdd, dp_captures, dp_synthetic).

Every builder writes the features of `dp_features`, views as 16-bit RGB PNG (8-bit sources x257,
exactly v/255 -> v*257/65535). Nothing imports TensorFlow: images reach `tfds.features.Image` as
PNG bytes (arrays would go through TensorFlow's encoder), records are array_record, and splits past
TFDS's in-memory shuffle buffer spill through `shuffle_buckets`.
"""

import inspect
import logging

import cv2
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from bambnet_jax.data import patches as patches_lib
from bambnet_jax.io import images
from tfds_dpd import shuffle_buckets

IMAGE_KEYS = ("left", "right", "combined", "sharp")
SCENE_TYPES = ("unknown", "indoor", "outdoor")
# Stored PNG: array_record already compresses (zstd), noisy 16-bit photos barely deflate, and
# inflating took ~3x the decode time (12 ms vs 3.5 ms for a 512x512x3 patch).
PNG_COMPRESSION = 0
# np.rot90(k=1) turns counter-clockwise, as the released code's TF.rotate(img, 90) does.
PORTRAIT_ROTATION_K = 1


class DPBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the DP builders: array_record by default (TFRecord would need TensorFlow)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  # TFDS 4.9 finds a builder's folder through the undeclared `importlib_resources` backport; a
  # plain file lookup gives the same answer for packages on disk.
  code_path = tfds.core.utils.classproperty(classmethod(lambda cls: epath.Path(inspect.getfile(cls))))

  def __init__(self, *, file_format="array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _download_and_prepare(self, dl_manager, download_config):
    with shuffle_buckets.without_tensorflow():
      super()._download_and_prepare(dl_manager, download_config)


class _QuietOwnDatasets(logging.Filter):
  """Drops two TFDS warnings about our datasets that nobody can act on: "Using custom data
  configuration" (every run's `config.data.synthetic`) and "Variant folder ... has no
  dataset_info.json" (`is_prepared()` of a dataset a run is about to prepare)."""

  def filter(self, record):
    if record.msg == "Using custom data configuration: %s" and record.args:
      return not type(record.args[0]).__module__.startswith(f"{__package__}.")
    if record.msg == "Variant folder %s has no %s" and record.args:
      ours = {builder.name for builder in DPBuilder.__subclasses__()}
      return not ours.intersection(epath.Path(record.args[0]).parts)
    return True


if not any(isinstance(f, _QuietOwnDatasets) for f in logging.getLogger("absl").filters):
  logging.getLogger("absl").addFilter(_QuietOwnDatasets())  # TFDS logs through absl.logging


def dp_features(with_coc=False):
  """The FeaturesDict every DP builder writes (plus `coc`, the signed COC in px, for synthetic data).
  `sharp` is a 1x1 black placeholder where `has_sharp` is False, so code ignoring the flag fails on
  the shape instead of training on garbage."""
  image = lambda doc: tfds.features.Image(shape=(None, None, 3), dtype=np.uint16, encoding_format="png", doc=doc)
  features = {
      "name": tfds.features.Text(doc="scene (or scene/patch) name"),
      "left": image("left DP view"),
      "right": image("right DP view"),
      "combined": image("combined (blurred) image"),
      "sharp": image("all-in-focus target; 1x1 black when has_sharp is False"),
      "has_sharp": tfds.features.Scalar(dtype=np.bool_),
      "bit_depth": tfds.features.Scalar(dtype=np.int32, doc="bit depth of the source files"),
      "rotated": tfds.features.Scalar(dtype=np.bool_, doc="portrait source turned to landscape"),
      "scene_type": tfds.features.ClassLabel(names=SCENE_TYPES),
      "origin": tfds.features.Tensor(shape=(2,), dtype=np.int32, doc="patch (top, left)"),
  }
  if with_coc:
    features["coc"] = tfds.features.Tensor(
        shape=(None, None), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB,
        doc="signed COC radius in pixels (> 0: in front of the focal plane)")
  return tfds.features.FeaturesDict(features)


def to_uint16_rgb(pixels):
  """Integer pixels (8/16-bit, H x W x 1 or 3) as 16-bit RGB."""
  pixels = np.asarray(pixels)
  if pixels.dtype == np.uint8:
    pixels = pixels.astype(np.uint16) * np.uint16(257)
  elif pixels.dtype != np.uint16:
    raise ValueError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
  return images.to_rgb(pixels)


def encode_png16(pixels):
  """16-bit RGB PNG bytes (stored, not deflated: see PNG_COMPRESSION) of integer pixels."""
  pixels = to_uint16_rgb(pixels)
  ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels[:, :, ::-1]),
                             [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
  if not ok:
    raise ValueError("PNG encoding failed")
  return encoded.tobytes()


def to_landscape(image):
  """(image, rotated): portrait images turned to landscape (see PORTRAIT_ROTATION_K)."""
  if image.shape[0] > image.shape[1]:
    return np.ascontiguousarray(np.rot90(image, PORTRAIT_ROTATION_K)), True
  return image, False


def check_same_size(views, paths):
  """Raises ImageError naming the file whose size differs from the first view's."""
  first = next(iter(views))
  for key, pixels in views.items():
    if pixels is not None and pixels.shape[:2] != views[first].shape[:2]:
      raise images.ImageError(
          paths[key], f"size {pixels.shape[:2]} differs from the {first} view {paths[first]} "
          f"{views[first].shape[:2]}")


def make_example(name, views, *, bit_depth, rotated=False, scene_type="unknown", origin=(0, 0), coc=None):
  """A feature dict from integer views {left, right, combined, sharp (or None)}."""
  has_sharp = views.get("sharp") is not None
  example = {
      "name": name, "has_sharp": has_sharp, "bit_depth": int(bit_depth), "rotated": bool(rotated),
      "scene_type": scene_type, "origin": np.asarray(origin, np.int32),
      "sharp": encode_png16(views["sharp"] if has_sharp else np.zeros((1, 1, 3), np.uint16)),
  }
  for key in ("left", "right", "combined"):
    example[key] = encode_png16(views[key])
  if coc is not None:
    example["coc"] = np.asarray(coc, np.float32)
  return example


def patch_examples(name, views, origins, patch_size, **example_kwargs):
  """(key, example) for each patch origin of one scene; keys are `name/top_left`."""
  for top, left in np.asarray(origins).reshape(-1, 2):
    patch_name = f"{name}/{int(top):04d}_{int(left):04d}"
    patch_views = {key: patches_lib.crop(image, (top, left), patch_size) for key, image in views.items()}
    yield patch_name, make_example(patch_name, patch_views, origin=(top, left), **example_kwargs)
