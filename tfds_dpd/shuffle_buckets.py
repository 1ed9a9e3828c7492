"""TFDS's on-disk shuffle buckets through Python files, so large splits prepare without TensorFlow.

Past `shuffle.MAX_MEM_BUFFER_SIZE` (1 GB) TFDS spills a split into bucket files opened with
`tf.io.gfile`, so `dpdd/full` failed with "No module named 'tensorflow'". `without_tensorflow()`
gives the shuffle module `GFile`, `exists`, `remove` and an error type through `etils.epath`, only
where TensorFlow is missing; the buckets and example order stay TFDS's, so the dataset is the same.
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


_GFILE_STAND_IN = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(
        GFile=_open, exists=lambda path: epath.Path(path).exists(),
        remove=lambda path: epath.Path(path).unlink())),
    errors=types.SimpleNamespace(ResourceExhaustedError=_NeverRaised),
)

# Builders may prepare in several threads at once: the stand-in stays until the last one is done.
_lock = threading.Lock()
_users = 0
_saved_tf = None


@contextlib.contextmanager
def without_tensorflow():
  """Within: TFDS's shuffle buckets use `etils.epath` files when TensorFlow is not installed."""
  global _users, _saved_tf
  if importlib.util.find_spec("tensorflow") is not None:
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
