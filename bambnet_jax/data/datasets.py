"""The datasets a training run reads, prepared on first use, as batch iterators on the mesh.

`config.data` names TFDS datasets (`dpdd/patches`, `dpdd/full`, `dp_captures`, `dp_synthetic`).
`dp_synthetic` needs no download: when `config.data.synthetic` is set, a builder config with
those counts, size and seed is made and prepared in the data dir on first use. DPDD must be
downloaded by hand (`data.manual_dir`); it is prepared on first use too.
"""

import pathlib

import filelock
import tensorflow_datasets as tfds

import tfds_dpd
from bambnet_jax.data import pipeline
from bambnet_jax.data import records
from bambnet_jax.data import synthetic


class _Head:
  """The first `count` records of a sequence (the meta set is a small validation subset)."""

  def __init__(self, records, count):
    self._records, self._count = records, min(count, len(records))

  def __len__(self):
    return self._count

  def __getitem__(self, index):
    if not 0 <= index < self._count:
      raise IndexError(index)
    return self._records[index]


def synthetic_builder_config(cfg):
  """A dp_synthetic builder config from `config.data.synthetic` (its name encodes the fields)."""
  scene = synthetic.SceneConfig(height=cfg.height, width=cfg.width, max_coc=cfg.max_coc,
                                num_layers=cfg.num_layers)
  name = (f"s{cfg.seed}_n{cfg.num_train}-{cfg.num_validation}-{cfg.num_test}_{cfg.height}x{cfg.width}"
          f"_c{cfg.max_coc:g}_l{cfg.num_layers}")
  return tfds_dpd.dp_synthetic.DpSyntheticConfig(
      name=name, num_train=cfg.num_train, num_validation=cfg.num_validation, num_test=cfg.num_test,
      seed=cfg.seed, scene=scene, description="made from config.data.synthetic")


class DataSources:
  """Training, meta (threshold search) and test batches of one run, placed on `mesh`."""

  def __init__(self, data_config, mesh):
    self.config = data_config
    self.mesh = mesh
    self._builders = {}
    # Sources are kept: evaluation batches read a split's image sizes once per source, and the
    # threshold search passes over its meta set every round.
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
        # The processes of a run (one per GPU, or hosts sharing a disk) all get here: one prepares,
        # the others wait on the lock and then read what it wrote.
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
    cache_key = (dataset, split, tuple(keys), max_examples)
    if cache_key not in self._sources:
      self._sources[cache_key] = self._new_source(dataset, split, keys, max_examples)
    return self._sources[cache_key]

  def _new_source(self, dataset, split, keys, max_examples):
    builder = self._builder(dataset)
    examples = builder.as_data_source(split=split, decoders={k: tfds.decode.SkipDecoding()
                                                             for k in records.IMAGE_KEYS})
    if max_examples:
      examples = _Head(examples, max_examples)
    features = set(builder.info.features.keys())
    keys = tuple(k for k in keys if k in features)
    return records.DPSource(examples, keys, name=f"{dataset}/{split}")

  def train_batches(self, keys, batch_size, seed, crop_size=None):
    """Random crops of the training split; `crop_size` None: the data config's."""
    source = self.source(self.config.train_dataset, self.config.train_split, keys)
    return pipeline.training_batches(source, self.mesh, batch_size=batch_size,
                                     crop_size=crop_size or self.config.crop_size, seed=seed,
                                     worker_count=self.config.worker_count)

  def _per_device(self, batch_size):
    """The smallest multiple of the device count that holds `batch_size` (padded rows are masked)."""
    return -(-batch_size // self.mesh.size) * self.mesh.size

  def meta_batches(self, batch_size):
    source = self.source(self.config.meta_dataset, self.config.meta_split, pipeline.DEBLUR_STAGE_KEYS,
                         self.config.meta_max_examples)
    return pipeline.evaluation_batches(source, self.mesh, batch_size=self._per_device(batch_size))

  def test_batches(self, batch_size_per_device):
    # Names, indoor/outdoor labels and rotation come along (kept on the host) for the tables.
    keys = pipeline.EVAL_KEYS + ("coc", "name", "scene_type", "rotated")
    source = self.source(self.config.test_dataset, self.config.test_split, keys, self.config.test_max_examples)
    return pipeline.evaluation_batches(source, self.mesh, batch_size=batch_size_per_device * self.mesh.size)

