"""Atomic file writing: a reader sees the previous complete file or the new one, never half of one."""

import contextlib
import errno
import os
import tempfile


class OutputWriteError(OSError):
  """Writing an output failed; nothing partial was left behind."""


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

  The temporary file lives in the same directory so that `os.replace` is an atomic rename on
  the same file system. On any failure (a full disk included) the temporary file is removed.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
  os.close(fd)
  # mkstemp makes the file private (0600); outputs get the usual permissions the umask allows.
  os.chmod(tmp, 0o666 & ~_current_umask())
  try:
    yield tmp
    os.replace(tmp, path)
  except OSError as e:
    _remove_quietly(tmp)
    if e.errno == errno.ENOSPC:
      raise OutputWriteError(e.errno, f"{path}: no space left on device; nothing was written") from e
    raise
  except BaseException:
    _remove_quietly(tmp)
    raise


def atomic_write_bytes(path, data):
  """Writes `data` to `path` atomically (fsynced before the rename)."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())


def _remove_quietly(path):
  with contextlib.suppress(FileNotFoundError):
    os.remove(path)


def _current_umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask
