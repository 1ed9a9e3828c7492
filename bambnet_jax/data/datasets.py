"""The datasets a training run reads, prepared on first use, as batch iterators on the mesh.

`config.data` names TFDS datasets (`dpdd/patches`, `dpdd/full`, `dp_captures`, `dp_synthetic`);
`config.data.synthetic` makes a dp_synthetic config of its own. DPDD is downloaded by hand
(`data.manual_dir`).
"""

import pathlib

import filelock
import tensorflow_datasets as tfds

import tfds_dpd
from bambnet_jax.data import pipeline
from bambnet_jax.data import records
from bambnet_jax.data import synthetic


# SceneConfig's camera-realism fields that config.data.synthetic may set (SPEC section 9).
REALISM_FIELDS = ("psf", "rim_strength", "vignetting", "read_noise", "shot_noise", "gamma", "min_contrast")


def synthetic_builder_config(cfg):
  """A dp_synthetic builder config from `config.data.synthetic` (its name encodes the fields)."""
  realism = {field: cfg[field] for field in REALISM_FIELDS if field in cfg}
  scene = synthetic.SceneConfig(height=cfg.height, width=cfg.width, max_coc=cfg.max_coc, num_layers=cfg.num_layers,
                                **realism)
  name = (f"s{cfg.seed}_n{cfg.num_train}-{cfg.num_validation}-{cfg.num_test}_{cfg.height}x{cfg.width}"
          f"_c{cfg.max_coc:g}_l{cfg.num_layers}")
  # Only fields off their defaults are named: data prepared before they existed keeps its name.
  for field, value in realism.items():
    if value != getattr(synthetic.SceneConfig, field):
      name += f"_{field}-{value if isinstance(value, str) else repr(float(value))}"  # exact: no two settings share data
  return tfds_dpd.dp_synthetic.DpSyntheticConfig(
      name=name, num_train=cfg.num_train, num_validation=cfg.num_validation, num_test=cfg.num_test,
      seed=cfg.seed, scene=scene, description="made from config.data.synthetic")


class DataSources:
  """Training, meta (threshold search) and test batches of one run, placed on `mesh`."""

  def __init__(self, data_config, mesh):
    self.config = data_config
    self.mesh = mesh
    self._builders = {}
    # Kept: a source reads its image sizes once, and the threshold search rereads its meta set.
    self._sources = {}

  def _new_builder(self, dataset):
    if dataset == "dp_synthetic" and self.config.get("synthetic") is not None:
      return tfds_dpd.dp_synthetic.DpSynthetic(config=synthetic_builder_config(self.config.synthetic),
                                               data_dir=self.config.data_dir)
    return tfds.builder(dataset, data_dir=self.config.data_dir)

  def _builder(self, dataset):
    if dataset not in self._builders:
      builder = self._new_builder(dataset)
      if not builder.is_prepared():
        # Every process of a run gets here: one prepares, the others wait and read what it wrote.
        lock = pathlib.Path(f"{builder.data_dir}.prepare.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(lock)):
          builder = self._new_builder(dataset)
          if not builder.is_prepared():
            download_config = tfds.download.DownloadConfig(manual_dir=self.config.manual_dir)
            builder.download_and_prepare(download_config=download_config)
      self._builders[dataset] = builder
    return self._builders[dataset]

  def source(self, dataset, split, keys, max_examples=None):
    """The records of a split with those of `keys` that the dataset has, at most `max_examples`."""
    cache_key = (dataset, split, tuple(keys), max_examples)
    if cache_key not in self._sources:
      builder = self._builder(dataset)
      decoders = {key: tfds.decode.SkipDecoding() for key in records.IMAGE_KEYS}
      examples = builder.as_data_source(split=split, decoders=decoders)
      if max_examples:
        examples = records.Slice(examples, 0, max_examples)
      keys = tuple(k for k in keys if k in builder.info.features.keys())
      self._sources[cache_key] = records.DPSource(examples, keys, name=f"{dataset}/{split}")
    return self._sources[cache_key]

  def train_batches(self, keys, batch_size, seed, crop_size=None):
    """Random crops (and, with `data.flips`, DP-safe flips) of the training split; `crop_size`
    None: the data config's."""
    source = self.source(self.config.train_dataset, self.config.train_split, keys)
    return pipeline.training_batches(source, self.mesh, batch_size=batch_size,
                                     crop_size=crop_size or self.config.crop_size, seed=seed,
                                     horizontal_flip=self.config.flips, vertical_flip=self.config.flips,
                                     worker_count=self.config.worker_count)

  def meta_batches(self, batch_size):
    source = self.source(self.config.meta_dataset, self.config.meta_split, pipeline.DEBLUR_STAGE_KEYS,
                         self.config.meta_max_examples)
    # The smallest multiple of the device count that holds `batch_size` (padded rows are masked).
    batch_size = -(-batch_size // self.mesh.size) * self.mesh.size
    return pipeline.evaluation_batches(source, self.mesh, batch_size=batch_size)

  def test_batches(self, batch_size_per_device):
    # Names, indoor/outdoor labels and rotation come along (kept on the host) for the tables.
    keys = pipeline.EVAL_KEYS + ("coc", "name", "scene_type", "rotated")
    source = self.source(self.config.test_dataset, self.config.test_split, keys, self.config.test_max_examples)
    return pipeline.evaluation_batches(source, self.mesh, batch_size=batch_size_per_device * self.mesh.size)
