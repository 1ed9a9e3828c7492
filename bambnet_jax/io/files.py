"""Atomic file writing: a reader sees the previous complete file or the new one, never half of one."""

import contextlib
import errno
import os
import tempfile


class OutputWriteError(OSError):
  """Writing an output failed; nothing partial was left behind."""


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path beside `path` (one file system: `os.replace` is atomic), renamed onto
  `path` if the block succeeds and removed on any failure (a full disk included)."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
  os.close(fd)
  # mkstemp makes the file private (0600); outputs get the usual permissions the umask allows.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      raise OutputWriteError(e.errno, f"{path}: no space left on device; nothing was written") from e
    raise


def atomic_write_bytes(path, data):
  """Writes `data` to `path` atomically (fsynced before the rename)."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
