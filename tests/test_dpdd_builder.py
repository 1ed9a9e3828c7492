"""The dpdd builder: a fake DPDD tree written here is prepared without TensorFlow and read back."""

import pathlib
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_dpd  # registers the builders
from tfds_dpd.dpdd import layout

# (source stem, target stem, height, width): targets carry other numbers than their sources and
# are paired by sorted order; the test split holds a portrait scene.
SCENES = {
    "train": [("1P0A0100", "1P0A0107", 40, 56), ("1P0A0200", "1P0A0203", 40, 56)],
    "val": [("1P0A0300", "1P0A0309", 40, 56)],
    "test": [("1P0A0400", "1P0A0402", 40, 56), ("1P0A0500", "1P0A0511", 56, 40),
             ("1P0A0600", "1P0A0601", 40, 56)],
}


def _write_png16_rgb(path, rgb):
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), rgb[:, :, ::-1])  # OpenCV writes BGR


def write_fake_dpdd(root, seed=0):
  """Writes the tree; returns {split: [(name, {view: RGB uint16 as written})]} in sorted order."""
  rng = np.random.default_rng(seed)
  written = {}
  for prefix, scenes in SCENES.items():
    written[prefix] = []
    for source, target, height, width in scenes:
      views = {view: rng.integers(0, 65536, (height, width, 3), dtype=np.uint16)
               for view in ("combined", "sharp", "left", "right")}
      _write_png16_rgb(root / f"{prefix}_c/source/{source}.png", views["combined"])
      _write_png16_rgb(root / f"{prefix}_c/target/{target}.png", views["sharp"])
      _write_png16_rgb(root / f"{prefix}_l/source/{source}_L.png", views["left"])
      _write_png16_rgb(root / f"{prefix}_r/source/{source}_R.png", views["right"])
      written[prefix].append((source, views))
  return written


def _prepare(config, manual_dir, data_dir):
  builder = tfds_dpd.dpdd.Dpdd(config=config, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _by_name(source):
  return {example["name"].decode(): example for example in source}


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory):
  manual = tmp_path_factory.mktemp("manual")
  written = write_fake_dpdd(manual / "dd_dp_dataset_png")
  # Scene 2 is indoor, 1 and 3 outdoor (1-based indices into the sorted test names).
  np.save(manual / "indoor_labels.npy", np.array([2]))
  np.save(manual / "outdoor_labels.npy", np.array([1, 3]))
  return manual, written


def test_full_config_reads_back_every_pixel_with_pairs_matched(fake_tree, tmp_path):
  manual, written = fake_tree
  _prepare("full", manual, tmp_path)
  assert "tensorflow" not in sys.modules
  sources = tfds.data_source("dpdd/full", data_dir=tmp_path)
  assert set(sources) == {"train", "validation", "test"}
  expected_types = {"1P0A0400": "outdoor", "1P0A0500": "indoor", "1P0A0600": "outdoor"}
  for split, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
    examples = _by_name(sources[split])
    assert sorted(examples) == [name for name, _ in written[prefix]]
    for name, views in written[prefix]:
      example = examples[name]
      portrait = views["left"].shape[0] > views["left"].shape[1]
      for view, pixels in views.items():
        # Portrait scenes come back turned counter-clockwise to landscape.
        want = np.rot90(pixels, 1) if portrait else pixels
        got = example[view]
        assert got.dtype == np.uint16 and got.shape == want.shape, (name, view)
        np.testing.assert_array_equal(got, want, err_msg=f"{split}/{name}/{view}")
      assert bool(example["rotated"]) == portrait
      assert bool(example["has_sharp"]) and int(example["bit_depth"]) == 16
      scene_type = tfds_dpd.common.SCENE_TYPES[example["scene_type"]]
      assert scene_type == (expected_types[name] if split == "test" else "unknown")


