"""The dp_captures builder: a folder of the user's own DP pairs becomes the DP features."""

import cv2
import numpy as np
import pytest

from bambnet_jax.io import images
from tfds_dpd.dp_captures import dp_captures_dataset_builder as dp_captures


def _write(path, rgb):
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), rgb[:, :, ::-1])


def test_both_layouts_and_bit_depths_are_read_back(tmp_path):
  rng = np.random.default_rng(0)
  folder = tmp_path / "captures"
  # DPDD-style names, 8-bit, with a sharp target.
  a_left, a_right, a_sharp = (rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(3))
  _write(folder / "garden_L.png", a_left)
  _write(folder / "garden_R.png", a_right)
  _write(folder / "garden_S.png", a_sharp)
  # One folder per capture, 16-bit, no sharp target.
  b_left, b_right = (rng.integers(0, 65536, (16, 24, 3), dtype=np.uint16) for _ in range(2))
  _write(folder / "desk/l.png", b_left)
  _write(folder / "desk/r.png", b_right)

  config = dp_captures.DpCapturesConfig(name="mine", folder=str(folder))
  builder = dp_captures.DpCaptures(config=config, data_dir=tmp_path / "data")
  builder.download_and_prepare()
  examples = {e["name"].decode(): e for e in builder.as_data_source(split="train")}
  assert sorted(examples) == ["desk", "garden"]

  garden = examples["garden"]
  widen = lambda x: x.astype(np.uint16) * 257  # 8-bit v -> v * 257 keeps v / 255 exactly
  np.testing.assert_array_equal(garden["left"], widen(a_left))
  np.testing.assert_array_equal(garden["right"], widen(a_right))
  np.testing.assert_array_equal(garden["sharp"], widen(a_sharp))
  mean = (widen(a_left).astype(np.uint32) + widen(a_right) + 1) // 2
  np.testing.assert_array_equal(garden["combined"], mean)
  assert bool(garden["has_sharp"]) and int(garden["bit_depth"]) == 8

  desk = examples["desk"]
  np.testing.assert_array_equal(desk["left"], b_left)
  np.testing.assert_array_equal(desk["right"], b_right)
  assert not bool(desk["has_sharp"]) and desk["sharp"].shape == (1, 1, 3)
  assert int(desk["bit_depth"]) == 16


def test_unpaired_view_is_an_error_naming_the_file(tmp_path):
  _write(tmp_path / "a_L.png", np.zeros((8, 8, 3), np.uint8))
  _write(tmp_path / "b_L.png", np.zeros((8, 8, 3), np.uint8))
  _write(tmp_path / "b_R.png", np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(dp_captures.DpCapturesError, match=r"a_L.png: missing partner view a_R"):
    dp_captures.find_captures(tmp_path)
  assert [p.name for p in dp_captures.find_captures(tmp_path, skip_unpaired=True)] == ["b"]


def test_empty_folder_and_size_mismatch(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(dp_captures.DpCapturesError, match="no DP captures found"):
    dp_captures.find_captures(tmp_path / "empty")
  _write(tmp_path / "x/l.png", np.zeros((8, 8, 3), np.uint8))
  _write(tmp_path / "x/r.png", np.zeros((8, 8, 3), np.uint8))
  _write(tmp_path / "x/sharp.png", np.zeros((8, 10, 3), np.uint8))
  pair, = dp_captures.find_captures(tmp_path / "x")
  with pytest.raises(images.ImageError, match="sharp.png: size"):
    dp_captures.capture_example(pair)
