"""TFDS's on-disk shuffle buckets through Python files, so large splits prepare without TensorFlow.

TFDS's writer holds a split's serialised examples in memory up to
`tensorflow_datasets.core.shuffle.MAX_MEM_BUFFER_SIZE` (1 GB) and, past that, spills them into
1000 bucket files opened with `tf.io.gfile`, which imports TensorFlow: `dpdd/full` (about 20 GB)
failed there with "No module named 'tensorflow'". Everything else the writer does is TensorFlow
free, and the bucket code only needs `GFile`, `exists`, `remove` and an error type from `tf`.

`without_tensorflow()` gives the shuffle module those four through `etils.epath` (plain files for
local paths, fsspec for cloud ones) while one of our builders prepares, and only where TensorFlow
is not installed: with TensorFlow, TFDS's own path runs untouched. The bucket format, the hashing
and the order of the examples are TFDS's, so a dataset prepared either way is the same.
"""

import contextlib
import errno
import importlib.util
import threading
import types

from etils import epath
from tensorflow_datasets.core import shuffle


class _NeverRaised(Exception):
  """Stands for tf.errors.ResourceExhaustedError, which `shuffle._Bucket.add` catches."""


def _open(path, mode):
  try:
    return epath.Path(path).open(mode)
  except OSError as error:
    # 1000 buckets are open at once while spilling; TFDS raises the soft limit on the same error.
    if error.errno != errno.EMFILE:
      raise
    shuffle._increase_open_files_limit()  # pylint: disable=protected-access
    return epath.Path(path).open(mode)


def _remove(path):
  epath.Path(path).unlink()


def _exists(path):
  return epath.Path(path).exists()


_GFILE_STAND_IN = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(GFile=_open, exists=_exists, remove=_remove)),
    errors=types.SimpleNamespace(ResourceExhaustedError=_NeverRaised),
)

# Builders may prepare in several threads at once: the stand-in stays until the last one is done.
_lock = threading.Lock()
_users = 0
_saved_tf = None


def tensorflow_installed():
  return importlib.util.find_spec("tensorflow") is not None


@contextlib.contextmanager
def without_tensorflow():
  """Within: TFDS's shuffle buckets use `etils.epath` files when TensorFlow is not installed."""
  global _users, _saved_tf
  if tensorflow_installed():
    yield
    return
  with _lock:
    if _users == 0:
      _saved_tf, shuffle.tf = shuffle.tf, _GFILE_STAND_IN
    _users += 1
  try:
    yield
  finally:
    with _lock:
      _users -= 1
      if _users == 0:
        shuffle.tf, _saved_tf = _saved_tf, None
