"""TFDS builder for DPDD (Abuolaim & Brown, ECCV 2020) from a manual download, without TensorFlow.

Configs: `full` (whole images; train / validation / test) and `patches` (the paper's training
patches, SPEC section 5; train / validation; evaluate on `full`'s test split).

    tfds_dpd.dpdd.Dpdd(config="patches", data_dir=DATA_DIR).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="~/dd_dp_dataset_png"))
"""

import dataclasses

from absl import logging
import tensorflow_datasets as tfds

from bambnet_jax.data import patches as patches_lib
from bambnet_jax.io import images
from tfds_dpd import common
from tfds_dpd.dpdd import layout


@dataclasses.dataclass(eq=False)
class DpddConfig(tfds.core.BuilderConfig):
  """`patch_size` None keeps whole images; otherwise train / validation are cut into patches."""
  patch_size: int | None = None
  train_stride: int = patches_lib.TRAIN_STRIDE
  validation_stride: int = patches_lib.VALIDATION_STRIDE
  drop_fraction: float = patches_lib.DROP_FRACTION


class Dpdd(common.DPBuilder):
  """DPDD dual-pixel defocus deblurring data: left / right views, combined image, sharp target."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    DPDD may not be redistributed, so download it yourself:
    1. Get the "Canon DP data" archive (dd_dp_dataset_canon.zip, about 20 GB of 16-bit PNGs) from the
       DPDD page linked by https://github.com/Abdullah-Abuolaim/defocus-deblurring-dual-pixel.
    2. Unzip it into the manual folder (default <data_dir>/downloads/manual/, or DownloadConfig's
       manual_dir, or `tfds build --manual_dir`) so that it holds, directly or in one sub-folder such as
       dd_dp_dataset_png/, {train,val,test}_c/source, _c/target, _l/source and _r/source.
    3. Optional: indoor_labels.npy and outdoor_labels.npy (1-based indices into the sorted test scene
       names) in the manual folder or beside the split folders; without them scene_type is 'unknown'.
  """
  BUILDER_CONFIGS = [
      DpddConfig(name="full",
                 description="Whole 1680x1120 images (portrait scenes turned to landscape)."),
      DpddConfig(name="patches", patch_size=patches_lib.PATCH_SIZE,
                 description="The paper's 512x512 patches: train stride 204 with the 30% "
                             "sharpness-energy filter, validation stride 506 unfiltered."),
  ]
  DEFAULT_CONFIG_NAME = "full"

  def _info(self):
    return self.dataset_info_from_configs(
        features=common.dp_features(), homepage="https://github.com/Abdullah-Abuolaim/defocus-deblurring-dual-pixel")

  def _split_generators(self, dl_manager):
    root = layout.find_root(dl_manager.manual_dir)
    splits = ["train", "validation"] + ([] if self.builder_config.patch_size else ["test"])
    # Pair every split before writing anything so a broken tree fails at once, not after hours.
    scenes = {split: layout.pair_split(root, split) for split in splits}
    scene_types = {}
    if "test" in scenes:
      scene_types = layout.read_test_scene_types([dl_manager.manual_dir, root], len(scenes["test"])) or {}
      if not scene_types:
        logging.info("No indoor/outdoor label files found: test scene_type will be 'unknown'.")
    return {split: self._generate_examples(split, split_scenes, scene_types if split == "test" else {})
            for split, split_scenes in scenes.items()}

  def _generate_examples(self, split, scenes, scene_types):
    config = self.builder_config
    for scene in scenes:
      views, bit_depth, rotated = read_scene(scene)
      kwargs = {"bit_depth": bit_depth, "rotated": rotated, "scene_type": scene_types.get(scene.index, "unknown")}
      if config.patch_size is None:
        yield scene.name, common.make_example(scene.name, views, **kwargs)
        continue
      if split == "train":
        origins = patches_lib.training_patch_origins(
            views["sharp"], config.patch_size, config.train_stride, config.drop_fraction)
      else:  # the paper's validation patches: the stride-506 grid, unfiltered
        origins = patches_lib.patch_grid(*views["sharp"].shape[:2], config.patch_size, config.validation_stride)
      yield from common.patch_examples(scene.name, views, origins, config.patch_size, **kwargs)


def read_scene(scene):
  """(views, bit_depth, rotated) of one DPDD scene: the four images, checked and in landscape."""
  paths = scene.paths()
  views = {key: images.read_image(path) for key, path in paths.items()}
  for key, pixels in views.items():  # image files decode to 8/16-bit, 1 or 3 channels
    if pixels.shape[2] != 3:
      raise images.ImageError(paths[key], f"expected an RGB image, got {pixels.shape[2]} channel(s)")
  depths = {key: images.bit_depth_of(pixels) for key, pixels in views.items()}
  if len(set(depths.values())) != 1:
    raise images.ImageError(paths["sharp"], f"the scene's images differ in bit depth: {depths}")
  common.check_same_size(views, paths)
  rotated = False
  for key in views:
    views[key], rotated = common.to_landscape(views[key])
  return views, depths["left"], rotated
