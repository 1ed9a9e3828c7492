"""A training run prints no absl warnings about our own datasets; other warnings still get through."""

import dataclasses
import logging
import os
import pathlib
import subprocess
import sys

from absl import logging as absl_logging
import tensorflow_datasets as tfds

import tfds_dpd

ROOT = pathlib.Path(__file__).parents[1]


def test_smoke_training_prints_no_absl_warning(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "bambnet_jax.cli", "train", "--config", "configs/smoke.py",
       "--workdir", str(tmp_path / "run"), "--stop-after", "coc", f"data.data_dir={tmp_path / 'data'}",
       "coc.num_steps=1"],
      capture_output=True, text=True, cwd=str(ROOT), env=dict(os.environ, JAX_PLATFORMS="cpu"), check=False)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output[-3000:]
  assert (tmp_path / "data" / "dp_synthetic").is_dir()  # the run prepared its dataset
  assert [line for line in output.splitlines() if "WARNING:absl" in line] == []


@dataclasses.dataclass(eq=False)
class _OtherConfig(tfds.core.BuilderConfig):
  pass


def _passes(message, *args):
  """Whether the absl logger's filters let `message % args` through."""
  record = logging.LogRecord("absl", logging.WARNING, __file__, 0, message, args, None)
  return bool(logging.getLogger("absl").filter(record))


def test_only_the_two_messages_about_our_datasets_are_dropped(tmp_path):
  ours = tfds_dpd.dp_synthetic.DpSyntheticConfig(name="mine")
  assert not _passes("Using custom data configuration: %s", ours)
  assert _passes("Using custom data configuration: %s", _OtherConfig(name="theirs"))
  assert not _passes("Variant folder %s has no %s", tmp_path / "dp_synthetic/mine/1.0.0", "dataset_info.json")
  assert not _passes("Variant folder %s has no %s", tmp_path / "dpdd/full/1.0.0", "dataset_info.json")
  assert _passes("Variant folder %s has no %s", tmp_path / "mnist/3.0.1", "dataset_info.json")
  assert _passes("Variant folder %s has invalid version %s", tmp_path / "dpdd/full/x", "x")
  assert _passes("Something else about %s", ours)
  # The filter sits on absl's logger once, however often the builders are imported.
  assert sum(type(f).__name__ == "_QuietOwnDatasets" for f in absl_logging.get_absl_logger().filters) == 1
