"""Outputs survive SIGKILL and a full disk: the old or the new complete file, never part of one."""

import errno
import hashlib
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from bambnet_jax.io import weights as weights_io
from bambnet_jax import cli
from bambnet_jax.io import config_files
from bambnet_jax.io import files
from bambnet_jax.io import images
from bambnet_jax.models import networks
from bambnet_jax.training import stage_checkpoints
from bambnet_jax.commands import train

ROOT = pathlib.Path(__file__).parents[1]
MIB = 1 << 20


def _sha256(data):
  return hashlib.sha256(data).hexdigest()


def _start(code, *args):
  """A Python child in the repository that prints 'ready' once it is about to loop over writes."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, text=True)
  assert child.stdout.readline().strip() == "ready"
  return child


def _kill(child):
  child.send_signal(signal.SIGKILL)
  child.wait(timeout=30)
  assert child.returncode == -signal.SIGKILL  # it was still writing: the kill, not an exit, ended it


# --- SIGKILL -------------------------------------------------------------------------------------

# Alternates two large contents of different sizes over one target, for ever.
_REWRITER = """
  import sys
  from bambnet_jax.io import files
  target, old_size, new_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
  contents = [b"N" * new_size, b"o" * old_size]
  print("ready", flush=True)
  i = 0
  while True:
    files.atomic_write_bytes(target, contents[i % 2])
    i += 1
"""


def test_sigkill_while_rewriting_leaves_the_old_or_the_new_whole_file(tmp_path):
  old_size, new_size = 20 * MIB, 30 * MIB
  old, new = b"o" * old_size, b"N" * new_size  # as the child makes them
  target = tmp_path / "big.bin"
  files.atomic_write_bytes(target, old)
  whole = {_sha256(old): "old", _sha256(new): "new"}
  rng = random.Random(0)
  seen = set()
  for _ in range(4):
    child = _start(_REWRITER, target, old_size, new_size)
    time.sleep(rng.uniform(0.05, 0.6))
    _kill(child)
    data = target.read_bytes()
    assert len(data) in (old_size, new_size) and _sha256(data) in whole, f"partial target of {len(data)} bytes"
    seen.add(whole[_sha256(data)])
    # Strays are allowed, but only as the hidden temporaries beside the target.
    assert all(p.name.startswith(".tmp-") for p in tmp_path.iterdir() if p != target)
  assert seen


def test_sigkill_between_write_and_rename_keeps_the_old_file(tmp_path):
  """The worst moment, made certain: the new bytes are on disk in the temporary, the rename pending."""
  target = tmp_path / "out.bin"
  files.atomic_write_bytes(target, b"old complete content")
  code = """
    import os, sys, time
    from bambnet_jax.io import files
    real_fsync = os.fsync
    def fsync_then_hang(fd):
      real_fsync(fd)
      print("ready", flush=True)
      time.sleep(600)
    files.os.fsync = fsync_then_hang
    files.atomic_write_bytes(sys.argv[1], b"new" * 1000)
  """
  _kill(_start(code, target))
  assert target.read_bytes() == b"old complete content"
  strays = [p for p in tmp_path.iterdir() if p != target]
  assert len(strays) == 1 and strays[0].name.startswith(".tmp-") and strays[0].read_bytes() == b"new" * 1000


_SMALL_MODEL = "networks.model_config(width=8, branch_capacities=(1, 4, 4, 4))"

_WEIGHTS_SAVER = f"""
  import pathlib, sys
  import jax
  from bambnet_jax.io import weights as weights_io
  from bambnet_jax.models import networks
  config = {_SMALL_MODEL}
  params = networks.init_params("coc", config, jax.random.key(7))
  root = pathlib.Path(sys.argv[1])
  print("ready", flush=True)
  for i in range(10**6):
    weights_io.save_weights(root / f"w{{i:04d}}", params, "coc", config)
    print("saved", flush=True)
