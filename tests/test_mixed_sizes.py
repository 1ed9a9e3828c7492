"""Splits whose images differ in size: one padded batch shape for evaluation, crops for training."""

import json

import cv2
import jax
import ml_collections
import numpy as np
import pytest

from bambnet_jax.data import datasets
from bambnet_jax.data import pipeline
from bambnet_jax.data import records
from bambnet_jax.evaluation import evaluate
from bambnet_jax.models import networks
from bambnet_jax.parallel import sharding
from tfds_dpd import common

# (height, width) of each record: three sizes, none the largest in both sides.
SIZES = [(8, 12), (10, 6), (6, 8), (8, 12), (10, 6)]


def mixed_records(sizes=SIZES, encode=False):
  """Random 16-bit views of the given sizes and a COC map; `encode`: images as PNG bytes."""
  rng = np.random.default_rng(0)
  out = []
  for height, width in sizes:
    record = {key: rng.integers(1, 65536, (height, width, 3), dtype=np.uint16)
              for key in ("left", "right", "sharp")}
    record["coc"] = rng.uniform(-3, 3, (height, width)).astype(np.float32)
    out.append(record)
  if encode:
    return out, [{k: common.encode_png16(v) if k != "coc" else v for k, v in r.items()} for r in out]
  return out, out


@pytest.mark.parametrize("encode", [False, True], ids=["arrays", "png_bytes"])
def test_evaluation_pads_every_image_to_the_largest_and_marks_its_pixels(encode):
  written, stored = mixed_records(encode=encode)
  source = records.DPSource(stored, pipeline.DEBLUR_STAGE_KEYS + ("coc",))
  np.testing.assert_array_equal(records.image_sizes(source), SIZES)
  batches = list(pipeline.evaluation_batches(source, batch_size=2))
  assert len(batches) == 3
  rows = []
  for batch in batches:
    assert batch["left"].shape == (2, 10, 12, 3) and batch["coc"].shape == (2, 10, 12, 1)
    assert batch["pixel_mask"].shape == (2, 10, 12) and batch["pixel_mask"].dtype == bool
    rows += [{k: batch[k][i] for k in batch} for i in range(2)]
  assert [bool(row["mask"]) for row in rows] == [True] * 5 + [False]
  assert not rows[5]["pixel_mask"].any()
  for row, want, (height, width) in zip(rows, written, SIZES):
    real = np.zeros((10, 12), bool)
    real[:height, :width] = True
    np.testing.assert_array_equal(row["pixel_mask"], real)
    assert pipeline.real_size(row["pixel_mask"]) == (height, width)
    for key in ("left", "right", "sharp"):
      np.testing.assert_array_equal(row[key][:height, :width], want[key] / np.float32(65535))
      assert not row[key][~real].any()  # zeros outside
    np.testing.assert_array_equal(row["coc"][:height, :width, 0], want["coc"])


def test_same_size_splits_carry_an_all_true_pixel_mask_on_the_mesh():
  _, stored = mixed_records([(6, 8)] * 3)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), (pipeline.DATA_AXIS,))
  batch = next(pipeline.evaluation_batches(records.DPSource(stored, ("left", "sharp")), mesh, batch_size=4))
  assert batch["left"].shape == (4, 6, 8, 3)
  assert batch["pixel_mask"].sharding.spec == jax.sharding.PartitionSpec(pipeline.DATA_AXIS)
  assert np.asarray(batch["pixel_mask"]).all(axis=(1, 2)).tolist() == [True, True, True, False]


def test_training_crops_mixed_sizes_to_one_shape():
  written, stored = mixed_records()
  source = records.DPSource(stored, pipeline.DEBLUR_STAGE_KEYS)
  batches = pipeline.training_batches(source, batch_size=2, crop_size=6, seed=0, num_epochs=2)
  seen = list(batches)
  assert len(seen) == 5 and all(b["left"].shape == (2, 6, 6, 3) for b in seen)
  crops = {np.asarray(b["sharp"][i]).tobytes() for b in seen for i in range(2)}
  assert len(crops) > 1


