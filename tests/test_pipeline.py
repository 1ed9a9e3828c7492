"""The input pipeline: shuffling, batching, sharding onto a 2-device mesh, resuming, evaluation padding."""

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bambnet_jax.data import pipeline
from bambnet_jax.data import records
from bambnet_jax.parallel import sharding
import tfds_dpd  # registers the builders

from test_dpdd_builder import write_fake_dpdd


def tagged_records(count, size=8):
  """Records whose pixels all equal their index (left) and 1000 + index (right), 16-bit."""
  records = []
  for i in range(count):
    records.append({
        "left": np.full((size, size, 3), i, np.uint16),
        "right": np.full((size, size, 3), 1000 + i, np.uint16),
        "sharp": np.full((size, size, 3), 2000 + i, np.uint16),
    })
  return records


def record_ids(batch):
  # % 1000: a horizontal flip swaps the views, so "left" may hold the right view (1000 + index).
  return [int(round(v)) % 1000 for v in np.asarray(batch["left"])[:, 0, 0, 0] * 65535]


def source_of(count, keys=pipeline.DEBLUR_STAGE_KEYS):
  return records.DPSource(tagged_records(count), keys)


def test_two_device_mesh_each_device_receives_its_half():
  devices = jax.devices()[:2]
  assert len(devices) == 2
  mesh = sharding.make_mesh(devices)
  on_host = pipeline.training_batches(source_of(12), batch_size=4, seed=3)
  on_mesh = pipeline.training_batches(source_of(12), mesh, batch_size=4, seed=3)
  for _ in range(3):
    host_batch, mesh_batch = next(on_host), next(on_mesh)
    for key in pipeline.DEBLUR_STAGE_KEYS:
      array = mesh_batch[key]
      assert isinstance(array, jax.Array) and array.shape == (4, 8, 8, 3) and array.dtype == np.float32
      assert array.sharding.spec == jax.sharding.PartitionSpec(pipeline.DATA_AXIS)
      shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start)
      assert [s.device for s in shards] == devices
      for device_index, shard in enumerate(shards):
        np.testing.assert_array_equal(np.asarray(shard.data), host_batch[key][2 * device_index:2 * device_index + 2])


def test_float_conversion_and_view_pairing():
  batch = next(pipeline.training_batches(source_of(4), batch_size=4, seed=0, horizontal_flip=False))
  ids = record_ids(batch)
  assert sorted(ids) == [0, 1, 2, 3]
  np.testing.assert_array_equal(batch["right"][:, 0, 0, 0], (1000 + np.array(ids, np.float32)) / np.float32(65535))
  pixels = np.array([[[[0, 65535, 257]]], [[[1, 2, 3]]]], np.uint16)
  want = pixels.astype(np.float32) / np.float32(65535)
  np.testing.assert_array_equal(pipeline.batch_to_float({"left": pixels})["left"], want)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), (pipeline.DATA_AXIS,))
  on_device = pipeline.put_on_mesh({"left": pixels, "coc": np.ones((2, 1, 1), np.float32)}, mesh)
  assert on_device["left"].dtype == np.float32
  np.testing.assert_array_equal(np.asarray(on_device["left"]), want)
  assert on_device["coc"].shape == (2, 1, 1, 1)


def test_each_epoch_is_a_new_permutation_and_the_remainder_is_dropped():
  batches = list(pipeline.training_batches(source_of(10), batch_size=4, seed=1, num_epochs=3))
  assert len(batches) == 7  # 30 records -> 7 full batches of 4, 2 dropped
  assert all(b["left"].shape == (4, 8, 8, 3) for b in batches)
  ids = [i for b in batches for i in record_ids(b)]
  assert sorted(ids[:10]) == list(range(10)) and sorted(ids[10:20]) == list(range(10))
  assert ids[:10] != ids[10:20]


def test_random_crops_and_flips_keep_views_aligned():
  rng = np.random.default_rng(0)
  left = rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16)
  right = rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16)
  source = records.DPSource([{"left": left, "right": right}], pipeline.COC_STAGE_KEYS)
  batches = pipeline.training_batches(source, batch_size=1, crop_size=8, seed=5)
  to_float = lambda a: a.astype(np.float32) / 65535
  for _ in range(20):
    batch = next(batches)
    got_left, got_right = batch["left"][0], batch["right"][0]
    # Find the window in the (possibly flipped, swapped) source; both views must agree on it.
    found = False
    for flip_h in (False, True):
      for flip_v in (False, True):
        l, r = (right[:, ::-1], left[:, ::-1]) if flip_h else (left, right)
        if flip_v:
          l, r = l[::-1], r[::-1]
        for top in range(24 - 8 + 1):
          for x in range(32 - 8 + 1):
            if np.array_equal(to_float(l[top:top + 8, x:x + 8]), got_left):
              np.testing.assert_array_equal(to_float(r[top:top + 8, x:x + 8]), got_right)
              found = True
    assert found