"""


def test_sigkill_while_saving_weights_leaves_loadable_or_clearly_incomplete_dirs(tmp_path):
  config = networks.model_config(width=8, branch_capacities=(1, 4, 4, 4))
  expected = jax.tree_util.tree_leaves(networks.init_params("coc", config, jax.random.key(7)))
  root = tmp_path / "weights"
  child = _start(_WEIGHTS_SAVER, root)
  # Kill part-way through a later save: after the first one is complete (a loaded machine can
  # take seconds for it), plus a random fraction of a save's time.
  assert child.stdout.readline().strip() == "saved"
  time.sleep(random.Random(1).uniform(0.05, 0.4))
  _kill(child)
  complete, incomplete = [], []
  for directory in sorted(root.iterdir()):
    try:
      params, net, _ = weights_io.load_weights(directory, expected_net="coc")
    except weights_io.WeightsError as e:
      assert "no complete checkpoint" in str(e) and str(directory) in str(e)
      incomplete.append(directory.name)
      continue
    leaves = jax.tree_util.tree_leaves(params)
    assert net == "coc" and len(leaves) == len(expected)
    for got, want in zip(leaves, expected):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    complete.append(directory.name)
  assert complete
  # Only the directory being written at the kill (the last one) can be incomplete.
  assert incomplete in ([], [sorted(root.iterdir())[-1].name])


def test_sigkilled_training_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
  workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
  overrides = [f"data.data_dir={data_dir}", "coc.num_steps=6"]
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-m", "bambnet_jax.cli", "train", "--config", "configs/smoke.py",
                            "--workdir", str(workdir), "--stop-after", "coc", *overrides],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = workdir / "coc" / "checkpoints"
  deadline = time.monotonic() + 300
  while not (ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())):
    assert child.poll() is None, "training exited before its first checkpoint"
    assert time.monotonic() < deadline, "no checkpoint within 300 s"
    time.sleep(0.02)
  _kill(child)
  assert not (workdir / "progress.json").exists()  # killed inside the COC stage

  restored = []
  real_restore = stage_checkpoints.StageCheckpoints.restore

  def spy(self, target_state, step=None):
    state, extra = real_restore(self, target_state, step)
    restored.append(int(jax.device_get(state.step)))
    return state, extra

  monkeypatch.setattr(stage_checkpoints.StageCheckpoints, "restore", spy)
  config = config_files.apply_overrides(config_files.load_config(ROOT / "configs" / "smoke.py"), overrides)
  train.train_and_evaluate(config, workdir, stop_after="coc")
  assert len(restored) == 1 and restored[0] >= 2 and restored[0] % 2 == 0  # resumed, not restarted
  assert json.loads((workdir / "progress.json").read_text())["finished"].keys() == {"coc"}
  params, net, _ = weights_io.load_weights(workdir / "coc" / "weights", expected_net="coc")
  assert net == "coc" and all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(params))
  assert stage_checkpoints.StageCheckpoints(workdir, "coc").latest_step() == 6


# --- Disk full -----------------------------------------------------------------------------------

class _Disk:
  """A disk with `free` bytes: writes to temporaries past that fill it, then fail with ENOSPC."""

  def __init__(self, free):
    self.free = free

  def open(self, path, mode="r", *args, **kwargs):
    f = open(path, mode, *args, **kwargs)  # pylint: disable=unspecified-encoding
    if "w" not in mode or not os.path.basename(path).startswith(".tmp-"):
      return f
    return _FillingFile(f, self)


class _FillingFile:

  def __init__(self, f, disk):
    self._f, self._disk = f, disk

  def write(self, data):
    data = memoryview(data).cast("B")
    fits = min(len(data), self._disk.free)
    self._f.write(data[:fits])
    self._f.flush()
    self._disk.free -= fits
    if fits < len(data):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return len(data)

  def __getattr__(self, name):
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()


def _fill_disk(monkeypatch, free):
  disk = _Disk(free)
  for module in (files, images):
    monkeypatch.setattr(module, "open", disk.open, raising=False)
  return disk


@pytest.mark.parametrize("existing", [False, True])
def test_disk_full_during_write_png_names_the_file_and_leaves_nothing_partial(tmp_path, monkeypatch, existing):
  target = tmp_path / "out.png"
  old = np.zeros((4, 4, 3), np.uint8)
  if existing:
    images.write_png(target, old)
  pixels = np.random.default_rng(0).integers(0, 65535, (64, 64, 3), dtype=np.uint16)
  size = len(images.encode_png(pixels))
  _fill_disk(monkeypatch, size // 2)
  with pytest.raises(files.OutputWriteError) as info:
    images.write_png(target, pixels)
  assert info.value.errno == errno.ENOSPC and str(target) in str(info.value) and "no space left" in str(info.value)
  assert [p.name for p in tmp_path.iterdir()] == (["out.png"] if existing else [])
  if existing:
    np.testing.assert_array_equal(images.read_image(target), old)


def test_disk_full_at_fsync_and_in_write_npy(tmp_path, monkeypatch):
  """Delayed allocation reports ENOSPC at fsync; np.save writes in several chunks."""
  def no_space(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  with monkeypatch.context() as patch:
    patch.setattr(files.os, "fsync", no_space)
    with pytest.raises(files.OutputWriteError, match="a.bin: no space left"):
      files.atomic_write_bytes(tmp_path / "a.bin", b"x" * 1000)
  _fill_disk(monkeypatch, 200)  # the .npy header fits, the data does not
  with pytest.raises(files.OutputWriteError, match="b.npy: no space left"):
    images.write_npy(tmp_path / "b.npy", np.ones((32, 32), np.float32))
  assert list(tmp_path.iterdir()) == []


def test_disk_full_during_bambnet_deblur_output(tmp_path, monkeypatch, capsys, real_dp_dir):
  config = networks.model_config(width=8, branch_capacities=(1, 4, 4, 4))
  weights = tmp_path / "weights"
  weights_io.save_weights(weights, networks.init_params("deblur", config, jax.random.key(0)), "deblur", config)
  folder = real_dp_dir / "0600" / "f4"
  crop = [images.read_image(folder / n)[100:148, 200:264] for n in ("l.png", "r.png")]
  left, right = tmp_path / "x_L.png", tmp_path / "x_R.png"
  images.write_png(left, crop[0])
  images.write_png(right, crop[1])
  args = ["deblur", "--no-progress", "--left", str(left), "--right", str(right), "--weights", str(weights),
          "--coc", "search", "--output-dir"]

  roomy = tmp_path / "roomy"
  assert cli.main(args + [str(roomy)]) == 0
  sizes = {p.name: p.stat().st_size for p in roomy.iterdir()}
  assert set(sizes) == {"x_restored.png", "x_coc.npy", "x_coc.png", "x_masks.png"}

  # Room for the restored image and the COC array, not for the whole COC picture.
  out = tmp_path / "full"
  _fill_disk(monkeypatch, sizes["x_restored.png"] + sizes["x_coc.npy"] + sizes["x_coc.png"] // 2)
  capsys.readouterr()
  assert cli.main(args + [str(out)]) == 2
  err = capsys.readouterr().err
  assert f"{out / 'x_coc.png'}: no space left on device" in err
  assert list(out.iterdir()) == []  # the two files already written were removed, no temporaries left
