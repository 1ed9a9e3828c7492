"""TFDS builder for synthetic dual-pixel scenes (`bambnet_jax.data.synthetic`) with their signed COC.

Nothing to download: the DP features plus `coc`, images quantised to 16 bits.

    config = DpSyntheticConfig(name="my_256", num_train=500, seed=1, scene=SceneConfig(height=256, width=256))
    tfds_dpd.dp_synthetic.DpSynthetic(config=config, data_dir=DATA_DIR).download_and_prepare()
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os

import tensorflow_datasets as tfds

from bambnet_jax.data import records
from bambnet_jax.data import synthetic
from bambnet_jax.io import images
from tfds_dpd import common

# A 256x256 scene takes ~0.15 s to render and encode; workers take seconds to start, so small
# splits stay in this process.
MAX_RENDER_WORKERS = 16
SCENES_PER_WORKER = 16


@dataclasses.dataclass(eq=False)
class DpSyntheticConfig(tfds.core.BuilderConfig):
  """Scene counts per split, the master seed and the scene options (size included)."""
  num_train: int = 1000
  num_validation: int = 50
  num_test: int = 50
  seed: int = 0
  scene: synthetic.SceneConfig = dataclasses.field(default_factory=synthetic.SceneConfig)


class DpSynthetic(common.DPBuilder):
  """Synthetic DP scenes: left / right views, combined, sharp, and the signed COC in pixels."""

  BUILDER_CONFIGS = [
      DpSyntheticConfig(name="default", description="1000 / 50 / 50 scenes of 512x512, seed 0."),
      DpSyntheticConfig(name="tiny", num_train=8, num_validation=2, num_test=2,
                        scene=synthetic.SceneConfig(height=64, width=64, max_coc=4.0),
                        description="8 / 2 / 2 scenes of 64x64 for smoke tests."),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self):
    return self.dataset_info_from_configs(features=common.dp_features(with_coc=True))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    config = self.builder_config
    counts = {"train": config.num_train, "validation": config.num_validation, "test": config.num_test}
    return {split: self._generate_examples(split, count) for split, count in counts.items() if count > 0}

  def _generate_examples(self, split, count):
    config = self.builder_config
    jobs = [(f"{split}_{index:06d}", records.scene_seed(config.seed, split, index), config.scene)
            for index in range(count)]
    workers = min(os.cpu_count() or 1, MAX_RENDER_WORKERS, count // SCENES_PER_WORKER)
    if workers < 2:
      yield from map(render_example, jobs)
      return
    # Each scene depends only on its seed: the same records in the same order. Spawned workers:
    # the parent may hold a GPU runtime and threads.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      yield from pool.map(render_example, jobs, chunksize=4)


def render_example(job):
  """(name, seed, scene config) -> (name, example): one scene rendered and PNG-encoded."""
  name, seed, scene = job
  sample = synthetic.render_sample(seed, scene)
  views = {key: images.from_float(sample[key], 16) for key in common.IMAGE_KEYS}
  return name, common.make_example(name, views, bit_depth=16, coc=sample["coc"])
