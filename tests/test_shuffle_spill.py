"""Splits larger than TFDS's shuffle buffer spill to bucket files, and still prepare without TensorFlow."""

import importlib.util
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle

from bambnet_jax.data import synthetic
import tfds_dpd
from tfds_dpd import shuffle_buckets
import test_dpdd_builder

# Every example of the trees below is larger than this, so each split spills from its second one.
TINY_BUFFER = 2 << 10


def _dpdd(manual, data_dir):
  test_dpdd_builder.write_fake_dpdd(manual)
  return tfds_dpd.dpdd.Dpdd(config="full", data_dir=data_dir), manual


def _dp_synthetic(manual, data_dir):
  del manual
  config = tfds_dpd.dp_synthetic.DpSyntheticConfig(
      name="spill", num_train=4, num_validation=2, num_test=0, seed=3,
      scene=synthetic.SceneConfig(height=24, width=32, max_coc=2.0, num_layers=2))
  return tfds_dpd.dp_synthetic.DpSynthetic(config=config, data_dir=data_dir), None


def _dp_captures(manual, data_dir):
  rng = np.random.default_rng(1)
  for name in ("a", "b", "c", "d"):
    for view in ("L", "R", "S"):
      manual.mkdir(parents=True, exist_ok=True)
      assert cv2.imwrite(str(manual / f"{name}_{view}.png"),
                         rng.integers(0, 65536, (20, 28, 3), dtype=np.uint16))
  config = tfds_dpd.dp_captures.DpCapturesConfig(name="spill", folder=str(manual))
  return tfds_dpd.dp_captures.DpCaptures(config=config, data_dir=data_dir), manual


def _prepare_and_read(make_builder, root):
  builder, manual = make_builder(root / "manual", root / "data")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  return {split: list(source) for split, source in builder.as_data_source().items()}


@pytest.mark.parametrize("make_builder", [_dpdd, _dp_synthetic, _dp_captures],
                         ids=["dpdd", "dp_synthetic", "dp_captures"])
def test_spilled_splits_equal_in_memory_ones_without_tensorflow(make_builder, tmp_path, monkeypatch):
  assert importlib.util.find_spec("tensorflow") is None
  in_memory = _prepare_and_read(make_builder, tmp_path / "in_memory")

  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", TINY_BUFFER)
  gfile = shuffle_buckets._GFILE_STAND_IN.io.gfile  # pylint: disable=protected-access
  opened, real_open = [], gfile.GFile
  monkeypatch.setattr(gfile, "GFile", lambda path, mode: opened.append(path) or real_open(path, mode))
  lazy_tf = shuffle.tf
  spilled = _prepare_and_read(make_builder, tmp_path / "spilled")

  assert opened, "the examples never left the in-memory buffer"
  assert "tensorflow" not in sys.modules
  assert shuffle.tf is lazy_tf  # TFDS's own module is back once preparing is done
  assert not list((tmp_path / "spilled").rglob("bucket_*.tmp"))
  assert set(spilled) == set(in_memory)
  for split, examples in in_memory.items():
    assert len(spilled[split]) == len(examples)
    # Same examples in the same order: the buckets keep TFDS's hash order.
    for want, got in zip(examples, spilled[split]):
      assert set(got) == set(want)
      for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{split}/{want['name']}/{key}")
