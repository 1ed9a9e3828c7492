"""Where DP records come from: prepared TFDS datasets or lists, and the synthetic scenes' seeds.

Every source is a random-access sequence of example dicts (what Grain needs) holding only the keys
a stage reads, images as integer (8/16-bit) or float arrays.
"""

import concurrent.futures
import struct

import numpy as np
import tensorflow_datasets as tfds

from bambnet_jax.data import augment
from bambnet_jax.io import images

IMAGE_KEYS = ("left", "right", "combined", "sharp")
SPATIAL_KEYS = augment.SPATIAL_KEYS  # the H x W (x C) arrays of a record, all of one size


def image_sizes(source):
  """(N, 2) int array of (height, width) per record: the source's own `image_sizes()` or a scan."""
  if hasattr(source, "image_sizes"):
    return source.image_sizes()
  return np.array([spatial_size(source[i]) for i in range(len(source))], np.int64).reshape(-1, 2)


def spatial_size(example, where="record"):
  """(height, width) of the first spatial array of `example` (encoded images: from the header)."""
  key = next((k for k in SPATIAL_KEYS if k in example), None)
  if key is None:
    raise ValueError(f"{where}: has none of the spatial keys {SPATIAL_KEYS}: {sorted(example)}")
  value = example[key]
  if not isinstance(value, (bytes, np.bytes_)):
    return tuple(int(n) for n in np.shape(value)[:2])
  data = bytes(value)
  # A PNG's IHDR chunk comes first: width and height as big-endian uint32 at bytes 16-24.
  if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
    width, height = struct.unpack(">II", data[16:24])
    return int(height), int(width)
  return tuple(images.decode_image(data, f"{where}.{key}").shape[:2])


class Slice:
  """Records [start, end) of a sequence (a process's shard, the meta set's head)."""

  def __init__(self, records, start, end):
    self._records, self._start, self._end = records, start, min(end, len(records))

  def __len__(self):
    return self._end - self._start

  def __getitem__(self, index):
    if not 0 <= index < len(self):
      raise IndexError(index)
    return self._records[self._start + index]


class DPSource:
  """Random access to DP records (a TFDS data source, a list of dicts), decoding only `keys`."""

  def __init__(self, records, keys, name="records"):
    self._records = records
    self._keys = tuple(keys)
    self._name = name
    self._sizes = None

  @classmethod
  def from_tfds(cls, dataset, split, keys=IMAGE_KEYS, data_dir=None):
    """A prepared TFDS dataset (e.g. "dpdd/patches"); import `tfds_dpd` first to register it."""
    records = tfds.data_source(
        dataset, split=split, data_dir=data_dir, download=False,
        # Only the requested views are decoded, in `__getitem__`.
        decoders={key: tfds.decode.SkipDecoding() for key in IMAGE_KEYS})
    missing = set(keys) - set(records.dataset_info.features.keys())
    if missing:
      raise ValueError(f"{dataset}: has no feature(s) {sorted(missing)}; "
                       f"it has {sorted(records.dataset_info.features.keys())}")
    return cls(records, keys, name=f"{dataset}/{split}")

  def __len__(self):
    return len(self._records)

  def record_name(self, index):
    """`dataset/split[index]`, with the record's own name where it has one."""
    where = f"{self._name}[{index}]"
    name = self._records[index].get("name")
    return where if name is None else f"{where} ({text(name)})"

  def image_sizes(self):
    """(N, 2) (height, width) per record, read from the PNG headers once and then remembered."""
    if self._sizes is None:
      def size(index):
        record = self._records[index]
        return spatial_size({k: record[k] for k in self._keys if k in record}, f"{self._name}[{index}]")
      # Reading a record is mostly decompression, which releases the GIL.
      with concurrent.futures.ThreadPoolExecutor(8) as pool:
        self._sizes = np.array(list(pool.map(size, range(len(self)))), np.int64).reshape(-1, 2)
    return self._sizes

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


def text(value):
  """A record's text field (bytes from TFDS) as str."""
  return value.decode() if isinstance(value, (bytes, np.bytes_)) else str(value)


def scene_seed(seed, split, index):
  """The render seed of synthetic scene `index` of `split`: independent streams per split."""
  split_number = {"train": 0, "validation": 1, "test": 2}.get(split)
  if split_number is None:
    raise ValueError(f"unknown split {split!r} (train, validation or test)")
  return int(np.random.SeedSequence([seed, split_number, index]).generate_state(1)[0])
