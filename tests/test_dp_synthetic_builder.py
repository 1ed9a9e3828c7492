"""The dp_synthetic builder: scenes from the generator, stored 16-bit with their COC map."""

import numpy as np

from bambnet_jax.data import pipeline
from bambnet_jax.data import records
from bambnet_jax.data import synthetic
import tfds_dpd

SCENE = synthetic.SceneConfig(height=32, width=48, max_coc=3.0, num_layers=2)


def _quantise(image):
  return np.rint(np.clip(image.astype(np.float64), 0, 1) * 65535).astype(np.uint16)


def test_prepared_scenes_equal_the_generator_output(tmp_path):
  config = tfds_dpd.dp_synthetic.DpSyntheticConfig(
      name="test_small", num_train=3, num_validation=1, num_test=0, seed=5, scene=SCENE)
  builder = tfds_dpd.dp_synthetic.DpSynthetic(config=config, data_dir=tmp_path)
  builder.download_and_prepare()
  data = builder.as_data_source()
  assert set(data) == {"train", "validation"}  # a split of 0 scenes is left out
  seen = {}
  for split, count in (("train", 3), ("validation", 1)):
    assert len(data[split]) == count
    for example in data[split]:
      name = example["name"].decode()
      index = int(name.rsplit("_", 1)[1])
      want = synthetic.render_sample(records.scene_seed(5, split, index), SCENE)
      for key in ("left", "right", "combined", "sharp"):
        np.testing.assert_array_equal(example[key], _quantise(want[key]), err_msg=f"{name}/{key}")
      np.testing.assert_array_equal(example["coc"], want["coc"])
      assert example["coc"].dtype == np.float32 and example["coc"].shape == (32, 48)
      assert bool(example["has_sharp"]) and int(example["bit_depth"]) == 16
      seen[name] = example["left"]
  # Splits draw from independent seed streams.
  assert not np.array_equal(seen["train_000000"], seen["validation_000000"])


def test_scene_seeds_are_reproducible_and_distinct():
  seeds = {(split, i): records.scene_seed(0, split, i) for split in ("train", "validation", "test") for i in range(50)}
  assert len(set(seeds.values())) == len(seeds)
  assert records.scene_seed(0, "train", 7) == seeds[("train", 7)]
  assert records.scene_seed(1, "train", 7) != seeds[("train", 7)]


def test_pipeline_batches_the_coc_with_a_channel_axis(tmp_path):
  builder = tfds_dpd.dp_synthetic.DpSynthetic(config="tiny", data_dir=tmp_path)
  builder.download_and_prepare()
  source = records.DPSource.from_tfds("dp_synthetic/tiny", "train", ("left", "right", "coc"), data_dir=tmp_path)
  batch = next(pipeline.training_batches(source, batch_size=4, crop_size=32, seed=0))
  assert batch["left"].shape == (4, 32, 32, 3) and batch["coc"].shape == (4, 32, 32, 1)
  assert np.abs(batch["coc"]).max() <= 4.0


def test_scenes_rendered_by_worker_processes_equal_the_generator_output(tmp_path, monkeypatch):
  builder_module = tfds_dpd.dp_synthetic.dp_synthetic_dataset_builder
  monkeypatch.setattr(builder_module, "SCENES_PER_WORKER", 2)  # 4 scenes -> a pool of 2 workers
  monkeypatch.setattr(builder_module, "MAX_RENDER_WORKERS", 2)
  config = tfds_dpd.dp_synthetic.DpSyntheticConfig(
      name="test_workers", num_train=4, num_validation=0, num_test=0, seed=7, scene=SCENE)
  builder = tfds_dpd.dp_synthetic.DpSynthetic(config=config, data_dir=tmp_path)
  builder.download_and_prepare()
  examples = list(builder.as_data_source(split="train"))
  assert sorted(e["name"].decode() for e in examples) == [f"train_{i:06d}" for i in range(4)]
  for example in examples:
    index = int(example["name"].decode().rsplit("_", 1)[1])
    want = synthetic.render_sample(records.scene_seed(7, "train", index), SCENE)
    for key in ("left", "right", "combined", "sharp"):
      np.testing.assert_array_equal(example[key], _quantise(want[key]))
    np.testing.assert_array_equal(example["coc"], want["coc"])
