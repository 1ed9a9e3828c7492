"""The input pipeline: DP records -> shuffled, augmented, float batches on the device mesh.

    source = records.DPSource.from_tfds("dpdd/patches", "train", keys=pipeline.DEBLUR_STAGE_KEYS)
    batches = pipeline.training_batches(source, sharding.make_mesh(), batch_size=2, seed=0)
    checkpoint["data"] = batches.get_state()    # ... on resume: batches.set_state(saved)

Grain shuffles, shards per process, crops and flips (`augment`) and batches in `worker_count`
processes. Training crops every record to one size; evaluation pads the last batch (`mask`) and
every image to the split's largest size (`pixel_mask`). Images become float32 in [0, 1] on the mesh.
"""

import collections
import dataclasses
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


@dataclasses.dataclass
class Augment(grain.transforms.RandomMap):
  """Random crop then DP-correct random flips (see `augment`), with Grain's per-record rng."""
  crop_size: int | tuple[int, int] | None = None
  horizontal_flip: bool = True
  vertical_flip: bool = True

  def random_map(self, element, rng):
    if self.crop_size is not None:
      element = augment.random_crop(element, rng, self.crop_size)
    return augment.random_flips(element, rng, self.horizontal_flip, self.vertical_flip)


def batch_to_float(batch):
  """Host batch with images as float32 in [0, 1] and COC as N x H x W x 1."""
  return {key: images.to_float(np.asarray(value)) if key in records.IMAGE_KEYS
          else _coc_with_channel_axis(value) if key == "coc" else value for key, value in batch.items()}


def _coc_with_channel_axis(coc):
  coc = np.asarray(coc, np.float32)
  return coc[..., None] if coc.ndim == 3 else coc


@jax.jit
def _look_up(pixels, table):
  return table[pixels]


@functools.lru_cache(maxsize=None)
def _unit_float_table(dtype, mesh):
  """images.to_float of every integer value, replicated on the mesh.

  Not a division: XLA's x * (1 / 65535) is 1 ulp off for some values; device and host batches agree.
  """
  table = images.to_float(np.arange(np.iinfo(dtype).max + 1, dtype=dtype))
  return jax.device_put(table, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def _per_process_batch(batch_size, shard_count):
  if batch_size % shard_count:
    raise ValueError(f"global batch size {batch_size} is not divisible by the {shard_count} processes")
  return batch_size // shard_count


def _record_name(source, index):
  return source.record_name(index) if hasattr(source, "record_name") else f"record {index}"


class _SizeChecked:
  """`source` with each record checked against the training crop (or, without one, the first size)."""

  def __init__(self, source, crop_size):
    self._source = source
    self._least = (crop_size, crop_size) if np.isscalar(crop_size) else crop_size
    self._exact = records.spatial_size(source[0]) if crop_size is None and len(source) else None

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
    # Grain checks repr(data source) on resume: positions saved without this wrapper stay valid.
    return repr(self._source)


def make_loader(source, *, batch_size, shard_options, crop_size=None, horizontal_flip=False,
                vertical_flip=False, shuffle=False, seed=0, num_epochs=None, drop_remainder=True,
                worker_count=0, read_threads=2):
  """A Grain DataLoader of this process's host batches; `batch_size` is this process's share."""
  sampler = grain.samplers.IndexSampler(num_records=len(source), shard_options=shard_options, shuffle=shuffle,
                                        num_epochs=num_epochs, seed=seed)
  operations = []
  if crop_size is not None or horizontal_flip or vertical_flip:
    operations.append(Augment(crop_size, horizontal_flip, vertical_flip))
  # Images stay integer until the device: half the bytes to copy, no per-pixel work on the host.
  operations.append(grain.transforms.Batch(batch_size, drop_remainder=drop_remainder))
  if worker_count and not flags.FLAGS.is_parsed():
    # Grain's workers read absl flags; a program that parses none (argparse, notebook, test) fails.
    flags.FLAGS.mark_as_parsed()
  # Grain's default read options (16 threads, 500 records ahead) hold gigabytes per worker.
  read_options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=16)
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations, worker_count=worker_count,
                          worker_buffer_size=4, read_options=read_options)


