"""Where DP records come from: prepared TFDS datasets, synthetic scenes rendered on the fly, lists.

Every source is a random-access sequence of example dicts (what Grain needs) holding only the
keys a stage reads, with images as integer (8/16-bit) or float arrays.
"""

import numpy as np
import tensorflow_datasets as tfds

from bambnet_jax.data import synthetic
from bambnet_jax.io import images

IMAGE_KEYS = ("left", "right", "combined", "sharp")


class DPSource:
  """Random access to DP records, keeping (and decoding) only `keys`.

  `records` is any sequence of dicts (a TFDS data source, a list): images may be encoded bytes
  (decoded here, in the loader's worker processes), integer or float arrays.
  """

  def __init__(self, records, keys, name="records"):
    self._records = records
    self._keys = tuple(keys)
    self._name = name

  @classmethod
  def from_tfds(cls, dataset, split, keys=IMAGE_KEYS, data_dir=None):
    """A prepared TFDS dataset (e.g. "dpdd/patches"); import `tfds_dpd` first to register it."""
    records = tfds.data_source(
        dataset, split=split, data_dir=data_dir, download=False,
        # Skip TFDS's image decoding: only the requested views are decoded, in `__getitem__`.
        decoders={key: tfds.decode.SkipDecoding() for key in IMAGE_KEYS})
    missing = set(keys) - set(records.dataset_info.features.keys())
    if missing:
      raise ValueError(f"{dataset}: has no feature(s) {sorted(missing)}; "
                       f"it has {sorted(records.dataset_info.features.keys())}")
    return cls(records, keys, name=f"{dataset}/{split}")

  @property
  def keys(self):
    return self._keys

  def __len__(self):
    return len(self._records)

  def __getitem__(self, index):
    record = self._records[index]
    where = f"{self._name}[{index}]"
    example = {}
    for key in self._keys:
      if key not in record:
        raise KeyError(f"{where}: record has no {key!r} (it has {sorted(record)})")
      if key == "sharp" and not record.get("has_sharp", True):
        raise ValueError(f"{where}: has no sharp target (has_sharp is False); "
                         "read it with pipeline.COC_STAGE_KEYS or give the capture a sharp image")
      value = record[key]
      if isinstance(value, (bytes, np.bytes_)) and key in IMAGE_KEYS:
        value = images.decode_image(bytes(value), f"{where}.{key}")
      example[key] = value
    return example

  def __repr__(self):
    return f"DPSource({self._name}, {len(self)} records, keys={self._keys})"


def scene_seed(seed, split, index):
  """The render seed of synthetic scene `index` of `split`: independent streams per split."""
  split_number = {"train": 0, "validation": 1, "test": 2}.get(split)
  if split_number is None:
    raise ValueError(f"unknown split {split!r} (train, validation or test)")
  return int(np.random.SeedSequence([seed, split_number, index]).generate_state(1)[0])


class SyntheticScenes:
  """`num_scenes` synthetic DP scenes rendered on access (float32 views and the COC map).

  Scene i of a split is the one `tfds_dpd`'s dp_synthetic stores for the same seed and config,
  before its 16-bit quantisation. Rendering a 512x512 scene takes ~0.3 s of CPU, so use worker
  processes, or prepare dp_synthetic once for long trainings.
  """

  def __init__(self, num_scenes, config, seed=0, split="train",
               keys=("left", "right", "combined", "sharp", "coc")):
    self._num_scenes = num_scenes
    self._config = config
    self._seed = seed
    self._split = split
    self._keys = tuple(keys)

  def __len__(self):
    return self._num_scenes

  def __getitem__(self, index):
    if not 0 <= index < self._num_scenes:
      raise IndexError(f"scene {index} out of range (0..{self._num_scenes - 1})")
    sample = synthetic.render_sample(scene_seed(self._seed, self._split, index), self._config)
    return {key: sample[key] for key in self._keys}

  def __repr__(self):
    return f"SyntheticScenes({self._num_scenes} {self._split} scenes, seed={self._seed}, {self._config})"
