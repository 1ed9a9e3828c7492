"""The input pipeline: DP records -> shuffled, augmented, float batches on the device mesh.

    import tfds_dpd  # registers the datasets
    source = records.DPSource.from_tfds("dpdd/patches", "train", keys=pipeline.DEBLUR_STAGE_KEYS)
    batches = pipeline.training_batches(source, sharding.make_mesh(), batch_size=2, seed=0,
                                        worker_count=12)
    batch = next(batches)            # {"left": jax.Array (2, 512, 512, 3) float32, ...}
    checkpoint["data"] = batches.get_state()    # ... on resume: batches.set_state(saved)

Records come from `sources`: a prepared TFDS dataset (`tfds_dpd`: dpdd, dp_captures,
dp_synthetic, read through `tfds.data_source` without TensorFlow), synthetic scenes rendered on
the fly, or any in-memory sequence of dicts. Grain does the shuffling (a fresh permutation each
epoch), the per-process sharding (each host reads its own part of every epoch), the random crops
and DP-correct flips (`augment`) and the batching, in `worker_count` processes. Batches have a
fixed shape: training drops the last partial batch and crops records of any size to one size;
evaluation pads the last batch (`mask` marks the real rows) and every image to the largest size
of the split (`pixel_mask` marks the real pixels). Each batch is placed on the mesh sharded over
its 'data' axis, a few batches ahead of the training step, and its images converted there to
float32 in [0, 1] (on the host when there is no mesh).
"""

import collections
import functools
import math

from absl import flags
import grain
import jax
import numpy as np

from bambnet_jax.data import augment
from bambnet_jax.data import records
from bambnet_jax.io import images
from bambnet_jax.parallel import sharding

DATA_AXIS = sharding.DATA_AXIS
# What each stage reads (decoding one 512x512 16-bit view costs ~4-6 ms: read only what is used).
COC_STAGE_KEYS = ("left", "right")
DEBLUR_STAGE_KEYS = ("left", "right", "sharp")
EVAL_KEYS = ("left", "right", "combined", "sharp")


class Augment(grain.transforms.RandomMap):
  """Random crop then DP-correct random flips (see `augment`); the rng is Grain's, per record."""

  def __init__(self, crop_size=None, horizontal_flip=True, vertical_flip=True):
    self.crop_size = crop_size
    self.horizontal_flip = horizontal_flip
    self.vertical_flip = vertical_flip

  def random_map(self, element, rng):
    if self.crop_size is not None:
      element = augment.random_crop(element, rng, self.crop_size)
    return augment.random_flips(element, rng, self.horizontal_flip, self.vertical_flip)


def batch_to_float(batch):
  """Host batch with images as float32 in [0, 1] (integer / (2**bits - 1)) and COC as N x H x W x 1."""
  converted = dict(batch)
  for key, value in batch.items():
    if key in records.IMAGE_KEYS:
      converted[key] = images.to_float(np.asarray(value))
    elif key == "coc":
      converted[key] = _coc_with_channel_axis(value)
  return converted


def _coc_with_channel_axis(coc):
  coc = np.asarray(coc, np.float32)
  return coc[..., None] if coc.ndim == 3 else coc


@jax.jit
def _look_up(pixels, table):
  return table[pixels]