def put_on_mesh(batch, mesh, axis=DATA_AXIS):
  """This process's host batch as global arrays sharded over `axis`, images as float in [0, 1].

  Process p's rows become rows [p * n, (p + 1) * n) of the global batch; text stays on the host.
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
  """Batches placed on the mesh `prefetch` steps ahead, with a resumable data position: `get_state()`
  is the (per-process) position after the last batch handed out, not after the prefetched ones, so
  `set_state()` continues with exactly the next batch. Evaluation passes (plain generators) have no
  position: they restart from the beginning."""

  def __init__(self, host_iterator, mesh=None, prefetch=2):
    self._host_iterator = host_iterator
    self._mesh = mesh
    self._prefetch = max(1, prefetch)
    self._queue = collections.deque()
    self._state = self._position()

  def __iter__(self):
    return self

  def __next__(self):
    try:
      while len(self._queue) < self._prefetch:
        batch = next(self._host_iterator)
        batch = put_on_mesh(batch, self._mesh) if self._mesh is not None else batch_to_float(batch)
        self._queue.append((batch, self._position()))
    except StopIteration:
      if not self._queue:
        raise
    batch, self._state = self._queue.popleft()
    return batch

  def _position(self):
    return self._host_iterator.get_state() if hasattr(self._host_iterator, "get_state") else None

  def get_state(self):
    return self._state

  def set_state(self, state):
    self._queue.clear()
    self._host_iterator.set_state(state)
    self._state = state


def training_batches(source, mesh=None, *, batch_size, crop_size=None, horizontal_flip=True,
                     vertical_flip=True, seed=0, num_epochs=None, worker_count=0, read_threads=2,
                     prefetch=2, shard_options=None):
  """Endless (or `num_epochs`) shuffled, augmented training batches of global size `batch_size`.

  With `mesh`, jax.Arrays sharded over its 'data' axis; without, NumPy host batches. Throughput
  comes from `worker_count` processes (see experiments/PERF.md, "Input pipeline").
  """
  shard_options = shard_options or grain.sharding.ShardOptions(jax.process_index(), jax.process_count(), True)
  loader = make_loader(
      _SizeChecked(source, crop_size),
      batch_size=_per_process_batch(batch_size, shard_options.shard_count),
      shard_options=shard_options, crop_size=crop_size, horizontal_flip=horizontal_flip,
      vertical_flip=vertical_flip, shuffle=True, seed=seed, num_epochs=num_epochs,
      drop_remainder=True, worker_count=worker_count, read_threads=read_threads)
  return BatchIterator(iter(loader), mesh, prefetch)


def evaluation_batches(source, mesh=None, *, batch_size, worker_count=0, prefetch=2, shard_options=None):
  """One pass over `source` in order, in batches of one shape, whatever the images' sizes.

  Images are zero-padded (bottom, right) to the split's largest height and width; `pixel_mask`
  (N, H, W) marks the real pixels and `mask` (N,) the real rows of the padded last batches. Every
  process yields the same number of batches, as collectives on several hosts need.
  """
  shard_options = shard_options or grain.sharding.ShardOptions(jax.process_index(), jax.process_count(), False)
  per_process = _per_process_batch(batch_size, shard_options.shard_count)
  if len(source):
    source = _PaddedImages(source, *np.max(records.image_sizes(source), axis=0))
  # Contiguous blocks per process: Grain 0.2's IndexSampler drops records of uneven shards.
  count, index = shard_options.shard_count, shard_options.shard_index
  shard = records.Slice(source, index * len(source) // count, (index + 1) * len(source) // count)
  loader = make_loader(shard, batch_size=per_process, shard_options=grain.sharding.NoSharding(),
                       shuffle=False, num_epochs=1, drop_remainder=False, worker_count=worker_count)
  num_batches = math.ceil(math.ceil(len(source) / count) / per_process)
  return BatchIterator(_padded(iter(loader), per_process, num_batches, lambda: source[0]), mesh, prefetch)


class _PaddedImages:
  """Records zero-padded (bottom, right) to height x width, plus `pixel_mask`."""

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


def real_size(pixel_mask):
  """(height, width) of the image an (H, W) `pixel_mask` row of an evaluation batch marks."""
  pixel_mask = np.asarray(pixel_mask)
  return int(pixel_mask.any(1).sum()), int(pixel_mask.any(0).sum())


def _padded(host_iterator, batch_size, num_batches, template):
  """Host batches padded to `batch_size` rows, with `mask`: exactly `num_batches` of them."""
  zeros = None
  for _ in range(num_batches):
    batch = next(host_iterator, None)
    if zeros is None:
      # Zero rows like a batch's; a process that has no records takes the first record's shapes.
      rows_like = batch or {key: np.asarray(value)[None] for key, value in template().items()}
      zeros = {key: np.zeros((1,) + np.shape(value)[1:], np.asarray(value).dtype) for key, value in rows_like.items()}
    if batch is None:  # this process ran out before the others
      batch = {key: row[:0] for key, row in zeros.items()}
    rows = len(next(iter(batch.values())))
    padded = {key: np.concatenate([value] + [zeros[key]] * (batch_size - rows)) for key, value in batch.items()}
    padded["mask"] = np.arange(batch_size) < rows
    yield padded