def test_resume_continues_at_the_same_data_position():
  batches = pipeline.training_batches(source_of(9), batch_size=2, seed=7, prefetch=3)
  for _ in range(5):  # crosses an epoch boundary
    next(batches)
  state = batches.get_state()
  expected = [record_ids(next(batches)) for _ in range(4)]
  resumed = pipeline.training_batches(source_of(9), batch_size=2, seed=7, prefetch=3)
  resumed.set_state(state)
  assert [record_ids(next(resumed)) for _ in range(4)] == expected


def test_processes_read_disjoint_shards():
  seen = []
  for process in range(2):
    options = grain_shard(process, 2, drop_remainder=True)
    batches = pipeline.training_batches(source_of(10), batch_size=4, seed=2, num_epochs=1,
                                        shard_options=options)
    ids = [i for b in batches for i in record_ids(b)]
    assert all(len(record_ids(b)) == 2 for b in pipeline.training_batches(
        source_of(10), batch_size=4, seed=2, num_epochs=1, shard_options=options))
    seen.append(set(ids))
  assert not seen[0] & seen[1]
  assert len(seen[0]) == len(seen[1]) == 4  # 5 records per shard, batches of 2, remainder dropped


def grain_shard(index, count, drop_remainder):
  import grain  # pylint: disable=g-import-not-at-top
  return grain.sharding.ShardOptions(index, count, drop_remainder)


def test_evaluation_pads_the_last_batch_and_masks_it():
  batches = list(pipeline.evaluation_batches(source_of(5), batch_size=4))
  assert [b["left"].shape[0] for b in batches] == [4, 4]
  assert record_ids(batches[0]) == [0, 1, 2, 3]
  assert batches[1]["mask"].tolist() == [True, False, False, False]
  assert record_ids(batches[1])[0] == 4


def test_evaluation_gives_every_process_the_same_number_of_batches():
  per_process = []
  for process in range(2):
    batches = list(pipeline.evaluation_batches(source_of(5), batch_size=4,
                                               shard_options=grain_shard(process, 2, False)))
    per_process.append([(record_ids(b), b["mask"].tolist()) for b in batches])
  assert len(per_process[0]) == len(per_process[1]) == 2
  real = sorted(i for batches in per_process for ids, mask in batches for i, m in zip(ids, mask) if m)
  assert real == [0, 1, 2, 3, 4]


def test_evaluation_on_the_mesh_keeps_mask_sharded():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), (pipeline.DATA_AXIS,))
  batch = next(pipeline.evaluation_batches(source_of(3), mesh, batch_size=4))
  assert batch["mask"].sharding.spec == jax.sharding.PartitionSpec(pipeline.DATA_AXIS)
  assert np.asarray(batch["mask"]).tolist() == [True, True, True, False]


def test_tfds_source_decodes_only_the_requested_views(tmp_path):
  written = write_fake_dpdd(tmp_path / "manual")
  builder = tfds_dpd.dpdd.Dpdd(data_dir=tmp_path / "data")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=tmp_path / "manual"))
  source = records.DPSource.from_tfds("dpdd/full", "train", pipeline.COC_STAGE_KEYS, data_dir=tmp_path / "data")
  assert set(source[0]) == {"left", "right"}
  batch = next(pipeline.training_batches(source, batch_size=2, seed=0, horizontal_flip=False,
                                         vertical_flip=False))
  expected = {name: views for name, views in written["train"]}
  rows = [tuple(batch[k][i].tobytes() for k in ("left", "right")) for i in range(2)]
  want = [tuple((v[k].astype(np.float32) / 65535).tobytes() for k in ("left", "right")) for v in expected.values()]
  assert sorted(rows) == sorted(want)
  with pytest.raises(ValueError, match="no feature"):
    records.DPSource.from_tfds("dpdd/full", "train", ("left", "coc"), data_dir=tmp_path / "data")


def test_missing_sharp_target_is_a_clear_error():
  source = records.DPSource([{"left": np.zeros((4, 4, 3), np.uint16), "right": np.zeros((4, 4, 3), np.uint16),
                               "sharp": np.zeros((1, 1, 3), np.uint16), "has_sharp": False}],
                             pipeline.DEBLUR_STAGE_KEYS, name="captures/train")
  with pytest.raises(ValueError, match=r"captures/train\[0\]: has no sharp target"):
    source[0]


def test_resume_with_worker_processes():
  # One worker process: the state then also records which worker produced the last batch.
  batches = pipeline.training_batches(source_of(7), batch_size=2, seed=4, worker_count=1)
  for _ in range(4):
    next(batches)
  state = batches.get_state()
  expected = [record_ids(next(batches)) for _ in range(3)]
  resumed = pipeline.training_batches(source_of(7), batch_size=2, seed=4, worker_count=1)
  resumed.set_state(state)
  assert [record_ids(next(resumed)) for _ in range(3)] == expected
  in_process = pipeline.training_batches(source_of(7), batch_size=2, seed=4)
  assert [record_ids(next(in_process)) for _ in range(7)][4:] == expected