@functools.lru_cache(maxsize=None)
def _unit_float_table(dtype, mesh):
  """images.to_float of every integer value, replicated on the mesh.

  A table look-up instead of the division: XLA turns x / 65535 into x * (1 / 65535), which is
  1 ulp off for some values, and device batches should equal host batches exactly.
  """
  table = images.to_float(np.arange(np.iinfo(dtype).max + 1, dtype=dtype))
  return jax.device_put(table, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def process_shard_options(drop_remainder):
  """This process's share of the records (one shard per JAX process)."""
  return grain.sharding.ShardOptions(jax.process_index(), jax.process_count(), drop_remainder)


def _per_process_batch(batch_size, shard_count):
  if batch_size % shard_count:
    raise ValueError(f"global batch size {batch_size} is not divisible by the {shard_count} processes")
  return batch_size // shard_count


class _SizeChecked:
  """`source` with each record's size checked against the training crop, naming a record that fails.

  Without a crop every record must have the size of the first, since they are batched as they are.
  """

  def __init__(self, source, crop_size):
    self._source = source
    if crop_size is None:
      self._exact, self._least = records.spatial_size(source[0]) if len(source) else None, None
    else:
      self._exact, self._least = None, (crop_size, crop_size) if np.isscalar(crop_size) else tuple(crop_size)

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    example = self._source[index]
    height, width = records.spatial_size(example)
    if self._least is not None and (height < self._least[0] or width < self._least[1]):
      raise ValueError(f"{_record_name(self._source, index)} is {height}x{width}, smaller than the "
                       f"{self._least[0]}x{self._least[1]} training crop")
    if self._exact is not None and (height, width) != self._exact:
      raise ValueError(f"{_record_name(self._source, index)} is {height}x{width}, the first record "
                       f"{self._exact[0]}x{self._exact[1]}: give training a crop size to batch "
                       "images of different sizes")
    return example

  def __repr__(self):
    # Grain stores repr(data source) in the data position and checks it on resume; the check
    # changes no record, so positions saved by runs without it stay valid.
    return repr(self._source)


def _record_name(source, index):
  return source.record_name(index) if hasattr(source, "record_name") else f"record {index}"


def make_loader(source, *, batch_size, shard_options, crop_size=None, horizontal_flip=False,
                vertical_flip=False, shuffle=False, seed=0, num_epochs=None, drop_remainder=True,
                worker_count=0, worker_buffer_size=4, read_threads=2, read_buffer=16):
  """A Grain DataLoader yielding this process's host batches (dicts of NumPy arrays).

  `batch_size` is this process's share of the global batch.
  """
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=shard_options, shuffle=shuffle,
      num_epochs=num_epochs, seed=seed)
  operations = []
  if crop_size is not None or horizontal_flip or vertical_flip:
    operations.append(Augment(crop_size, horizontal_flip, vertical_flip))
  # Images stay integer until the batch reaches the device: half the bytes to copy out of the
  # worker processes and onto the device, and no per-pixel float work on the host.
  operations.append(grain.transforms.Batch(batch_size, drop_remainder=drop_remainder))
  if worker_count and not flags.FLAGS.is_parsed():
    # Grain's worker processes read absl flags; a program that parses none itself (argparse
    # command, notebook, test) would otherwise fail at the first batch.
    flags.FLAGS.mark_as_parsed()
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                          worker_count=worker_count, worker_buffer_size=worker_buffer_size,
                          # Grain's default (16 threads, 500 records read ahead per process) holds
                          # gigabytes of decoded 16-bit patches per worker.
                          read_options=grain.ReadOptions(num_threads=read_threads,
                                                         prefetch_buffer_size=read_buffer))