def test_patches_config_cuts_the_grid_and_filters_train(fake_tree, tmp_path):
  manual, written = fake_tree
  config = tfds_dpd.dpdd.DpddConfig(name="patches_tiny", patch_size=16, train_stride=6, validation_stride=15)
  builder = _prepare(config, manual, tmp_path)
  sources = builder.as_data_source()
  assert set(sources) == {"train", "validation"}
  # 40x56 image: rows 0, 6, ..., 24 = 5; columns 0, 6, ..., 36 and 40 = 8. Train drops int(0.3 * 40).
  assert len(sources["train"]) == 2 * (40 - 12)
  # Validation stride 15: rows 0, 15, 24; columns 0, 15, 30, 40.
  assert len(sources["validation"]) == 12
  for split, prefix in (("train", "train"), ("validation", "val")):
    full_views = dict(written[prefix])
    for example in sources[split]:
      scene, _ = example["name"].decode().split("/")
      top, left = example["origin"]
      for view in ("left", "right", "combined", "sharp"):
        np.testing.assert_array_equal(example[view], full_views[scene][view][top:top + 16, left:left + 16])


def test_prepare_needs_no_label_files(tmp_path):
  manual = tmp_path / "manual"
  write_fake_dpdd(manual)
  builder = _prepare("full", manual, tmp_path / "data")
  test = builder.as_data_source(split="test")
  assert {tfds_dpd.common.SCENE_TYPES[e["scene_type"]] for e in test} == {"unknown"}


def test_missing_folder_is_named(tmp_path):
  write_fake_dpdd(tmp_path)
  (tmp_path / "val_r/source/1P0A0300_R.png").unlink()
  (tmp_path / "val_r/source").rmdir()
  with pytest.raises(layout.DpddLayoutError, match="val_r/source"):
    layout.pair_split(tmp_path, "validation")


def test_unequal_counts_are_reported_per_folder(tmp_path):
  write_fake_dpdd(tmp_path)
  (tmp_path / "train_c/target/1P0A0203.png").unlink()
  with pytest.raises(layout.DpddLayoutError, match=r"different numbers.*train_c/target: 1"):
    layout.pair_split(tmp_path, "train")


def test_file_missing_from_one_folder_and_extra_in_another_is_caught(tmp_path):
  write_fake_dpdd(tmp_path)
  (tmp_path / "train_l/source/1P0A0200_L.png").rename(tmp_path / "train_l/source/1P0A0250_L.png")
  with pytest.raises(layout.DpddLayoutError, match="different captures"):
    layout.pair_split(tmp_path, "train")


def test_builder_reports_a_broken_tree_before_writing(tmp_path):
  manual = tmp_path / "manual"
  write_fake_dpdd(manual)
  (manual / "test_l/source/1P0A0600_L.png").unlink()
  with pytest.raises(layout.DpddLayoutError, match="test split"):
    _prepare("full", manual, tmp_path / "data")


def test_pairing_is_by_sorted_order(tmp_path):
  write_fake_dpdd(tmp_path)
  scenes = layout.pair_split(tmp_path, "test")
  assert [(s.index, s.name, s.sharp.name) for s in scenes] == [
      (1, "1P0A0400", "1P0A0402.png"), (2, "1P0A0500", "1P0A0511.png"), (3, "1P0A0600", "1P0A0601.png")]


def test_label_files_must_come_in_pairs(tmp_path):
  np.save(tmp_path / "indoor_labels.npy", np.array([1]))
  with pytest.raises(layout.DpddLayoutError, match="outdoor_labels.npy"):
    layout.read_test_scene_types([tmp_path], 3)
  np.save(tmp_path / "outdoor_labels.npy", np.array([4]))
  with pytest.raises(layout.DpddLayoutError, match="outside 1..3"):
    layout.read_test_scene_types([tmp_path], 3)


def test_bambnet_train_on_a_broken_tree_exits_non_zero_naming_the_folder(tmp_path):
  # The command line's answer to a bad DPDD download: one clear line, exit 2, no dataset written.
  import subprocess  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "manual"
  write_fake_dpdd(manual)
  (manual / "train_c/target/1P0A0203.png").unlink()
  data_dir = tmp_path / "data"
  result = subprocess.run(
      [sys.executable, "-m", "bambnet_jax.cli", "train", "--config", "configs/dpdd.py", "--workdir",
       str(tmp_path / "work"), f"data.manual_dir={manual}", f"data.data_dir={data_dir}", "data.worker_count=0"],
      capture_output=True, text=True, cwd=str(pathlib.Path(__file__).parents[1]))
  assert result.returncode == 2, result.stderr[-2000:]
  assert "bambnet train: error:" in result.stderr and "train_c/target" in result.stderr
  prepared = list(data_dir.rglob("*.array_record*")) if data_dir.exists() else []
  assert not prepared and not (tmp_path / "work" / "progress.json").exists()
