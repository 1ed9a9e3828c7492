"""experiments/render_dpdd_tree.py: a tree rendered from a few photos is what the dpdd builder reads.

The photos are small generated files (two colour, two grey); the frames are 512x512, the smallest
that `dpdd/patches` can cut, so both builder configs prepare the tree as they would DPDD.
"""

import json
import os

import cv2
import filelock
import numpy as np
import pytest
import tensorflow_datasets as tfds

import render_dpdd_tree
import tfds_dpd  # registers the builders
from tfds_dpd.dpdd import layout

COUNTS = {"train": 3, "validation": 1, "test": 2}


def _write_photos(folder):
  """Two colour photos (one red, one blue: the BGR order shows) and two grey ones, 8-bit."""
  rng = np.random.default_rng(0)
  folder.mkdir(parents=True, exist_ok=True)
  texture = lambda: cv2.resize(rng.uniform(0, 1, (12, 16)), (128, 96), interpolation=cv2.INTER_CUBIC)
  for name, tint in (("red", (1.0, 0.25, 0.1)), ("blue", (0.1, 0.3, 1.0)), ("grey_a", None), ("grey_b", None)):
    shade = np.clip(texture(), 0, 1)[..., None]
    rgb = shade * np.array(tint) if tint else np.repeat(shade, 3, axis=2)
    assert cv2.imwrite(str(folder / f"{name}.png"), np.rint(rgb[:, :, ::-1] * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  """(root, manifest) of one tree rendered by 2 worker processes, shared by the xdist workers."""
  base = tmp_path_factory.getbasetemp()
  root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "render_dpdd_tree"
  with filelock.FileLock(f"{root}.lock"):
    if not (root / "tree" / render_dpdd_tree.MANIFEST).is_file():
      _write_photos(root / "photos")
      render_dpdd_tree.main([
          "--out", str(root / "tree"), "--photos", str(root / "photos"), "--train", str(COUNTS["train"]),
          "--validation", str(COUNTS["validation"]), "--test", str(COUNTS["test"]), "--size", "512x512",
          "--test-fraction", "0.5", "--workers", "2"])
  return root / "tree", json.loads((root / "tree" / render_dpdd_tree.MANIFEST).read_text())


def test_photos_are_split_not_scenes(tree):
  root, manifest = tree
  assert manifest["complete"]
  train = {p["name"] for p in manifest["photos"]["train"]}
  test = {p["name"] for p in manifest["photos"]["test"]}
  assert len(train) == len(test) == 2 and not train & test
  # One colour and one grey photo on each side.
  for side in ("train", "test"):
    assert sorted(p["grey"] for p in manifest["photos"][side]) == [False, True]
  scenes = manifest["scenes"]
  assert {s["photo"] for s in scenes["train"] + scenes["validation"]} <= train
  assert {s["photo"] for s in scenes["test"]} == test


def test_layout_finds_every_scene_as_sixteen_bit_dp_views(tree):
  root, manifest = tree
  assert layout.find_root(root.parent) == root
  for split, count in COUNTS.items():
    found = layout.pair_split(root, split)
    assert [s.name for s in found] == sorted(s["name"] for s in manifest["scenes"][split])
    assert len(found) == count
    for scene in found:
      pixels = {view: cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for view, path in scene.paths().items()}
      assert all(p.dtype == np.uint16 and p.shape == (512, 512, 3) for p in pixels.values())
      assert np.abs(pixels["left"].astype(np.int64) - pixels["right"]).mean() > 100  # DP views differ
      photo = next(s["photo"] for s in manifest["scenes"][split] if s["name"] == scene.name)
      if photo.endswith(("red", "blue")):  # cv2 reads B, G, R: the tint must land in its channel
        blue, _, red = pixels["sharp"].reshape(-1, 3).mean(0)
        assert (red > 2 * blue) == photo.endswith("red")


def test_dpdd_builder_prepares_the_tree(tree, tmp_path):
  root, manifest = tree
  for config, splits in (("patches", ("train", "validation")), ("full", ("train", "validation", "test"))):
    builder = tfds_dpd.dpdd.Dpdd(config=config, data_dir=tmp_path)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    for split in splits:
      examples = list(builder.as_data_source(split=split))
      names = sorted(e["name"].decode().split("/")[0] for e in examples)
      assert names == sorted(s["name"] for s in manifest["scenes"][split])  # one 512 patch per frame
      assert all(e["left"].dtype == np.uint16 and e["bit_depth"] == 16 for e in examples)


def test_refuses_to_overwrite_a_tree_it_did_not_write(tree, tmp_path):
  root, _ = tree
  foreign = tmp_path / "dd_dp_dataset_png"
  (foreign / "train_c" / "source").mkdir(parents=True)
  with pytest.raises(SystemExit, match="not a tree rendered here"):
    render_dpdd_tree.main(["--out", str(foreign), "--photos", str(root.parent / "photos"), "--overwrite"])
  with pytest.raises(SystemExit, match="--overwrite"):
    render_dpdd_tree.main(["--out", str(root), "--photos", str(root.parent / "photos")])
  assert (foreign / "train_c" / "source").is_dir()


def test_split_holds_out_a_photo_whatever_the_kinds():
  photo = lambda name, grey: render_dpdd_tree.Photo(name, name, grey, (8, 8))
  train, test = render_dpdd_tree.split_photos([photo("a", False), photo("b", True)], 0.25, seed=0)
  assert len(train) == len(test) == 1
  train, test = render_dpdd_tree.split_photos([photo(n, False) for n in "abcdefgh"], 0.25, seed=3)
  assert len(test) == 2 and not {p.name for p in train} & {p.name for p in test}
  with pytest.raises(ValueError, match="at least 2 photos"):
    render_dpdd_tree.split_photos([photo("a", False)], 0.25, seed=0)


def test_bundled_photos_are_the_ones_in_the_installed_wheels():
  pytest.importorskip("skimage")  # requirements-dev.txt; no download is ever attempted
  found = {p.name: p for p in render_dpdd_tree.bundled_photos()}
  assert {f"skimage/{name.split('.')[0]}" for name in render_dpdd_tree.SKIMAGE_PHOTOS} <= set(found)
  assert not found["skimage/astronaut"].grey and found["skimage/camera"].grey