def put_on_mesh(batch, mesh, axis=DATA_AXIS):
  """This process's host batch as global arrays sharded over `axis`, images as float in [0, 1].

  Process p's rows become rows [p * n, (p + 1) * n) of the global batch, so each device holds a
  contiguous slice of the batch axis. Integer images are converted on the device; text (names)
  stays on the host.
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
  placed = {}
  for key, value in batch.items():
    value = _coc_with_channel_axis(value) if key == "coc" else np.asarray(value)
    if value.dtype.kind not in "biuf":
      placed[key] = value
      continue
    global_rows = value.shape[0] * jax.process_count()
    if global_rows % mesh.shape[axis]:
      raise ValueError(f"global batch of {global_rows} rows cannot be split over the "
                       f"{mesh.shape[axis]} devices of mesh axis {axis!r}")
    array = jax.make_array_from_process_local_data(sharding, value, (global_rows,) + value.shape[1:])
    if key in records.IMAGE_KEYS and images.bit_depth_of(value) is not None:
      array = _look_up(array, _unit_float_table(value.dtype.type, mesh))
    placed[key] = array
  return placed


class BatchIterator:
  """Batches placed on the mesh `prefetch` steps ahead, with a resumable data position.

  `get_state()` is the position after the last batch handed out (not after the prefetched ones),
  so a run restored with `set_state()` continues with exactly the next batch. The state is
  per process (bytes); save one per host.
  """

  def __init__(self, host_iterator, mesh=None, prefetch=2):
    self._host_iterator = host_iterator
    self._mesh = mesh
    self._prefetch = max(1, prefetch)
    self._queue = collections.deque()
    self._state = host_iterator.get_state()

  def __iter__(self):
    return self

  def _fetch(self):
    batch = next(self._host_iterator)
    state = self._host_iterator.get_state()
    batch = put_on_mesh(batch, self._mesh) if self._mesh is not None else batch_to_float(batch)
    self._queue.append((batch, state))

  def __next__(self):
    try:
      while len(self._queue) < self._prefetch:
        self._fetch()
    except StopIteration:
      if not self._queue:
        raise
    batch, self._state = self._queue.popleft()
    return batch

  def get_state(self):
    return self._state

  def set_state(self, state):
    self._queue.clear()
    self._host_iterator.set_state(state)
    self._state = state


def training_batches(source, mesh=None, *, batch_size, crop_size=None, horizontal_flip=True,
                     vertical_flip=True, seed=0, num_epochs=None, worker_count=0,
                     worker_buffer_size=4, read_threads=2, read_buffer=16, prefetch=2,
                     shard_options=None):
  """Endless (or `num_epochs`) shuffled, augmented training batches of global size `batch_size`.

  Each process reads its own shard and contributes batch_size / process_count rows. With `mesh`
  the batches are jax.Arrays sharded over its 'data' axis; without, NumPy host batches.
  Throughput comes from `worker_count` processes (about the number of free cores; each runs
  `read_threads` reader threads): one 512x512 16-bit DPDD patch costs ~30 ms of CPU to read and
  decode three views (see experiments/bench_input_pipeline.py).
  """
  shard_options = shard_options or process_shard_options(drop_remainder=True)
  loader = make_loader(
      _SizeChecked(source, crop_size),
      batch_size=_per_process_batch(batch_size, shard_options.shard_count),
      shard_options=shard_options, crop_size=crop_size, horizontal_flip=horizontal_flip,
      vertical_flip=vertical_flip, shuffle=True, seed=seed, num_epochs=num_epochs,
      drop_remainder=True, worker_count=worker_count, worker_buffer_size=worker_buffer_size,
      read_threads=read_threads, read_buffer=read_buffer)
  return BatchIterator(iter(loader), mesh, prefetch)


def evaluation_batches(source, mesh=None, *, batch_size, worker_count=0, prefetch=2,
                       shard_options=None):
  """One pass over `source` in order, in batches of one shape, whatever the images' sizes.

  Every image is padded with zeros at the bottom and right to the largest height and the largest
  width of the split (found once through `records.image_sizes`), and each batch carries
  `pixel_mask`, bool (N, H, W), True on the real pixels, whether or not the sizes differ. The
  last batches are padded with zero rows: `mask`, bool (N,), is False for them, and so is their
  whole `pixel_mask`. Every process yields the same number of batches, as collective
  computations on several hosts need.
  """
  shard_options = shard_options or process_shard_options(drop_remainder=False)
  per_process = _per_process_batch(batch_size, shard_options.shard_count)
  if len(source):
    source = _PaddedImages(source, *np.max(records.image_sizes(source), axis=0))
  # Each process takes a contiguous block of records itself: Grain 0.2's IndexSampler drops
  # records of the larger shards when the count does not divide evenly.
  shard = _ContiguousShard(source, shard_options.shard_index, shard_options.shard_count)
  loader = make_loader(shard, batch_size=per_process, shard_options=grain.sharding.NoSharding(),
                       shuffle=False, num_epochs=1, drop_remainder=False, worker_count=worker_count)
  largest_shard = math.ceil(len(source) / shard_options.shard_count)
  num_batches = math.ceil(largest_shard / per_process)
  padded = _PaddedIterator(iter(loader), per_process, num_batches,
                           template=lambda: source[0])
  return BatchIterator(padded, mesh, prefetch)


class _PaddedImages:
  """Records with their spatial arrays zero-padded (bottom, right) to height x width, plus `pixel_mask`."""

  def __init__(self, source, height, width):
    self._source = source
    self._size = int(height), int(width)

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    example = dict(self._source[index])
    height, width = records.spatial_size(example)
    pad_height, pad_width = self._size[0] - height, self._size[1] - width
    if pad_height < 0 or pad_width < 0:
      raise ValueError(f"{_record_name(self._source, index)} is {height}x{width}, larger than the "
                       f"{self._size[0]}x{self._size[1]} its sizes gave")
    for key in records.SPATIAL_KEYS:
      if key in example and (pad_height or pad_width):
        value = np.asarray(example[key])
        example[key] = np.pad(value, [(0, pad_height), (0, pad_width)] + [(0, 0)] * (value.ndim - 2))
    example["pixel_mask"] = np.zeros(self._size, bool)
    example["pixel_mask"][:height, :width] = True
    return example


class _ContiguousShard:
  """Records [start, end) of `source` for shard `index` of `count` (sizes differ by at most 1)."""

  def __init__(self, source, index, count):
    self._source = source
    self._start = index * len(source) // count
    self._end = (index + 1) * len(source) // count

  def __len__(self):
    return self._end - self._start

  def __getitem__(self, index):
    if not 0 <= index < len(self):
      raise IndexError(index)
    return self._source[self._start + index]


class _PaddedIterator:
  """Pads host batches to `batch_size` rows, adds `mask`, and yields exactly `num_batches`."""

  def __init__(self, host_iterator, batch_size, num_batches, template):
    self._host_iterator = host_iterator
    self._batch_size = batch_size
    self._num_batches = num_batches
    self._template = template
    self._yielded = 0
    self._zeros = None

  def __iter__(self):
    return self

  def __next__(self):
    if self._yielded == self._num_batches:
      raise StopIteration
    self._yielded += 1
    batch = next(self._host_iterator, None)
    if batch is None:  # this process ran out before the others
      batch = self._empty_batch()
    rows = len(next(iter(batch.values())))
    if self._zeros is None:
      self._zeros = {key: np.zeros((1,) + np.shape(value)[1:], np.asarray(value).dtype)
                     for key, value in batch.items()}
    padded = {key: np.concatenate([value] + [self._zeros[key]] * (self._batch_size - rows))
              for key, value in batch.items()}
    padded["mask"] = np.arange(self._batch_size) < rows
    return padded

  def _empty_batch(self):
    if self._zeros is None:
      example = self._template()
      self._zeros = {key: np.zeros((1,) + np.shape(value), np.asarray(value).dtype)
                     for key, value in example.items()}
    return {key: zeros[:0] for key, zeros in self._zeros.items()}

  def get_state(self):
    return self._yielded

  def set_state(self, state):
    raise NotImplementedError("evaluation passes restart from the beginning")
