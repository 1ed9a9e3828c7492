"""TFDS builder turning a folder of the user's own DP captures into the DP features.

Layouts: see `MANUAL_DOWNLOAD_INSTRUCTIONS` (and `bambnet_jax.io.images.find_dp_pairs`); the
combined image is the mean of the two views.

    config = tfds_dpd.dp_captures.DpCapturesConfig(name="my_camera", folder="~/captures")
    tfds_dpd.dp_captures.DpCaptures(config=config, data_dir=DATA_DIR).download_and_prepare()
"""

import dataclasses
import pathlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from bambnet_jax.io import images
from tfds_dpd import common


class DpCapturesError(ValueError):
  """The captures folder cannot be turned into a dataset; the message says why."""


@dataclasses.dataclass(eq=False)
class DpCapturesConfig(tfds.core.BuilderConfig):
  """Where the captures are and how to treat them."""
  folder: str | None = None  # None: the manual folder.
  split: str = "train"
  rotate_portrait: bool = False  # off: the DP disparity follows the sensor; only DPDD stores turned scenes
  skip_unpaired: bool = False  # skip views without a partner (with a warning) instead of failing


class DpCaptures(common.DPBuilder):
  """The user's own dual-pixel captures: left / right views, combined image, optional sharp target."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put your dual-pixel captures in the manual folder (or name the folder with
    DpCapturesConfig(folder=...)), either as NAME_L.png / NAME_R.png pairs (optional NAME_S.png sharp
    target) or as one folder per capture holding l.png and r.png (optional sharp.png). 8- and 16-bit
    images are accepted; they are stored as 16-bit.
  """
  BUILDER_CONFIGS = [DpCapturesConfig(name="default", description="Captures from the manual folder.")]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self):
    return self.dataset_info_from_configs(features=common.dp_features())

  def _split_generators(self, dl_manager):
    config = self.builder_config
    folder = pathlib.Path(config.folder).expanduser() if config.folder else dl_manager.manual_dir
    pairs = find_captures(folder, config.skip_unpaired)
    return {config.split: self._generate_examples(pairs)}

  def _generate_examples(self, pairs):
    for pair in pairs:
      yield pair.name, capture_example(pair, self.builder_config.rotate_portrait)


def find_captures(folder, skip_unpaired=False):
  """The DP pairs under `folder`; unpaired views are an error unless `skip_unpaired`."""
  pairs, problems = images.find_dp_pairs(folder)
  if problems:
    listing = "; ".join(f"{path}: {problem}" for path, problem in problems[:10])
    if not skip_unpaired:
      raise DpCapturesError(
          f"{folder}: {len(problems)} unpaired view(s) ({listing}); fix them or set skip_unpaired=True")
    logging.warning("Skipping %d unpaired view(s) under %s: %s", len(problems), folder, listing)
  if not pairs:
    raise DpCapturesError(
        f"{folder}: no DP captures found (expected NAME_L.png / NAME_R.png pairs "
        "or folders holding l.png and r.png)")
  return pairs


def capture_example(pair, rotate_portrait=False):
  """The feature dict of one capture (a `bambnet_jax.io.images.DPPairFiles`)."""
  left, right = images.read_dp_pair(pair.left, pair.right)
  views = {"left": left, "right": right, "sharp": None if pair.sharp is None else images.read_image(pair.sharp)}
  paths = {"left": pair.left, "right": pair.right, "sharp": pair.sharp}
  common.check_same_size(views, paths)
  # The rounded mean of the two half-pixel views.
  total = common.to_uint16_rgb(left).astype(np.uint32) + common.to_uint16_rgb(right).astype(np.uint32)
  views["combined"] = ((total + 1) // 2).astype(np.uint16)
  rotated = False
  for key, pixels in views.items():
    if rotate_portrait and pixels is not None:
      views[key], rotated = common.to_landscape(pixels)
  return common.make_example(pair.name, views, bit_depth=images.bit_depth_of(left), rotated=rotated)