def test_an_image_smaller_than_the_crop_is_named():
  _, stored = mixed_records([(8, 8), (8, 8), (5, 8)])
  for record, name in zip(stored, (b"a", b"b", b"small_one")):
    record["name"] = name
  source = records.DPSource(stored, pipeline.DEBLUR_STAGE_KEYS, name="captures/train")
  batches = pipeline.training_batches(source, batch_size=3, crop_size=6, seed=0)
  with pytest.raises(ValueError, match=r"captures/train\[2\] \(small_one\) is 5x8, smaller than the 6x6"):
    next(batches)


def test_mixed_sizes_without_a_crop_say_so():
  _, stored = mixed_records([(8, 8), (6, 8)])
  batches = pipeline.training_batches(records.DPSource(stored, ("left", "right")), batch_size=2, seed=0)
  with pytest.raises(ValueError, match=r"records\[1\] is 6x8, the first record 8x8: give training a crop"):
    next(batches)


def test_meta_batches_of_a_prepared_mixed_size_split(tmp_path):
  # The reported case: a validation split of 512x512, 400x592 and 768x512 images, scaled down.
  sizes = [(16, 16), (12, 18), (24, 16)]
  rng = np.random.default_rng(2)
  (tmp_path / "captures").mkdir()
  for index, (height, width) in enumerate(sizes):
    for view in ("L", "R", "S"):
      assert cv2.imwrite(str(tmp_path / "captures" / f"c{index}_{view}.png"),
                         rng.integers(0, 65536, (height, width, 3), dtype=np.uint16))
  config = ml_collections.ConfigDict({
      "data_dir": str(tmp_path / "data"), "manual_dir": str(tmp_path / "captures"),
      "meta_dataset": "dp_captures", "meta_split": "train", "meta_max_examples": 8})
  data = datasets.DataSources(config, sharding.make_mesh(jax.devices()[:2]))
  for _ in range(2):  # two search rounds
    batches = list(data.meta_batches(batch_size=2))
    assert [b["left"].shape for b in batches] == [(2, 24, 18, 3)] * 2
    real = np.concatenate([np.asarray(b["pixel_mask"]).sum(axis=(1, 2)) for b in batches])
    assert sorted(real.tolist()) == sorted([0] + [h * w for h, w in sizes])
  # The sizes are read once per run, not once per round.
  source = data.source("dp_captures", "train", pipeline.DEBLUR_STAGE_KEYS, 8)
  assert source.image_sizes() is source.image_sizes()


def test_evaluation_scores_each_image_at_its_own_size(tmp_path):
  """The blurred input's PSNR and MAE against NumPy on each record's own pixels (padding left out)."""
  sizes = [(16, 32), (32, 16), (16, 16)]
  written, stored = mixed_records(sizes)
  for record in stored:
    record["combined"] = ((record["left"].astype(np.uint32) + record["right"]) // 2).astype(np.uint16)
  source = records.DPSource(stored, pipeline.EVAL_KEYS)
  config = networks.model_config(width=8, branch_capacities=(1, 4))
  params = networks.init_params("deblur", config, jax.random.key(0))
  summary = evaluate.evaluate(params, None, config, pipeline.evaluation_batches(source, batch_size=2),
                              tmp_path / "eval", save_images=None)
  del summary
  per_image = json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_image"]
  rows = {r["name"]: r for r in per_image}
  assert len(rows) == 3
  for index, record in enumerate(stored):
    combined, sharp = (record[k] / np.float64(65535) for k in ("combined", "sharp"))
    row = rows[f"{index:03d}"]
    assert row["input_mae"] == pytest.approx(np.mean(np.abs(combined - sharp)), rel=1e-4)
    assert row["input_psnr"] == pytest.approx(-10 * np.log10(np.mean((combined - sharp) ** 2)), rel=1e-4)
    restored = cv2.imread(str(tmp_path / "eval" / "restored" / f"{index:03d}.png"), cv2.IMREAD_UNCHANGED)
    assert restored.shape == sizes[index] + (3,)
